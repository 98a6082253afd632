// A job's course, read from its events alone (the live updates send them in order): its status,
// its steps' runs with their times and outcomes, and each phase's state in the current attempt.
// The pipeline's order, phases and verdicts come from the gateway (`GET /api/pipeline`).
import type { JobEvent, Phase, Pipeline, Status } from "../api/types";
import { phaseSteps, rejectingOutcomes, stepPhase } from "./pipeline";

export interface StepRun {
  step: string;
  phase: Phase;
  attempt: number;
  startedAt: number;
  finishedAt: number | null;
  outcome: string | null;
  summary: string;
  failedReason: string | null;
  details: Record<string, unknown>;
}

export type PhaseState = "pending" | "running" | "done" | "rejected" | "failed" | "reused" | "stopped";

export interface PhaseView {
  phase: Phase;
  state: PhaseState;
  attempt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  /** Seconds spent in the phase so far (up to `now` while it runs). */
  seconds: number | null;
}

export interface Course {
  status: Status | null;
  attempt: number;
  runs: StepRun[];
  phases: PhaseView[];
  endedAt: number | null;
  reason: string | null;
}

const ms = (timestamp: string) => Date.parse(timestamp);
const str = (value: unknown) => (typeof value === "string" ? value : "");
const num = (value: unknown) => (typeof value === "number" ? value : 0);

/** The job's course; with no pipeline yet (still on its way), its runs without phases. */
export function course(events: JobEvent[], pipeline: Pipeline | null, now: number = Date.now()): Course {
  let status: Status | null = null;
  let attempt = 1;
  let endedAt: number | null = null;
  let reason: string | null = null;
  const runs = new Map<string, StepRun>();
  for (const event of events) {
    const data = event.data as Record<string, unknown>;
    const at = ms(event.timestamp);
    switch (event.type) {
      case "JobSubmitted":
        status = "queued";
        break;
      case "JobAdmitted":
        status = "running";
        endedAt = null;
        break;
      case "JobRetried":
        status = "queued";
        attempt = num(data.attempt) || attempt + 1;
        endedAt = null;
        reason = null;
        break;
      case "AttemptStarted":
        attempt = num(data.attempt) || attempt + 1;
        break;
      case "StepStarted":
      case "StepResumed": {
        const step = str(data.step);
        const key = `${step}:${num(data.attempt)}`;
        const run = runs.get(key);
        if (run) {
          run.finishedAt = null;
          run.outcome = null;
        } else {
          runs.set(key, {
            step,
            phase: stepPhase(pipeline, step) ?? "planning",
            attempt: num(data.attempt),
            startedAt: at,
            finishedAt: null,
            outcome: null,
            summary: "",
            failedReason: null,
            details: {},
          });
        }
        break;
      }
      case "StepFinished":
      case "StepFailed": {
        const key = `${str(data.step)}:${num(data.attempt)}`;
        const run = runs.get(key);
        if (run) {
          run.finishedAt = at;
          run.outcome = event.type === "StepFinished" ? str(data.outcome) : "error";
          run.summary = str(data.summary);
          run.failedReason = event.type === "StepFailed" ? str(data.reason) : null;
          run.details = (data.details as Record<string, unknown>) ?? {};
        }
        break;
      }
      case "JobCompleted":
        status = "completed";
        endedAt = at;
        break;
      case "JobFailed":
        status = "failed";
        endedAt = at;
        reason = str(data.reason);
        break;
      case "JobCancelled":
        status = "cancelled";
        endedAt = at;
        reason = str(data.reason);
        break;
    }
  }
  const order: string[] = pipeline?.steps.map((s) => s.step) ?? [];
  const ordered = [...runs.values()].sort((a, b) => a.attempt - b.attempt || order.indexOf(a.step) - order.indexOf(b.step));
  const ended = status === "completed" || status === "failed" || status === "cancelled";
  return {
    status,
    attempt,
    runs: ordered,
    phases: pipeline ? pipeline.phases.map((phase) => phaseView(pipeline, phase, ordered, attempt, ended ? (endedAt ?? now) : now, ended)) : [],
    endedAt,
    reason,
  };
}

function phaseView(
  pipeline: Pipeline,
  phase: Phase,
  runs: StepRun[],
  attempt: number,
  now: number,
  ended: boolean,
): PhaseView {
  // Planning is done once for the job (again only on a retry from planning): the latest plan.
  let own = runs.filter((r) => r.phase === phase && (phase === "planning" ? r.attempt <= attempt : r.attempt === attempt));
  if (phase === "planning" && own.length > 1) own = own.slice(-1);
  let reused = false;
  if (own.length === 0) {
    // A retry that started later reuses this phase's last results from an earlier attempt.
    const index = pipeline.phases.indexOf(phase);
    const laterStarted = runs.some((r) => r.attempt === attempt && pipeline.phases.indexOf(r.phase) > index);
    if (laterStarted) {
      const earlier = runs.filter((r) => r.phase === phase && r.attempt < attempt);
      const last = earlier.at(-1)?.attempt;
      own = earlier.filter((r) => r.attempt === last);
      reused = own.length > 0;
    }
  }
  if (own.length === 0) {
    return { phase, state: ended ? "stopped" : "pending", attempt: null, startedAt: null, finishedAt: null, seconds: null };
  }
  const startedAt = Math.min(...own.map((r) => r.startedAt));
  const open = own.some((r) => r.finishedAt === null);
  const finishedAt = open ? null : Math.max(...own.map((r) => r.finishedAt ?? 0));
  const seconds = own.reduce((total, r) => total + ((r.finishedAt ?? now) - r.startedAt) / 1000, 0);
  const complete = phaseSteps(pipeline, phase).every((step) => own.some((r) => r.step === step && r.finishedAt !== null));
  let state: PhaseState;
  if (reused) state = "reused";
  else if (own.some((r) => r.outcome === "error")) state = "failed";
  else if (own.some((r) => r.outcome !== null && rejectingOutcomes(pipeline).has(r.outcome))) state = "rejected";
  else if (open || !complete) state = ended ? "stopped" : "running";
  else state = "done";
  return { phase, state, attempt: own[0]?.attempt ?? null, startedAt, finishedAt, seconds: Math.max(0, seconds) };
}
