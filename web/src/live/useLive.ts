// The live-updates hook: one connection for as long as the component is shown, with its state
// reported to the header's indicator.
import { useEffect, useRef } from "react";
import { SESSION_ENDED, forgetToken, storedToken } from "../api/client";
import type { JobEvent } from "../api/types";
import { LiveConnection, type LiveLogLine } from "./connection";
import { registerConnection } from "./status";

export interface UseLiveOptions {
  jobId?: string | null;
  logs?: boolean;
  /** Where to start (null: not yet known, so do not connect yet). */
  after: number | null;
  onEvent?(event: JobEvent, position: number): void;
  onLog?(line: LiveLogLine): void;
  onCaughtUp?(position: number, reconnected: boolean): void;
}

export function useLive(options: UseLiveOptions): void {
  const handlers = useRef(options);
  handlers.current = options;
  const ready = options.after !== null;
  useEffect(() => {
    const token = storedToken();
    if (!ready || !token) return;
    const status = registerConnection();
    const connection = new LiveConnection(
      { token, jobId: options.jobId ?? null, logs: options.logs, after: handlers.current.after ?? 0 },
      {
        onEvent: (event, position) => handlers.current.onEvent?.(event, position),
        onLog: (line) => handlers.current.onLog?.(line),
        onCaughtUp: (position, reconnected) => handlers.current.onCaughtUp?.(position, reconnected),
        onState: (state, detail) => status.update(state, detail),
        onUnauthorized: () => forgetToken(SESSION_ENDED),
      },
    );
    const online = () => connection.reconnectNow();
    window.addEventListener("online", online);
    connection.start();
    return () => {
      window.removeEventListener("online", online);
      connection.stop();
      status.remove();
    };
  }, [ready, options.jobId, options.logs]);
}
