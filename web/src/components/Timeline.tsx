import { Check, CircleDashed, Loader2, RotateCcw, X, Ban, Recycle } from "lucide-react";
import type { PhaseState, PhaseView } from "../lib/timeline";
import { duration } from "../lib/format";

const LOOK: Record<PhaseState, { label: string; className: string; Icon: typeof Check }> = {
  pending: { label: "waiting", className: "border-slate-300 bg-white text-slate-600", Icon: CircleDashed },
  running: { label: "running", className: "border-sky-500 bg-sky-50 text-sky-900", Icon: Loader2 },
  done: { label: "done", className: "border-emerald-500 bg-emerald-50 text-emerald-900", Icon: Check },
  rejected: { label: "sent back", className: "border-amber-500 bg-amber-50 text-amber-900", Icon: RotateCcw },
  failed: { label: "failed", className: "border-red-500 bg-red-50 text-red-900", Icon: X },
  reused: { label: "reused", className: "border-emerald-300 bg-white text-emerald-900", Icon: Recycle },
  stopped: { label: "not done", className: "border-slate-300 bg-slate-50 text-slate-600", Icon: Ban },
};

/** The five phases of the current attempt, each with its state and how long it took (or has
 * taken so far). */
export function Timeline({ phases, attempt }: { phases: PhaseView[]; attempt: number }) {
  return (
    <ol aria-label={`Phases of attempt ${attempt}`} className="grid grid-cols-2 gap-2 sm:grid-cols-5">
      {phases.map((view) => {
        const look = LOOK[view.state];
        return (
          <li
            key={view.phase}
            data-phase={view.phase}
            data-state={view.state}
            className={`rounded-md border-l-4 border px-3 py-2 ${look.className}`}
          >
            <div className="flex items-center gap-1.5 text-sm font-semibold capitalize">
              <look.Icon aria-hidden="true" className={`h-4 w-4 ${view.state === "running" ? "animate-spin" : ""}`} />
              {view.phase}
            </div>
            <div className="mt-0.5 flex justify-between gap-2 text-xs">
              <span>{look.label}</span>
              <span className="tabular-nums" data-testid="phase-duration">
                {view.seconds === null ? "" : duration(view.seconds)}
              </span>
            </div>
          </li>
        );
      })}
    </ol>
  );
}
