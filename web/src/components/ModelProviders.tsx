import { FlaskConical, Save, Trash2 } from "lucide-react";
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { api, errorText } from "../api/client";
import type { PhaseModels, ProviderKeyIn, ProvidersReport, ProviderTest, ProviderView } from "../api/types";
import { duration, when } from "../lib/format";
import { PROVIDERS, keyRequest, providerLabel, reportedSince, routeReason, type KeyFormErrors } from "../lib/providers";

// How often the report is asked for while the AI services are starting, and while they take a
// change of keys (they re-report within a second or so); how long a change is waited for.
const STARTING_MS = 3000;
const CHANGING_MS = 400;
const CHANGE_WAIT_MS = 30_000;

const LOCAL_SERVERS =
  "For an OpenAI-compatible server on your own machine: Ollama http://127.0.0.1:11434/v1, vLLM http://127.0.0.1:8000/v1, llama.cpp http://127.0.0.1:8080/v1 (a server that needs no key takes any, e.g. \"local\").";

type Change = "idle" | "taking" | "taken" | "late";

/** Settings → Model providers: each provider's key (where it comes from, never the key), a form
 * to enter, try or remove one, and the models each AI phase runs on, with why. */
export function ModelProviders() {
  const [report, setReport] = useState<ProvidersReport | null | "absent">(null);
  const [change, setChange] = useState<Change>("idle");
  const latest = useRef<ProvidersReport | null>(null);
  const loop = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout>>();

  /** Ask for the report, and again until every AI service has reported (since `since`, after a
   * change of keys). A new call ends the loop before it. */
  const follow = useCallback((since: string | null, changed: boolean) => {
    const mine = ++loop.current;
    const until = Date.now() + CHANGE_WAIT_MS;
    clearTimeout(timer.current);
    const again = (ms: number) => {
      timer.current = setTimeout(ask, ms);
    };
    function ask() {
      api.GET("/api/admin/providers").then(
        ({ data }) => {
          if (mine !== loop.current) return;
          setReport(data ?? "absent");
          if (data) latest.current = data;
          if (data && reportedSince(data, since)) {
            if (changed) setChange("taken");
          } else if (changed && Date.now() > until) setChange("late");
          else again(changed ? CHANGING_MS : STARTING_MS);
        },
        () => {
          if (mine !== loop.current) return;
          setReport((known) => known ?? "absent");
          again(STARTING_MS);
        },
      );
    }
    ask();
  }, []);

  useEffect(() => {
    follow(null, false);
    return () => {
      loop.current++;
      clearTimeout(timer.current);
    };
  }, [follow]);

  /** Run a change of keys, then follow the report until every AI service has taken it. */
  const changeKeys = useCallback(
    async <T,>(action: () => Promise<T | null>): Promise<T | null> => {
      // The latest report before the change: the services' next ones are later by their own clock.
      const fresh = await api.GET("/api/admin/providers").catch(() => null);
      const before = fresh?.data?.reported_at ?? latest.current?.reported_at ?? null;
      const done = await action();
      if (done !== null) {
        setChange("taking");
        follow(before, true);
      }
      return done;
    },
    [follow],
  );

  if (report === null) return <p className="text-sm text-slate-600">Loading…</p>;
  if (report === "absent")
    return <p className="text-sm text-slate-700">The providers cannot be read now (is NATS reachable?). Asking again in a moment…</p>;
  return (
    <div className="space-y-4 text-sm">
      <p className="text-slate-700">
        A key entered here takes effect at once, with no restart: the AI services use it from their next step. It is encrypted at rest, never
        shown again (only its last four characters) and not included in backups (enter it again after restoring elsewhere). A key set in the
        environment wins over one entered here. One provider&apos;s key is enough: every phase then uses it.
      </p>
      {change !== "idle" && (
        <p role="status" className={`rounded-md px-3 py-1.5 ${change === "late" ? "bg-amber-50 text-amber-950" : "bg-slate-100"}`}>
          {change === "taking" && "The AI services are taking the change…"}
          {change === "taken" && "Every AI service has taken the change: it serves the next job."}
          {change === "late" &&
            "Not every AI service has reported since the change (is one stopped?). Each reads the keys again at its next step."}
        </p>
      )}
      <div className="grid gap-3 lg:grid-cols-3">
        {PROVIDERS.map((name) => {
          const view = report.providers.find((p) => p.name === name);
          return view ? <ProviderCard key={name} view={view} changeKeys={changeKeys} /> : null;
        })}
      </div>
      <PhaseRoutes report={report} />
    </div>
  );
}

function PhaseRoutes({ report }: { report: ProvidersReport }) {
  if (!report.reported_at)
    return <p className="text-slate-700">Not reported yet: the AI services say which models they use once they run.</p>;
  return (
    <div>
      <h3 className="mb-1 font-semibold">What a new job runs on</h3>
      {report.scripted && (
        <p className="mb-2 rounded-md bg-amber-50 px-3 py-1.5 text-amber-950">
          No provider is configured: every phase runs on the built-in scripted model, which only does the demo jobs.
        </p>
      )}
      <ul className="divide-y divide-slate-100 rounded-md border border-slate-200">
        {report.phases.map((phase) => (
          <PhaseLine key={phase.phase} phase={phase} />
        ))}
      </ul>
      <p className="mt-1 text-xs text-slate-600">Reported {when(report.reported_at)}. Keys are never shown.</p>
    </div>
  );
}

function PhaseLine({ phase }: { phase: PhaseModels }) {
  return (
    <li className="px-3 py-1.5" data-phase-routes={phase.phase}>
      <span className="font-medium capitalize">{phase.phase}</span>{" "}
      {phase.reported_at ? (
        <>
          <span className="break-all font-mono text-xs">{phase.scripted ? "built-in scripted model" : (phase.routes ?? []).join(" → ") || "none"}</span>
          {(phase.why || phase.source) && <span className="block text-xs text-slate-600">{routeReason(phase.source, phase.why)}</span>}
          {phase.problem && <span className="block text-xs text-red-800">{phase.problem}</span>}
        </>
      ) : (
        <span className="text-xs text-slate-600">not reported yet (its service has not started)</span>
      )}
    </li>
  );
}

type ChangeKeys = <T>(action: () => Promise<T | null>) => Promise<T | null>;

function ProviderCard({ view, changeKeys }: { view: ProviderView; changeKeys: ChangeKeys }) {
  const label = providerLabel(view.name);
  const id = `provider-${view.name}`;
  const keyField = useRef<HTMLInputElement>(null);
  const [baseUrl, setBaseUrl] = useState(view.stored_base_url ?? "");
  const [errors, setErrors] = useState<KeyFormErrors>({});
  const [message, setMessage] = useState("");
  const [failure, setFailure] = useState("");
  const [busy, setBusy] = useState<"" | "save" | "test" | "remove">("");
  const [confirming, setConfirming] = useState(false);
  const [test, setTest] = useState<ProviderTest | null>(null);
  const [testFailure, setTestFailure] = useState("");
  // The field shows the stored base URL again when that changes (saved or removed), not before.
  const shownUrl = useRef(view.stored_base_url);
  useEffect(() => {
    if (shownUrl.current === view.stored_base_url) return;
    shownUrl.current = view.stored_base_url;
    setBaseUrl(view.stored_base_url ?? "");
  }, [view.stored_base_url]);
  const path = { params: { path: { provider: view.name } } };
  const stored = Boolean(view.stored_key || view.stored_base_url);

  async function save(event: FormEvent) {
    event.preventDefault();
    setMessage("");
    setFailure("");
    // The key is read from its field only here, and the field emptied once it is saved.
    const asked = keyRequest({ key: keyField.current?.value ?? "", baseUrl }, view.stored_base_url);
    if ("errors" in asked) {
      setErrors(asked.errors);
      if (asked.errors.key) keyField.current?.focus();
      return;
    }
    setErrors({});
    setBusy("save");
    const body: ProviderKeyIn = asked.body;
    const saved = await changeKeys(async () => {
      const { data, error, response } = await api.PUT("/api/admin/providers/{provider}", { ...path, body });
      if (!data) setFailure(errorText(error, `The gateway answered ${response.status}.`));
      return data ?? null;
    });
    setBusy("");
    if (!saved) return;
    if (keyField.current) keyField.current.value = "";
    setTest(null);
    setMessage(
      body.api_key !== undefined
        ? `Saved the key ${saved.stored_key ?? ""}${body.base_url !== undefined ? " and the base URL" : ""}.`
        : body.base_url
          ? "Saved the base URL."
          : "Removed the base URL.",
    );
  }

  async function remove() {
    setBusy("remove");
    setMessage("");
    setFailure("");
    const removed = await changeKeys(async () => {
      const { error, response } = await api.DELETE("/api/admin/providers/{provider}", path);
      if (!response.ok) setFailure(errorText(error, `The gateway answered ${response.status}.`));
      return response.ok ? true : null;
    });
    setBusy("");
    setConfirming(false);
    if (removed) {
      setTest(null);
      setMessage("Removed the key and base URL entered here.");
    }
  }

  async function tryKey() {
    setBusy("test");
    setTest(null);
    setTestFailure("");
    try {
      const { data, error, response } = await api.POST("/api/admin/providers/{provider}/test", path);
      if (data) setTest(data);
      else setTestFailure(errorText(error, `The gateway answered ${response.status}.`));
    } catch {
      setTestFailure("the gateway did not answer.");
    } finally {
      setBusy("");
    }
  }

  return (
    <section aria-labelledby={id} className="flex min-w-0 flex-col gap-2 rounded-md border border-slate-200 p-3">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h3 id={id} className="font-semibold">
          {label}
        </h3>
        <span
          className={`rounded px-1.5 text-xs ${view.configured ? "bg-emerald-50 text-emerald-900" : "bg-slate-100 text-slate-700"}`}
          data-testid={`${view.name}-state`}
        >
          {view.configured ? "configured" : "no key"}
        </span>
      </div>
      <dl className="grid grid-cols-[auto,minmax(0,1fr)] gap-x-3 gap-y-0.5 text-xs">
        <dt className="text-slate-600">Key</dt>
        <dd data-testid={`${view.name}-key`}>{keySource(view)}</dd>
        <dt className="text-slate-600">Base URL</dt>
        <dd className="break-all">
          {view.base_url ?? view.stored_base_url ?? `${label}'s own API`}
          {view.stored_base_url && view.base_url && view.stored_base_url !== view.base_url && (
            <span className="block">entered here: {view.stored_base_url} (the environment&apos;s wins)</span>
          )}
        </dd>
        <dt className="text-slate-600">Used by</dt>
        <dd>{view.phases.length ? view.phases.join(", ") : "no phase"}</dd>
      </dl>
      {view.environment_wins && (
        <p className="rounded bg-amber-50 px-2 py-1 text-xs text-amber-950">
          The environment&apos;s {view.key_source ?? "key"} is used; the key entered here ({view.stored_key}) is not. Remove{" "}
          {view.key_source ?? "it"} from the environment and restart VDO to use the one entered here.
        </p>
      )}
      <form onSubmit={save} noValidate className="space-y-2" aria-label={`${label} key and base URL`}>
        <div>
          <label htmlFor={`${id}-key`} className="label">
            <span className="sr-only">{label} </span>API key
          </label>
          <input
            ref={keyField}
            id={`${id}-key`}
            type="password"
            name={`${view.name}-api-key`}
            className="input font-mono"
            autoComplete="off"
            autoCapitalize="off"
            spellCheck={false}
            placeholder={view.stored_key ? `a new key replaces ${view.stored_key}` : "paste the key"}
            onInput={() => errors.key && setErrors((e) => ({ ...e, key: undefined }))}
            aria-invalid={Boolean(errors.key)}
            aria-describedby={errors.key ? `${id}-key-error` : undefined}
          />
          {errors.key && (
            <p id={`${id}-key-error`} className="mt-1 text-sm font-medium text-red-800">
              {errors.key}
            </p>
          )}
        </div>
        <div>
          <label htmlFor={`${id}-url`} className="label">
            <span className="sr-only">{label} </span>Base URL (optional)
          </label>
          <input
            id={`${id}-url`}
            type="url"
            inputMode="url"
            className="input font-mono"
            autoComplete="off"
            spellCheck={false}
            placeholder={`empty: ${label}'s own API`}
            value={baseUrl}
            onChange={(e) => {
              setBaseUrl(e.target.value);
              if (errors.baseUrl) setErrors((found) => ({ ...found, baseUrl: undefined }));
            }}
            aria-invalid={Boolean(errors.baseUrl)}
            aria-describedby={errors.baseUrl ? `${id}-url-error` : `${id}-url-help`}
          />
          {errors.baseUrl ? (
            <p id={`${id}-url-error`} className="mt-1 text-sm font-medium text-red-800">
              {errors.baseUrl}
            </p>
          ) : (
            <p id={`${id}-url-help`} className="mt-1 text-xs text-slate-600">
              {view.name === "openai" ? LOCAL_SERVERS : `Only for a proxy or gateway that speaks ${label}'s API.`}
            </p>
          )}
        </div>
        {errors.form && <p className="text-sm font-medium text-red-800">{errors.form}</p>}
        <div className="flex flex-wrap gap-2">
          <button type="submit" className="btn-primary" disabled={Boolean(busy)}>
            <Save aria-hidden="true" className="h-4 w-4" /> {busy === "save" ? "Saving…" : "Save"}
            <span className="sr-only"> the {label} settings</span>
          </button>
          <button type="button" className="btn-secondary" disabled={Boolean(busy)} onClick={() => void tryKey()}>
            <FlaskConical aria-hidden="true" className="h-4 w-4" /> {busy === "test" ? "Testing…" : "Test"}
            <span className="sr-only"> the {label} key</span>
          </button>
          {stored && !confirming && (
            <button type="button" className="btn-danger" disabled={Boolean(busy)} onClick={() => setConfirming(true)}>
              <Trash2 aria-hidden="true" className="h-4 w-4" /> Remove<span className="sr-only"> the {label} key entered here</span>
            </button>
          )}
        </div>
      </form>
      {stored && confirming && (
        <div role="group" aria-label={`Confirm removing the ${label} key`} className="space-y-2 rounded bg-red-50 p-2 text-xs text-red-950">
          <p>
            Remove the key and base URL entered here for {label}? Jobs then use a key from the environment, if one is set, or another
            provider&apos;s.
          </p>
          <div className="flex flex-wrap gap-2">
            <RemoveButton busy={busy === "remove"} onClick={() => void remove()} />
            <button type="button" className="btn-secondary" onClick={() => setConfirming(false)}>
              Keep it
            </button>
          </div>
        </div>
      )}
      {failure && (
        <p role="alert" className="text-sm text-red-800">
          {failure}
        </p>
      )}
      <div role="status" aria-label={`${label} results`} className="space-y-1 empty:hidden">
        {message && <p className="rounded bg-slate-100 px-2 py-1">{message}</p>}
        {test && <TestResult test={test} />}
        {testFailure && <p className="rounded bg-red-50 px-2 py-1 text-red-900">Not tried: {testFailure}</p>}
      </div>
    </section>
  );
}

function RemoveButton({ busy, onClick }: { busy: boolean; onClick(): void }) {
  const button = useRef<HTMLButtonElement>(null);
  // The choice has the focus once asked for, so the keyboard answers it at once.
  useEffect(() => button.current?.focus(), []);
  return (
    <button ref={button} type="button" className="btn-danger" disabled={busy} onClick={onClick}>
      {busy ? "Removing…" : "Yes, remove it"}
    </button>
  );
}

function TestResult({ test }: { test: ProviderTest }) {
  const took = test.latency_ms == null ? "" : ` in ${duration(test.latency_ms / 1000)}`;
  if (test.ok)
    return (
      <p className="rounded bg-emerald-50 px-2 py-1 text-emerald-950" data-testid="provider-test">
        {test.model ?? "The model"} answered{took}
        {test.key_source ? ` (key from ${test.key_source === "settings" ? "Settings" : test.key_source})` : ""}:{" "}
        <span className="break-words font-mono">“{test.answer}”</span>
      </p>
    );
  return (
    <p className="break-words rounded bg-red-50 px-2 py-1 text-red-900" data-testid="provider-test">
      {test.model ? `${test.model} failed${took}` : `Failed${took}`}: {test.error ?? "no answer"}
    </p>
  );
}

function keySource(view: ProviderView): string {
  const entered = view.stored_key
    ? `entered here: ${view.stored_key}${view.stored_by ? ` by ${view.stored_by}` : ""}${view.stored_at ? `, ${when(view.stored_at)}` : ""}`
    : "";
  if (view.key_source && view.key_source !== "settings") return `from the environment: ${view.key_source}`;
  if (entered) return entered;
  return "none";
}
