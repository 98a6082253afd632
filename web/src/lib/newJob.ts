// The new-job form's rules, the gateway's own (it refuses the same things with a 422), checked
// before sending so each field says what is wrong.
import type { AiPhase, JobCreate, ModelDefaults, Template } from "../api/types";
import { AI_PHASES } from "../api/types";

export const TITLE_MAX = 200;
export const DESCRIPTION_MAX = 20_000;
export const ATTEMPTS_MAX = 10;
export const BUDGET_MAX = 10_000;
export const PROVIDERS = ["anthropic", "openai", "google", "gemini", "scripted"];

export interface NewJobForm {
  template: string;
  title: string;
  description: string;
  routes: Record<AiPhase, string>;
  budget: string;
  maxAttempts: string;
  priority: string;
}

export type FormErrors = Partial<Record<"title" | "description" | "budget" | "maxAttempts" | "priority" | AiPhase, string>>;

export const EMPTY_FORM: NewJobForm = {
  template: "",
  title: "",
  description: "",
  routes: { planner: "", builder: "", tester: "", reviewer: "" },
  budget: "",
  maxAttempts: "",
  priority: "",
};

function routeProblem(text: string): string | null {
  const routes = text.split(",").map((r) => r.trim()).filter(Boolean);
  if (routes.length > 5) return "At most 5 models: the first, then up to 4 fallbacks.";
  for (const route of routes) {
    const [provider, ...rest] = route.split(":");
    const model = rest.join(":").trim();
    if (!provider || !model) return `"${route}" is not provider:model (e.g. anthropic:claude-sonnet-4-5).`;
    if (!PROVIDERS.includes(provider.trim().toLowerCase()))
      return `"${provider}" is not a provider: use anthropic, openai, google or scripted.`;
    if (/\s/.test(model)) return "A model's name has no spaces.";
  }
  return null;
}

export function validate(form: NewJobForm): FormErrors {
  const errors: FormErrors = {};
  const fromTemplate = Boolean(form.template);
  if (!form.title.trim() && !fromTemplate) errors.title = "Give the job a title.";
  else if (form.title.length > TITLE_MAX) errors.title = `At most ${TITLE_MAX} characters (now ${form.title.length}).`;
  if (!form.description.trim() && !fromTemplate) errors.description = "Describe what to build, in plain words.";
  else if (form.description.length > DESCRIPTION_MAX)
    errors.description = `At most ${DESCRIPTION_MAX.toLocaleString("en")} characters.`;
  if (form.budget.trim()) {
    const budget = Number(form.budget);
    if (!Number.isFinite(budget) || budget <= 0 || budget > BUDGET_MAX)
      errors.budget = `A budget is more than $0 and at most $${BUDGET_MAX.toLocaleString("en")}.`;
  }
  if (form.maxAttempts.trim()) {
    const attempts = Number(form.maxAttempts);
    if (!Number.isInteger(attempts) || attempts < 1 || attempts > ATTEMPTS_MAX)
      errors.maxAttempts = `A whole number from 1 to ${ATTEMPTS_MAX}.`;
  }
  if (form.priority.trim()) {
    const priority = Number(form.priority);
    if (!Number.isInteger(priority) || priority < 0 || priority > 9) errors.priority = "A whole number from 0 to 9.";
  }
  for (const phase of AI_PHASES) {
    const problem = routeProblem(form.routes[phase]);
    if (problem) errors[phase] = problem;
  }
  return errors;
}

/** The request body for a valid form: only what was given (the rest: the template's, or the
 * deployment's defaults). */
export function toRequest(form: NewJobForm): JobCreate {
  const body: JobCreate = {};
  if (form.template) body.template = form.template;
  if (form.title.trim()) body.title = form.title.trim();
  if (form.description.trim()) body.description = form.description.trim();
  if (form.budget.trim()) body.budget_usd = Number(form.budget);
  if (form.maxAttempts.trim()) body.max_attempts = Number(form.maxAttempts);
  if (form.priority.trim()) body.priority = Number(form.priority);
  const routes: Record<string, string[]> = {};
  for (const phase of AI_PHASES) {
    const chain = form.routes[phase].split(",").map((r) => r.trim()).filter(Boolean);
    if (chain.length) routes[phase] = chain;
  }
  if (Object.keys(routes).length) body.routes = routes;
  return body;
}

/** What a job submitted as the form stands would run into for want of a model: nothing, no
 * provider configured at all (so only the built-in scripted model, which does the demo jobs
 * only), or phases whose models' providers have no key. */
export type ModelWarning = { kind: "no-model" } | { kind: "no-key"; phases: AiPhase[] };

const provider = (route: string) => {
  const name = route.split(":")[0]!.trim().toLowerCase();
  return name === "gemini" ? "google" : name;
};
const chain = (text: string) => text.split(",").map((r) => r.trim()).filter(Boolean);

export function modelWarning(form: NewJobForm, template: Template | undefined, defaults: ModelDefaults | null | undefined): ModelWarning | null {
  // Until the AI services have said what they have, nothing is known.
  if (!defaults?.reported_at) return null;
  const chosen = AI_PHASES.map((phase) => [phase, chain(form.routes[phase]).map(provider)] as const);
  if (defaults.scripted) {
    // A demo template runs on the scripted model unless a phase is given another model.
    const demo = template?.scripted === true;
    const picked = chosen.some(([, providers]) => providers.some((p) => p !== "scripted"));
    return demo && !picked ? null : { kind: "no-model" };
  }
  const usable = new Set([...defaults.providers, "scripted"]);
  const phases = chosen
    .filter(([phase, providers]) =>
      providers.length ? !providers.some((p) => usable.has(p)) : Boolean(defaults.phases.find((d) => d.phase === phase)?.problem),
    )
    .map(([phase]) => phase);
  return phases.length ? { kind: "no-key", phases } : null;
}
