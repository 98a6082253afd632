import { Wifi, WifiOff, RefreshCw } from "lucide-react";
import type { LiveStatus } from "../live/status";

const LOOK: Record<LiveStatus["state"], { label: string; className: string }> = {
  live: { label: "Live", className: "border-emerald-300 bg-emerald-50 text-emerald-800" },
  syncing: { label: "Catching up", className: "border-sky-300 bg-sky-50 text-sky-800" },
  connecting: { label: "Connecting", className: "border-sky-300 bg-sky-50 text-sky-800" },
  reconnecting: { label: "Reconnecting", className: "border-amber-400 bg-amber-50 text-amber-900" },
  closed: { label: "Offline", className: "border-red-300 bg-red-50 text-red-800" },
  idle: { label: "Not live", className: "border-slate-300 bg-white text-slate-700" },
};

/** Whether live updates flow: a drop shows at once, and so does their return. */
export function ConnectionIndicator({ status }: { status: LiveStatus }) {
  const look = LOOK[status.state];
  const Icon = status.state === "live" ? Wifi : status.state === "closed" ? WifiOff : RefreshCw;
  const title =
    status.state === "live"
      ? "Live updates are on"
      : status.state === "idle"
        ? "This page does not follow live updates"
        : `Live updates: ${look.label.toLowerCase()}${status.detail ? ` (${status.detail})` : ""}`;
  return (
    <span
      role="status"
      aria-live="polite"
      title={title}
      data-live-state={status.state}
      className={`inline-flex items-center gap-1.5 rounded-full border px-2.5 py-0.5 text-xs font-medium ${look.className}`}
    >
      <Icon aria-hidden="true" className={`h-3.5 w-3.5 ${status.state === "reconnecting" ? "animate-spin" : ""}`} />
      <span>{look.label}</span>
      <span className="sr-only">{title}</span>
    </span>
  );
}

/** A banner while live updates are down: what is on screen may be out of date. */
export function StaleBanner({ status }: { status: LiveStatus }) {
  if (status.state !== "reconnecting" && status.state !== "closed") return null;
  return (
    <div role="alert" className="border-b border-amber-300 bg-amber-50 px-4 py-2 text-sm text-amber-900">
      Live updates are interrupted{status.detail ? ` (${status.detail})` : ""}. What you see may be out of date until
      they come back; it catches up by itself.
    </div>
  );
}
