// The state of the page's live connections, for the indicator in the header: live only when
// every open connection is; otherwise the worst of them, with what it said.
import { useSyncExternalStore } from "react";
import type { LiveState } from "./connection";

export interface LiveStatus {
  state: LiveState | "idle";
  detail: string;
  /** When the state last changed (ms since the epoch). */
  since: number;
}

const RANK: Record<LiveStatus["state"], number> = { idle: 0, closed: 1, live: 2, syncing: 3, connecting: 4, reconnecting: 5 };
const connections = new Map<number, { state: LiveState; detail: string }>();
const listeners = new Set<() => void>();
let current: LiveStatus = { state: "idle", detail: "", since: Date.now() };
let nextId = 1;

function recompute(): void {
  let worst: LiveStatus["state"] = "idle";
  let detail = "";
  for (const entry of connections.values()) {
    if (RANK[entry.state] > RANK[worst]) {
      worst = entry.state;
      detail = entry.detail;
    }
  }
  if (worst !== current.state || detail !== current.detail) {
    current = { state: worst, detail, since: worst !== current.state ? Date.now() : current.since };
    for (const listener of listeners) listener();
  }
}

export function registerConnection(): { update(state: LiveState, detail: string): void; remove(): void } {
  const id = nextId++;
  return {
    update(state, detail) {
      connections.set(id, { state, detail });
      recompute();
    },
    remove() {
      connections.delete(id);
      recompute();
    },
  };
}

export function useLiveStatus(): LiveStatus {
  return useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => current,
  );
}
