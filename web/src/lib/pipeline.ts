// The job pipeline's vocabulary as the domain states it (`GET /api/pipeline`): the steps in order
// with their phase and rejecting verdict, and the phases. Asked once per page load; the dashboard
// keeps no copy of the rules of its own.
import { useEffect, useState } from "react";
import { api } from "../api/client";
import type { Phase, Pipeline } from "../api/types";

let asked: Promise<Pipeline | null> | null = null;

function askOnce(): Promise<Pipeline | null> {
  asked ??= api.GET("/api/pipeline").then(
    ({ data }) => data ?? null,
    () => null,
  );
  // A failed answer is asked for again by the next page that needs it.
  return asked.then((pipeline) => {
    if (pipeline === null) asked = null;
    return pipeline;
  });
}

/** The pipeline, or null until it has arrived. */
export function usePipeline(): Pipeline | null {
  const [pipeline, setPipeline] = useState<Pipeline | null>(null);
  useEffect(() => {
    let stopped = false;
    void askOnce().then((found) => {
      if (!stopped) setPipeline(found);
    });
    return () => {
      stopped = true;
    };
  }, []);
  return pipeline;
}

/** The phase of a step, by its name (undefined for a step this pipeline does not have). */
export function stepPhase(pipeline: Pipeline | null, step: string): Phase | undefined {
  return pipeline?.steps.find((s) => s.step === step)?.phase;
}

/** The steps of each phase, in order. */
export function phaseSteps(pipeline: Pipeline, phase: Phase): string[] {
  return pipeline.steps.filter((s) => s.phase === phase).map((s) => s.step);
}

/** The verdicts that send a job back (or end it on its last attempt). */
export function rejectingOutcomes(pipeline: Pipeline): Set<string> {
  return new Set(pipeline.steps.flatMap((s) => (s.rejecting ? [s.rejecting] : [])));
}
