// The API's shapes, named: every one comes from the schema the gateway publishes, so a field
// the gateway renames or drops breaks the build here rather than the page.
import type { components } from "./schema";

type Schemas = components["schemas"];
export type Job = Schemas["JobPublic"];
export type JobDetail = Schemas["JobDetail"];
export type JobsPage = Schemas["JobsPage"];
export type JobCreate = Schemas["JobCreate"];
export type Step = Schemas["StepPublic"];
export type JobEvent = Schemas["EventPublic"];
export type ModelCall = Schemas["ModelCallPublic"];
export type ArtifactTree = Schemas["ArtifactTree"];
export type ArtifactFile = Schemas["ArtifactFile"];
export type AttemptsDiff = Schemas["AttemptsDiff"];
export type FileDiff = Schemas["FileDiffPublic"];
export type LogLine = Schemas["LogLinePublic"];
export type Plan = Schemas["PlanPublic"];
export type Stats = Schemas["StatsPublic"];
export type Template = Schemas["TemplatePublic"];
export type User = Schemas["UserPublic"];
export type Token = Schemas["TokenPublic"];
export type TokenCreated = Schemas["TokenCreated"];
export type Me = Schemas["MePublic"];
export type Status = Job["status"];
export type Role = Me["role"];

/** What `GET /api/admin/providers` answers (admins): which model providers have a key (never the
 * key), and the routes each AI phase takes, as their services reported them. */
export type ProvidersReport = Schemas["ProvidersPublic"];
export type ProviderView = Schemas["ProviderPublic"];
export type PhaseModels = Schemas["PhaseModelsPublic"];
export type ProviderKeyIn = Schemas["ProviderKeyIn"];
export type ProviderTest = Schemas["ProviderTestPublic"];
/** What `GET /api/providers` answers (everyone): the models, budget and attempts a new job gets
 * unless it chooses its own, and whether only the built-in scripted model is there. */
export type ModelDefaults = Schemas["ModelDefaultsPublic"];

/** What `GET /api/pipeline` answers: the steps of a job in order, with their phase, AI phase and
 * rejecting verdict; the phases and the outcomes, as the domain states them. */
export type Pipeline = Schemas["PipelinePublic"];
export type PipelineStep = Schemas["PipelineStepPublic"];
export type Phase = Schemas["Phase"];
export const PHASES: readonly Phase[] = ["planning", "building", "testing", "reviewing", "sandboxing"];
export type AiPhase = Schemas["AiPhase"];
/** The form's order of the AI phases; the schema's enum checks every name. */
export const AI_PHASES: readonly AiPhase[] = ["planner", "builder", "tester", "reviewer"];
export const STATUSES: Status[] = ["queued", "running", "completed", "failed", "cancelled"];
