import type { Status } from "../api/types";

const LOOK: Record<Status, string> = {
  queued: "bg-slate-100 text-slate-800 ring-slate-300",
  running: "bg-sky-100 text-sky-900 ring-sky-300",
  completed: "bg-emerald-100 text-emerald-900 ring-emerald-300",
  failed: "bg-red-100 text-red-900 ring-red-300",
  cancelled: "bg-amber-100 text-amber-900 ring-amber-300",
};

export function StatusBadge({ status, label }: { status: Status; label?: string }) {
  return (
    <span
      data-status={status}
      className={`inline-flex items-center rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset ${LOOK[status]}`}
    >
      {label ?? status}
    </span>
  );
}
