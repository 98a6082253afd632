import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LiveConnection, type LiveState } from "./connection";

class FakeSocket {
  static made: FakeSocket[] = [];
  sent: Record<string, unknown>[] = [];
  readyState = 0;
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((c: { code: number; reason: string }) => void) | null = null;
  constructor(public url: string) {
    FakeSocket.made.push(this);
  }
  send(text: string) {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
  }
  close(code = 1000) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(message: Record<string, unknown>) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
}

const event = (position: number) => ({ type: "event", position, event: { position, type: "StepStarted" } });

describe("LiveConnection", () => {
  beforeEach(() => {
    FakeSocket.made = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  function connect(after = 0) {
    const states: LiveState[] = [];
    const events: number[] = [];
    const handlers = { onState: (s: LiveState) => states.push(s), onEvent: (_e: unknown, p: number) => events.push(p), onUnauthorized: vi.fn(), onCaughtUp: vi.fn() };
    const live = new LiveConnection(
      { token: "secret", jobId: "j1", logs: true, after, url: "ws://x/api/ws", socket: (u) => new FakeSocket(u) as unknown as WebSocket, backoff: [100] },
      handlers,
    );
    live.start();
    return { live, states, events, handlers };
  }

  it("authenticates by message, subscribes, and answers heartbeats", () => {
    const { states } = connect(5);
    const socket = FakeSocket.made[0]!;
    expect(socket.url).toBe("ws://x/api/ws");
    socket.open();
    expect(socket.sent).toEqual([
      { type: "auth", token: "secret" },
      { type: "subscribe", job_id: "j1", after: 5, logs: true },
    ]);
    socket.receive({ type: "subscribed", heartbeat_seconds: 15 });
    socket.receive({ type: "caught_up", position: 9 });
    socket.receive({ type: "heartbeat", position: 12 });
    expect(socket.sent.at(-1)).toEqual({ type: "pong" });
    expect(states.at(-1)).toBe("live");
  });

  it("reconnects after a drop and resumes from the last position, skipping repeats", () => {
    const { live, states, events, handlers } = connect();
    const first = FakeSocket.made[0]!;
    first.open();
    first.receive({ type: "subscribed", heartbeat_seconds: 15 });
    first.receive(event(1));
    first.receive(event(2));
    first.receive({ type: "caught_up", position: 2 });
    first.close(1006);
    expect(states.at(-1)).toBe("reconnecting");
    vi.advanceTimersByTime(100);
    const second = FakeSocket.made[1]!;
    second.open();
    expect(second.sent[1]).toMatchObject({ type: "subscribe", after: 2 });
    second.receive(event(2));
    second.receive(event(3));
    second.receive({ type: "caught_up", position: 3 });
    expect(events).toEqual([1, 2, 3]);
    expect(handlers.onCaughtUp).toHaveBeenLastCalledWith(3, true);
    expect(live.position).toBe(3);
  });

  it("notices a silent drop when heartbeats stop", () => {
    const { states } = connect();
    const socket = FakeSocket.made[0]!;
    socket.open();
    socket.receive({ type: "subscribed", heartbeat_seconds: 1 });
    vi.advanceTimersByTime(7100);
    expect(states).toContain("reconnecting");
  });

  it("stops and signs out on a refused token", () => {
    const { handlers, states } = connect();
    const socket = FakeSocket.made[0]!;
    socket.open();
    socket.receive({ type: "error", code: 4401, detail: "no valid token" });
    socket.close(4401);
    vi.advanceTimersByTime(10_000);
    expect(handlers.onUnauthorized).toHaveBeenCalled();
    expect(FakeSocket.made).toHaveLength(1);
    expect(states.at(-1)).toBe("closed");
  });
});
