import type { FileDiff } from "../api/types";
import { parseUnifiedDiff, type DiffLine } from "../lib/diff";

const ROW: Record<DiffLine["kind"], string> = {
  add: "bg-emerald-50 text-emerald-950",
  remove: "bg-red-50 text-red-950",
  context: "text-slate-800",
  hunk: "bg-sky-50 text-sky-900",
  header: "text-slate-600",
};
const SIGN: Record<DiffLine["kind"], string> = { add: "+", remove: "-", context: " ", hunk: "", header: "" };
const CHANGE: Record<FileDiff["change"], string> = {
  added: "bg-emerald-100 text-emerald-900",
  removed: "bg-red-100 text-red-900",
  modified: "bg-sky-100 text-sky-900",
};

/** What changed in one file between two attempts, line by line. */
export function FileDiffView({ diff }: { diff: FileDiff }) {
  const lines = diff.diff ? parseUnifiedDiff(diff.diff).filter((l) => l.kind !== "header") : [];
  return (
    <section className="overflow-hidden rounded-md border border-slate-200" aria-label={`Changes in ${diff.path}`}>
      <header className="flex flex-wrap items-center gap-2 border-b border-slate-200 bg-slate-50 px-3 py-1.5 text-sm">
        <span className="font-mono font-medium">{diff.path}</span>
        <span className={`rounded px-1.5 text-xs ${CHANGE[diff.change]}`}>{diff.change}</span>
        <span className="ml-auto text-xs tabular-nums">
          <span className="text-emerald-800">+{diff.lines_added}</span>{" "}
          <span className="text-red-800">−{diff.lines_removed}</span>
        </span>
      </header>
      {diff.binary ? (
        <p className="px-3 py-2 text-sm text-slate-600">Binary file: no line diff.</p>
      ) : (
        <div className="overflow-x-auto">
          <table className="w-full border-collapse font-mono text-xs leading-5">
            <tbody>
              {lines.map((line, index) => (
                <tr key={index} className={ROW[line.kind]} data-kind={line.kind}>
                  <td className="w-10 select-none px-2 text-right text-slate-500">{line.oldNumber ?? ""}</td>
                  <td className="w-10 select-none px-2 text-right text-slate-500">{line.newNumber ?? ""}</td>
                  <td className="whitespace-pre px-2">
                    <span aria-hidden="true" className="select-none">
                      {SIGN[line.kind]}
                    </span>
                    {line.kind === "add" && <span className="sr-only">added: </span>}
                    {line.kind === "remove" && <span className="sr-only">removed: </span>}
                    {line.text}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {diff.truncated && <p className="px-3 py-1 text-xs text-slate-600">The diff is long and was cut here.</p>}
        </div>
      )}
    </section>
  );
}
