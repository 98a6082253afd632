// One live-updates connection (`/api/ws`, docs/api-live-updates.md): authenticates with an
// `auth` message (the token never goes in the URL), subscribes from the last position it was
// sent, answers heartbeats, and after any drop reconnects with backoff and resumes from that
// position, so nothing is missed and nothing comes twice. A silent drop (no heartbeat for too
// long) is noticed and treated as one.
import type { JobEvent } from "../api/types";

export type LiveState = "connecting" | "syncing" | "live" | "reconnecting" | "closed";

export interface LiveLogLine {
  job_id: string;
  step: string;
  attempt: number;
  stream: string;
  text: string;
  at: number;
  missed?: number;
}

export interface LiveHandlers {
  onEvent?(event: JobEvent, position: number): void;
  onLog?(line: LiveLogLine): void;
  /** Everything stored until now has been sent (after each (re)connection). */
  onCaughtUp?(position: number, reconnected: boolean): void;
  onState?(state: LiveState, detail: string): void;
  /** The token was refused (4401). */
  onUnauthorized?(): void;
}

export interface LiveOptions {
  token: string;
  jobId?: string | null;
  after?: number;
  logs?: boolean;
  url?: string;
  socket?: (url: string) => WebSocket;
  /** Backoff before each reconnection, in ms (the last one repeats). */
  backoff?: number[];
}

const DEFAULT_BACKOFF = [300, 1000, 2000, 4000, 8000];
const FATAL = new Set([4400, 4401, 4403, 4404]);

export function liveUrl(location: Location = window.location): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/ws`;
}

export class LiveConnection {
  position: number;
  state: LiveState = "connecting";
  private socket: WebSocket | null = null;
  private stopped = false;
  private tries = 0;
  private connections = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setTimeout> | null = null;
  private heartbeatMs = 15_000;

  constructor(
    private readonly options: LiveOptions,
    private readonly handlers: LiveHandlers,
  ) {
    this.position = options.after ?? 0;
  }

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= 1) socket.close(1000);
    this.setState("closed", "");
  }

  /** Drop the connection now and reconnect (the browser came back online, say). */
  reconnectNow(): void {
    if (this.stopped) return;
    this.tries = 0;
    this.socket?.close(4000);
  }

  private open(): void {
    this.clearTimers();
    this.setState(this.connections === 0 ? "connecting" : "reconnecting", "");
    const url = this.options.url ?? liveUrl();
    const socket = (this.options.socket ?? ((u: string) => new WebSocket(u)))(url);
    this.socket = socket;
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "auth", token: this.options.token }));
      socket.send(
        JSON.stringify({
          type: "subscribe",
          job_id: this.options.jobId ?? null,
          after: this.position,
          logs: Boolean(this.options.logs),
        }),
      );
      this.armWatchdog();
    };
    socket.onmessage = (message: MessageEvent) => {
      if (socket !== this.socket) return;
      this.armWatchdog();
      this.receive(socket, String(message.data));
    };
    socket.onclose = (close: CloseEvent) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.closed(close.code, close.reason);
    };
  }

  private receive(socket: WebSocket, text: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    switch (message.type) {
      case "subscribed":
        this.heartbeatMs = Number(message.heartbeat_seconds ?? 15) * 1000;
        this.setState("syncing", "");
        this.armWatchdog();
        break;
      case "event": {
        const position = Number(message.position);
        if (position <= this.position) return; // already had it
        this.position = position;
        this.handlers.onEvent?.(message.event as JobEvent, position);
        break;
      }
      case "caught_up": {
        this.position = Math.max(this.position, Number(message.position));
        const reconnected = this.connections > 0;
        this.connections += 1;
        this.tries = 0;
        this.setState("live", "");
        this.handlers.onCaughtUp?.(this.position, reconnected);
        break;
      }
      case "heartbeat":
        this.position = Math.max(this.position, Number(message.position));
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "log":
        this.handlers.onLog?.(message as unknown as LiveLogLine);
        break;
      case "resync":
        this.position = Math.max(this.position, Number(message.after));
        break;
      case "error":
        if (message.code === 4401) {
          this.stopped = true;
          this.handlers.onUnauthorized?.();
        }
        break;
    }
  }

  private closed(code: number, reason: string): void {
    this.clearTimers();
    if (this.stopped) {
      this.setState("closed", reason);
      return;
    }
    if (FATAL.has(code)) {
      this.stopped = true;
      if (code === 4401) this.handlers.onUnauthorized?.();
      this.setState("closed", reason || `closed (${code})`);
      return;
    }
    const backoff = this.options.backoff ?? DEFAULT_BACKOFF;
    const wait = backoff[Math.min(this.tries, backoff.length - 1)] ?? 1000;
    this.tries += 1;
    this.setState("reconnecting", `connection lost; trying again in ${Math.ceil(wait / 1000)} s`);
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  private armWatchdog(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    // Two heartbeats missed (and a margin): the connection is dead even if no close came.
    this.watchdog = setTimeout(() => this.socket?.close(4000), this.heartbeatMs * 2 + 5000);
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.watchdog) clearTimeout(this.watchdog);
    this.retryTimer = this.watchdog = null;
  }

  private setState(state: LiveState, detail: string): void {
    this.state = state;
    this.handlers.onState?.(state, detail);
  }
}
