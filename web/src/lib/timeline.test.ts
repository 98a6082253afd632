import { describe, expect, it } from "vitest";
import type { JobEvent, Pipeline, PipelineStep } from "../api/types";
import { course } from "./timeline";

let position = 0;
function event(type: string, data: Record<string, unknown>, second: number): JobEvent {
  position += 1;
  return {
    position,
    job_id: "j",
    version: position,
    type,
    timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString(),
    correlation_id: "c",
    causation_id: "c",
    data,
  };
}
const started = (step: string, attempt: number, s: number) => event("StepStarted", { step, attempt }, s);
const finished = (step: string, attempt: number, outcome: string, s: number) =>
  event("StepFinished", { step, attempt, outcome, summary: `${step} ${outcome}`, details: {} }, s);

// What `GET /api/pipeline` answers.
const step = (name: PipelineStep["step"], phase: PipelineStep["phase"], rejecting: PipelineStep["rejecting"] = null): PipelineStep => ({
  step: name,
  phase,
  role: null,
  outcomes: [],
  rejecting,
});
const PIPELINE: Pipeline = {
  steps: [
    step("plan", "planning"),
    step("build", "building"),
    step("write_tests", "testing"),
    step("run_tests", "testing", "failed"),
    step("review", "reviewing", "changes_requested"),
    step("sandbox_run", "sandboxing", "down"),
  ],
  phases: ["planning", "building", "testing", "reviewing", "sandboxing"],
  outcomes: ["ok", "passed", "failed", "approved", "changes_requested", "up", "down"],
  ai_phases: ["planner", "builder", "tester", "reviewer"],
  attempt_start: "build",
};

describe("course", () => {
  it("follows a job through its phases, with durations", () => {
    const events = [event("JobSubmitted", {}, 0), event("JobAdmitted", {}, 1), started("plan", 1, 1), finished("plan", 1, "ok", 3), started("build", 1, 3)];
    const now = Date.UTC(2026, 0, 1, 0, 0, 8);
    const job = course(events, PIPELINE, now);
    expect(job.status).toBe("running");
    const [planning, building, testing] = job.phases;
    expect(planning).toMatchObject({ state: "done", seconds: 2 });
    expect(building).toMatchObject({ state: "running", seconds: 5 });
    expect(testing).toMatchObject({ state: "pending", seconds: null });
  });

  it("marks a rejected attempt, then the next attempt's phases", () => {
    const events = [
      event("JobSubmitted", {}, 0),
      event("JobAdmitted", {}, 0),
      started("plan", 1, 0),
      finished("plan", 1, "ok", 1),
      started("build", 1, 1),
      finished("build", 1, "ok", 2),
      started("write_tests", 1, 2),
      finished("write_tests", 1, "ok", 3),
      started("run_tests", 1, 3),
      finished("run_tests", 1, "failed", 4),
    ];
    expect(course(events, PIPELINE).phases[2]?.state).toBe("rejected");
    const next = course([...events, event("AttemptStarted", { attempt: 2 }, 4), started("build", 2, 4)], PIPELINE);
    expect(next.attempt).toBe(2);
    expect(next.phases.map((p) => p.state)).toEqual(["done", "running", "pending", "pending", "pending"]);
  });

  it("shows reused phases after a retry from a later phase, and why a job ended", () => {
    const events = [
      event("JobSubmitted", {}, 0),
      started("plan", 1, 0),
      finished("plan", 1, "ok", 1),
      started("build", 1, 1),
      finished("build", 1, "ok", 2),
      event("JobCancelled", { reason: "not needed" }, 3),
    ];
    const cancelled = course(events, PIPELINE);
    expect(cancelled.status).toBe("cancelled");
    expect(cancelled.reason).toBe("not needed");
    expect(cancelled.phases[2]?.state).toBe("stopped");
    const retried = course([...events, event("JobRetried", { attempt: 2 }, 4), started("write_tests", 2, 5)], PIPELINE);
    expect(retried.status).toBe("queued");
    expect(retried.phases[1]?.state).toBe("reused");
    expect(retried.phases[2]?.state).toBe("running");
  });

  it("counts a step that could not be done as failed", () => {
    const events = [event("JobSubmitted", {}, 0), started("plan", 1, 0), event("StepFailed", { step: "plan", attempt: 1, reason: "no model" }, 1), event("JobFailed", { reason: "planning failed" }, 1)];
    const job = course(events, PIPELINE);
    expect(job.phases[0]?.state).toBe("failed");
    expect(job.status).toBe("failed");
    expect(job.reason).toBe("planning failed");
  });
});
