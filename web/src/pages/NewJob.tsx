import { ChevronDown, ChevronRight, Send } from "lucide-react";
import { useEffect, useState, type FormEvent, type ReactNode } from "react";
import { useNavigate } from "react-router-dom";
import { api, errorText, must } from "../api/client";
import type { Template } from "../api/types";
import { AI_PHASES } from "../api/types";
import { EMPTY_FORM, TITLE_MAX, toRequest, validate, type FormErrors, type NewJobForm } from "../lib/newJob";

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

/** The form, apart from where the templates come from and what happens on submit. */
export function NewJobFormView({
  templates,
  onSubmit,
}: {
  templates: Template[];
  onSubmit(form: NewJobForm): Promise<string | null>;
}) {
  const [form, setForm] = useState<NewJobForm>(EMPTY_FORM);
  const [errors, setErrors] = useState<FormErrors>({});
  const [advanced, setAdvanced] = useState(false);
  const [failure, setFailure] = useState("");
  const [busy, setBusy] = useState(false);
  const set = (patch: Partial<NewJobForm>) => setForm((f) => ({ ...f, ...patch }));

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
    setBusy(true);
    const problem = await onSubmit(form);
    setBusy(false);
    if (problem) setFailure(problem);
  }

  const chosen = templates.find((t) => t.name === form.template);
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
              <Field key={phase} id={`route-${phase}`} label={`Model for the ${phase}`} error={errors[phase]} help="provider:model, then fallbacks, comma separated; empty: the default">
                <input
                  id={`route-${phase}`}
                  className="input font-mono"
                  placeholder="default"
                  value={form.routes[phase]}
                  onChange={(e) => set({ routes: { ...form.routes, [phase]: e.target.value } })}
                  aria-invalid={Boolean(errors[phase])}
                  aria-describedby={describedBy(`route-${phase}`, errors, phase)}
                />
              </Field>
            ))}
            <Field id="budget" label="Budget (USD)" error={errors.budget} help="A hard cap on what its model calls may cost; empty: the default">
              <input id="budget" inputMode="decimal" className="input" value={form.budget} onChange={(e) => set({ budget: e.target.value })} aria-invalid={Boolean(errors.budget)} aria-describedby={describedBy("budget", errors, "budget")} />
            </Field>
            <Field id="max-attempts" label="Max attempts" error={errors.maxAttempts} help="Build, test and review rounds at most (1 to 10)">
              <input id="max-attempts" inputMode="numeric" className="input" value={form.maxAttempts} onChange={(e) => set({ maxAttempts: e.target.value })} aria-invalid={Boolean(errors.maxAttempts)} aria-describedby={describedBy("max-attempts", errors, "maxAttempts")} />
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
      <button type="submit" className="btn-primary" disabled={busy}>
        <Send aria-hidden="true" className="h-4 w-4" /> {busy ? "Submitting…" : "Submit job"}
      </button>
    </form>
  );
}

export function NewJobPage() {
  const navigate = useNavigate();
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
      <NewJobFormView templates={templates} onSubmit={submit} />
    </div>
  );
}
