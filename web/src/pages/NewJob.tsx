import { AlertTriangle, ChevronDown, ChevronRight, Info, Send } from "lucide-react";
import { useEffect, useRef, useState, type FormEvent, type ReactNode } from "react";
import { Link, useNavigate } from "react-router-dom";
import { api, errorText, must } from "../api/client";
import type { AiPhase, ModelDefaults, Template } from "../api/types";
import { AI_PHASES } from "../api/types";
import { useAuth } from "../auth";
import { usd } from "../lib/format";
import { EMPTY_FORM, TITLE_MAX, modelWarning, toRequest, validate, type FormErrors, type ModelWarning, type NewJobForm } from "../lib/newJob";
import { routeReason } from "../lib/providers";
import { useModelDefaults } from "../lib/useModelDefaults";

function Field({ id, label, error, help, children }: { id: string; label: string; error?: string; help?: string; children: ReactNode }) {
  return (
    <div>
      <label htmlFor={id} className="label">
        {label}
      </label>
      {children}
      {help && !error && (
        <p id={`${id}-help`} className="mt-1 text-xs text-slate-600">
          {help}
        </p>
      )}
      {error && (
        <p id={`${id}-error`} className="mt-1 text-sm font-medium text-red-800">
          {error}
        </p>
      )}
    </div>
  );
}

const describedBy = (id: string, errors: FormErrors, key: keyof FormErrors) => (errors[key] ? `${id}-error` : `${id}-help`);

/** What an empty model field means: the phase's default models, and why. */
function routeHelp(phase: AiPhase, defaults: ModelDefaults | null | undefined): { placeholder: string; help: string } {
  const syntax = "provider:model, then fallbacks, comma separated";
  const given = defaults?.reported_at ? defaults.phases.find((p) => p.phase === phase) : undefined;
  if (!given) return { placeholder: "default", help: `${syntax}; empty: the default` };
  if (defaults?.scripted) return { placeholder: "built-in scripted model", help: `${syntax}; empty: the built-in scripted model (no provider is configured)` };
  if (given.problem) return { placeholder: "no usable default", help: `${syntax}; empty: none can be used (${given.problem})` };
  const routes = given.routes.join(", ");
  const reason = routeReason(given.source, given.why);
  return { placeholder: routes, help: `${syntax}; empty: ${routes}${reason ? ` (${reason})` : ""}` };
}

const phasesModels = (phases: AiPhase[]) =>
  phases.length === 1 ? `the ${phases[0]}'s model` : `the models of the ${phases.slice(0, -1).join(", ")} and ${phases.at(-1)}`;

/** The warning before submitting a job that would be refused for want of a model. */
function ModelWarningNote({ warning, admin }: { warning: ModelWarning; admin: boolean }) {
  const fix = admin ? (
    <>
      Add a provider&apos;s key in{" "}
      <Link to="/settings#model-providers" className="font-medium text-indigo-800 underline">
        Settings → Model providers
      </Link>{" "}
      (it takes effect at once; one provider&apos;s key is enough).
    </>
  ) : (
    <>Ask an admin to add a model provider&apos;s key in Settings (one is enough).</>
  );
  return (
    <div id="model-warning" className="flex gap-2 rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-950">
      <AlertTriangle aria-hidden="true" className="mt-0.5 h-4 w-4 shrink-0" />
      <p>
        {warning.kind === "no-model" ? (
          <>
            <strong>No AI model is configured:</strong> this job will be refused. The built-in scripted model only does the demo jobs.{" "}
          </>
        ) : (
          <>
            <strong>No key for {phasesModels(warning.phases)}:</strong> this job will fail there.{" "}
          </>
        )}
        {fix}
      </p>
    </div>
  );
}

/** The form, apart from where the templates come from and what happens on submit. */
export function NewJobFormView({
  templates,
  onSubmit,
  defaults = null,
  admin = false,
}: {
  templates: Template[];
  onSubmit(form: NewJobForm): Promise<string | null>;
  /** What a new job gets unless it chooses otherwise (`GET /api/providers`); null: not known. */
  defaults?: ModelDefaults | null;
  /** Whether the user may add a key in Settings. */
  admin?: boolean;
}) {
  const [form, setForm] = useState<NewJobForm>(EMPTY_FORM);
  const [errors, setErrors] = useState<FormErrors>({});
  const [advanced, setAdvanced] = useState(false);
  const [failure, setFailure] = useState("");
  const [busy, setBusy] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const anyway = useRef<HTMLButtonElement>(null);
  const set = (patch: Partial<NewJobForm>) => setForm((f) => ({ ...f, ...patch }));
  const chosen = templates.find((t) => t.name === form.template);
  const warning = modelWarning(form, chosen, defaults);
  useEffect(() => {
    if (confirming) anyway.current?.focus();
  }, [confirming]);

  function pick(name: string) {
    const template = templates.find((t) => t.name === name);
    if (!template) {
      set({ template: "" });
      return;
    }
    setForm({
      template: name,
      title: template.title,
      description: template.description,
      routes: {
        planner: (template.routes.planner ?? []).join(", "),
        builder: (template.routes.builder ?? []).join(", "),
        tester: (template.routes.tester ?? []).join(", "),
        reviewer: (template.routes.reviewer ?? []).join(", "),
      },
      budget: template.budget_usd?.toString() ?? "",
      maxAttempts: template.max_attempts?.toString() ?? "",
      priority: template.priority?.toString() ?? "",
    });
    setErrors({});
  }

  async function submit(event: FormEvent) {
    event.preventDefault();
    const found = validate(form);
    setErrors(found);
    setFailure("");
    if (Object.keys(found).length) {
      if (AI_PHASES.some((p) => found[p]) || found.budget || found.maxAttempts || found.priority) setAdvanced(true);
      return;
    }
    // A job that would be refused is sent only once the user says so.
    if (warning) {
      setConfirming(true);
      return;
    }
    await send();
  }

  async function send() {
    setConfirming(false);
    setBusy(true);
    const problem = await onSubmit(form);
    setBusy(false);
    if (problem) setFailure(problem);
  }

  const count = Object.keys(errors).length;
  return (
    <form onSubmit={submit} noValidate className="card space-y-4 p-4 sm:p-6" aria-label="New job">
      {count > 0 && (
        <p role="alert" className="rounded-md bg-red-50 px-3 py-2 text-sm text-red-900">
          {count === 1 ? "One field needs" : `${count} fields need`} attention before the job can be submitted.
        </p>
      )}
      <Field id="template" label="Start from a template (optional)" help={chosen?.summary || "A template fills in the fields below; change any of them."}>
        <select id="template" className="input" value={form.template} onChange={(e) => pick(e.target.value)} aria-describedby="template-help">
          <option value="">No template</option>
          {templates.map((t) => (
            <option key={t.id} value={t.name}>
              {t.title} ({t.name}){t.scripted ? " · runs without a model key" : ""}
            </option>
          ))}
        </select>
      </Field>
      {chosen?.scripted && (
        <p id="demo-note" className="flex gap-2 rounded-md bg-emerald-50 px-3 py-2 text-sm text-emerald-950">
          <Info aria-hidden="true" className="mt-0.5 h-4 w-4 shrink-0" />
          <span>
            A demo: it runs on the built-in scripted model, for free, even when a provider&apos;s key is configured, unless a model is picked
            for a phase under Advanced.
          </span>
        </p>
      )}
      <Field id="title" label="Title" error={errors.title} help={`A short name, up to ${TITLE_MAX} characters.`}>
        <input
          id="title"
          className="input"
          value={form.title}
          onChange={(e) => set({ title: e.target.value })}
          aria-invalid={Boolean(errors.title)}
          aria-describedby={describedBy("title", errors, "title")}
        />
      </Field>
      <Field id="description" label="Description" error={errors.description} help="What to build, in plain language: e.g. a FastAPI todo API with SQLite and tests.">
        <textarea
          id="description"
          rows={5}
          className="input"
          value={form.description}
          onChange={(e) => set({ description: e.target.value })}
          aria-invalid={Boolean(errors.description)}
          aria-describedby={describedBy("description", errors, "description")}
        />
      </Field>
      <div className="rounded-md border border-slate-200">
        <button
          type="button"
          className="flex w-full items-center gap-1.5 px-3 py-2 text-left text-sm font-medium text-slate-800 focus-visible:outline focus-visible:outline-2 focus-visible:outline-indigo-600"
          aria-expanded={advanced}
          aria-controls="advanced"
          onClick={() => setAdvanced(!advanced)}
        >
          {advanced ? <ChevronDown aria-hidden="true" className="h-4 w-4" /> : <ChevronRight aria-hidden="true" className="h-4 w-4" />}
          Advanced: models, budget, attempts
        </button>
        {advanced && (
          <div id="advanced" className="grid gap-4 border-t border-slate-200 p-3 sm:grid-cols-2">
            {AI_PHASES.map((phase) => (
              <Field key={phase} id={`route-${phase}`} label={`Model for the ${phase}`} error={errors[phase]} help={routeHelp(phase, defaults).help}>
                <input
                  id={`route-${phase}`}
                  className="input font-mono"
                  placeholder={routeHelp(phase, defaults).placeholder}
                  value={form.routes[phase]}
                  onChange={(e) => set({ routes: { ...form.routes, [phase]: e.target.value } })}
                  aria-invalid={Boolean(errors[phase])}
                  aria-describedby={describedBy(`route-${phase}`, errors, phase)}
                />
              </Field>
            ))}
            <Field id="budget" label="Budget (USD)" error={errors.budget} help={`A hard cap on what its model calls may cost; empty: ${defaults ? usd(defaults.budget_usd) : "the default"}`}>
              <input id="budget" inputMode="decimal" className="input" placeholder={defaults ? String(defaults.budget_usd) : undefined} value={form.budget} onChange={(e) => set({ budget: e.target.value })} aria-invalid={Boolean(errors.budget)} aria-describedby={describedBy("budget", errors, "budget")} />
            </Field>
            <Field id="max-attempts" label="Max attempts" error={errors.maxAttempts} help={`Build, test and review rounds at most (1 to 10); empty: ${defaults ? defaults.max_attempts : "the default"}`}>
              <input id="max-attempts" inputMode="numeric" className="input" placeholder={defaults ? String(defaults.max_attempts) : undefined} value={form.maxAttempts} onChange={(e) => set({ maxAttempts: e.target.value })} aria-invalid={Boolean(errors.maxAttempts)} aria-describedby={describedBy("max-attempts", errors, "maxAttempts")} />
            </Field>
            <Field id="priority" label="Priority" error={errors.priority} help="0 to 9, higher runs first (default 5)">
              <input id="priority" inputMode="numeric" className="input" value={form.priority} onChange={(e) => set({ priority: e.target.value })} aria-invalid={Boolean(errors.priority)} aria-describedby={describedBy("priority", errors, "priority")} />
            </Field>
          </div>
        )}
      </div>
      {failure && (
        <p role="alert" className="rounded-md bg-red-50 px-3 py-2 text-sm text-red-900">
          {failure}
        </p>
      )}
      {warning && <ModelWarningNote warning={warning} admin={admin} />}
      {warning && confirming ? (
        <div role="group" aria-label="Confirm submitting" className="flex flex-wrap items-center gap-2 text-sm">
          <span>Submit it anyway?</span>
          <button ref={anyway} type="button" className="btn-primary" disabled={busy} onClick={() => void send()}>
            <Send aria-hidden="true" className="h-4 w-4" /> Submit anyway
          </button>
          <button type="button" className="btn-secondary" onClick={() => setConfirming(false)}>
            Not now
          </button>
        </div>
      ) : (
        <button type="submit" className="btn-primary" disabled={busy} aria-describedby={warning ? "model-warning" : undefined}>
          <Send aria-hidden="true" className="h-4 w-4" /> {busy ? "Submitting…" : "Submit job"}
        </button>
      )}
    </form>
  );
}

export function NewJobPage() {
  const navigate = useNavigate();
  const { me } = useAuth();
  const defaults = useModelDefaults();
  const [templates, setTemplates] = useState<Template[]>([]);
  const [error, setError] = useState("");
  useEffect(() => {
    api.GET("/api/templates", { params: { query: { limit: 200 } } }).then(
      (answer) => setTemplates(must(answer).items),
      (e: unknown) => setError(String(e)),
    );
  }, []);

  async function submit(form: NewJobForm): Promise<string | null> {
    const { data, error: refused, response } = await api.POST("/api/jobs", { body: toRequest(form) });
    if (!data) return errorText(refused, `The gateway answered ${response.status}.`);
    navigate(`/jobs/${data.id}`);
    return null;
  }

  return (
    <div className="mx-auto max-w-3xl space-y-4">
      <h1 className="text-2xl font-semibold">New job</h1>
      {error && <p role="alert" className="text-sm text-red-800">{error}</p>}
      <NewJobFormView templates={templates} onSubmit={submit} defaults={defaults} admin={me?.role === "admin"} />
    </div>
  );
}
