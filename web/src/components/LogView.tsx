import { Pause, Play } from "lucide-react";
import { useEffect, useMemo, useRef, useState } from "react";
import { PHASES } from "../api/types";

export interface ViewLine {
  key: string;
  phase: string | null;
  stream: string;
  level: "info" | "warning" | "error";
  text: string;
  /** ms since the epoch */
  at: number;
  live?: boolean;
}

const LEVEL: Record<ViewLine["level"], string> = {
  info: "text-slate-100",
  warning: "text-amber-300",
  error: "text-red-300",
};

/** The job's log: follows new lines as they come (pause to read: the view holds still and
 * counts what arrived meanwhile), filtered by phase. */
export function LogView({ lines }: { lines: ViewLine[] }) {
  const [phase, setPhase] = useState("all");
  const [paused, setPaused] = useState<ViewLine[] | null>(null);
  const box = useRef<HTMLDivElement>(null);
  const source = paused ?? lines;
  const shown = useMemo(() => (phase === "all" ? source : source.filter((l) => l.phase === phase)), [source, phase]);
  const waiting = paused ? Math.max(0, lines.length - paused.length) : 0;

  useEffect(() => {
    if (!paused && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [shown, paused]);

  return (
    <div>
      <div className="mb-2 flex flex-wrap items-center gap-2">
        <label className="text-sm font-medium text-slate-800" htmlFor="log-phase">
          Show phase
        </label>
        <select id="log-phase" className="input w-auto py-1" value={phase} onChange={(e) => setPhase(e.target.value)}>
          <option value="all">all phases</option>
          {PHASES.map((p) => (
            <option key={p} value={p}>
              {p}
            </option>
          ))}
        </select>
        <button
          type="button"
          className="btn-secondary"
          aria-pressed={paused !== null}
          onClick={() => setPaused(paused ? null : lines)}
        >
          {paused ? <Play aria-hidden="true" className="h-4 w-4" /> : <Pause aria-hidden="true" className="h-4 w-4" />}
          {paused ? "Follow" : "Pause"}
        </button>
        <span className="text-xs text-slate-600" aria-live="polite">
          {paused ? `Paused${waiting ? `: ${waiting} new line${waiting === 1 ? "" : "s"}` : ""}` : "Following"}
        </span>
        <span className="ml-auto text-xs text-slate-600">{shown.length} lines</span>
      </div>
      <div
        ref={box}
        role="log"
        aria-label="Job log"
        tabIndex={0}
        className="h-96 overflow-auto rounded-md bg-slate-900 p-3 font-mono text-xs leading-5"
      >
        {shown.length === 0 ? (
          <p className="text-slate-400">No log lines{phase === "all" ? " yet" : ` for ${phase}`}.</p>
        ) : (
          shown.map((line) => (
            <div key={line.key} className={`whitespace-pre-wrap break-words ${LEVEL[line.level]}`} data-phase={line.phase ?? ""}>
              <span className="select-none text-slate-400">
                {new Date(line.at).toLocaleTimeString()} {(line.phase ?? "job").padEnd(10)}{" "}
              </span>
              {line.live && <span className="text-sky-300">▸ </span>}
              {line.text}
            </div>
          ))
        )}
      </div>
    </div>
  );
}
