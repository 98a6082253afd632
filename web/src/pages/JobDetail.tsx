import { Ban, Download, FileCode2, GitCompare, RotateCcw } from "lucide-react";
import { useCallback, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { Link, useParams, useSearchParams } from "react-router-dom";
import { api, download, errorText, getRaw, must } from "../api/client";
import type { ArtifactTree, AttemptsDiff, JobDetail, JobEvent, LogLine, ModelCall, Plan } from "../api/types";
import { CodeView } from "../components/CodeView";
import { FileDiffView } from "../components/DiffView";
import { LogView, type ViewLine } from "../components/LogView";
import { RefusalBanner } from "../components/RefusalBanner";
import { StatusBadge } from "../components/StatusBadge";
import { Timeline } from "../components/Timeline";
import { useAuth } from "../auth";
import { bytes, duration, tokens, usd, when } from "../lib/format";
import { refusalOf } from "../lib/providers";
import { stepPhase, usePipeline } from "../lib/pipeline";
import { course, type StepRun } from "../lib/timeline";
import { useNow } from "../lib/useNow";
import type { LiveLogLine } from "../live/connection";
import { useLive } from "../live/useLive";

declare global {
  interface Window {
    /** When each event was on screen (the browser tests measure live latency with it). */
    __vdoShown?: { position: number; type: string; at: number; live: boolean }[];
  }
}

const TABS = [
  ["overview", "Overview"],
  ["files", "Files"],
  ["log", "Log"],
  ["calls", "Model calls"],
] as const;
type Tab = (typeof TABS)[number][0];

function Card({ title, icon, children, className = "" }: { title: ReactNode; icon?: ReactNode; children: ReactNode; className?: string }) {
  return (
    <section className={`card ${className}`}>
      <h2 className="card-title">
        {icon}
        {title}
      </h2>
      <div className="p-4">{children}</div>
    </section>
  );
}

/** Runs `load` now and again after `keys` change, at most every `ms` (the live updates can
 * bring many events at once). */
function useThrottledLoad(load: () => Promise<void>, key: string, ms = 200) {
  const last = useRef("");
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => {
    if (key === last.current) return;
    last.current = key;
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = null;
      void load();
    }, ms);
  }, [key, load, ms]);
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);
}

export function JobDetailPage() {
  const { id = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const tab = (params.get("tab") as Tab | null) ?? "overview";
  const [events, setEvents] = useState<JobEvent[]>([]);
  const [caughtUp, setCaughtUp] = useState(false);
  const [liveLines, setLiveLines] = useState<(LiveLogLine & { seq: number })[]>([]);
  const [detail, setDetail] = useState<JobDetail | null>(null);
  const [notFound, setNotFound] = useState("");
  const now = useNow(1000);
  const seq = useRef(0);
  const caughtUpRef = useRef(false);

  useEffect(() => {
    setEvents([]);
    setDetail(null);
    setLiveLines([]);
    setCaughtUp(false);
    caughtUpRef.current = false;
  }, [id]);

  useLive({
    jobId: id,
    logs: true,
    after: 0,
    onEvent: (event) =>
      setEvents((known) => (known.length && known[known.length - 1]!.position >= event.position ? known : [...known, event])),
    onLog: (line) => setLiveLines((lines) => [...lines.slice(-2000), { ...line, seq: seq.current++ }]),
    onCaughtUp: () => {
      caughtUpRef.current = true;
      setCaughtUp(true);
    },
  });

  // Each event, once on screen: when (for the latency the browser tests measure).
  const shown = useRef(0);
  useEffect(() => {
    const record = (window.__vdoShown ??= []);
    const at = Date.now();
    for (const event of events) {
      if (event.position <= shown.current) continue;
      record.push({ position: event.position, type: event.type, at, live: caughtUpRef.current });
      shown.current = event.position;
    }
  }, [events]);

  const lastVersion = events.at(-1)?.version ?? 0;
  const loadDetail = useCallback(async () => {
    const answer = await api.GET("/api/jobs/{job_id}", { params: { path: { job_id: id } } });
    if (answer.response.status === 404) {
      setNotFound(errorText(answer.error, "No such job."));
      return;
    }
    if (answer.data) setDetail(answer.data);
  }, [id]);
  useEffect(() => {
    void loadDetail();
  }, [loadDetail]);
  useThrottledLoad(loadDetail, `${lastVersion}`);
  // The read models may be a moment behind the event: ask again until they have it.
  useEffect(() => {
    if (!detail || detail.version >= lastVersion) return;
    const timer = setTimeout(() => void loadDetail(), 250);
    return () => clearTimeout(timer);
  }, [detail, lastVersion, loadDetail]);

  const { me } = useAuth();
  const pipeline = usePipeline();
  const job = useMemo(() => course(events, pipeline, now), [events, pipeline, now]);
  const status = job.status ?? detail?.status ?? null;
  const refusal = refusalOf(status, job.reason ?? detail?.finished_reason);
  if (notFound) return <p role="alert" className="card p-4 text-sm">{notFound} <Link className="text-indigo-800 underline" to="/jobs">Back to the jobs</Link></p>;

  const setTab = (next: Tab) => setParams(next === "overview" ? {} : { tab: next }, { replace: true });
  return (
    <div className="space-y-4" data-last-position={events.at(-1)?.position ?? 0} data-status={status ?? ""}>
      <div className="flex flex-wrap items-start justify-between gap-3">
        <div className="min-w-0">
          <p className="text-sm">
            <Link to="/jobs" className="text-indigo-800 hover:underline">Jobs</Link> / <span className="font-mono">{id.slice(0, 8)}</span>
          </p>
          <h1 className="break-words text-2xl font-semibold">{detail?.title ?? "…"}</h1>
          <div className="mt-1 flex flex-wrap items-center gap-x-3 gap-y-1 text-sm text-slate-700">
            {status && <StatusBadge status={status} label={status === "completed" ? "completed: ready for review" : status} />}
            <span>attempt {job.attempt}/{detail?.max_attempts ?? "?"}</span>
            <span>
              cost {usd(detail?.cost_usd)} of {usd(detail?.budget_usd)}
            </span>
            {detail?.queue_position ? <span>queue #{detail.queue_position}</span> : null}
            <span>by {detail?.submitted_by}</span>
            <span>{when(detail?.created_at)}</span>
          </div>
        </div>
        {detail && <Actions detail={detail} status={status} />}
      </div>
      {job.reason && (
        <p role="status" className="rounded-md bg-amber-50 px-3 py-2 text-sm text-amber-950">
          {status === "cancelled" ? "Cancelled" : "Ended"}: {job.reason}
        </p>
      )}
      {refusal && <RefusalBanner refusal={refusal} admin={me?.role === "admin"} />}
      <section className="card p-4" aria-label="Timeline">
        <Timeline phases={job.phases} attempt={job.attempt} />
        {!caughtUp && <p className="mt-2 text-xs text-slate-600">Loading the history…</p>}
      </section>
      <div role="tablist" aria-label="Job details" className="flex flex-wrap gap-1 border-b border-slate-300">
        {TABS.map(([key, label]) => (
          <button
            key={key}
            role="tab"
            type="button"
            id={`tab-${key}`}
            aria-selected={tab === key}
            aria-controls={`panel-${key}`}
            onClick={() => setTab(key)}
            className={`-mb-px rounded-t-md border px-3 py-1.5 text-sm font-medium focus-visible:outline focus-visible:outline-2 focus-visible:outline-indigo-600 ${
              tab === key ? "border-slate-300 border-b-white bg-white text-indigo-800" : "border-transparent text-slate-700 hover:text-slate-900"
            }`}
          >
            {label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === "overview" && <Overview id={id} runs={job.runs} detail={detail} now={now} />}
        {tab === "files" && <Files id={id} version={filesVersion(job.runs)} />}
        {tab === "log" && <Log id={id} events={events} liveLines={liveLines} />}
        {tab === "calls" && <Calls id={id} version={lastVersion} />}
      </div>
    </div>
  );
}

function filesVersion(runs: StepRun[]): string {
  return runs.filter((r) => (r.step === "build" || r.step === "write_tests") && r.finishedAt).map((r) => `${r.step}${r.attempt}`).join(",");
}

function Actions({ detail, status }: { detail: JobDetail; status: string | null }) {
  const [confirming, setConfirming] = useState(false);
  const [from, setFrom] = useState("building");
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  const running = status === "queued" || status === "running";
  const act = async (call: () => Promise<{ error?: unknown; response: Response }>) => {
    setBusy(true);
    const { error, response } = await call();
    setBusy(false);
    setConfirming(false);
    setMessage(response.ok ? "" : errorText(error, `The gateway answered ${response.status}.`));
  };
  const path = { params: { path: { job_id: detail.id } } };
  return (
    <div className="flex flex-col items-end gap-2">
      <div className="flex flex-wrap justify-end gap-2">
        {running && !confirming && (
          <button type="button" className="btn-danger" onClick={() => setConfirming(true)}>
            <Ban aria-hidden="true" className="h-4 w-4" /> Cancel job
          </button>
        )}
        {running && confirming && (
          <span role="group" aria-label="Confirm cancelling" className="flex flex-wrap items-center gap-2 text-sm">
            Cancel this job?
            <button type="button" className="btn-danger" disabled={busy} onClick={() => act(() => api.POST("/api/jobs/{job_id}/cancel", { ...path, body: { reason: "cancelled from the dashboard" } }))}>
              Yes, cancel it
            </button>
            <button type="button" className="btn-secondary" onClick={() => setConfirming(false)}>
              Keep it
            </button>
          </span>
        )}
        {!running && status && (
          <span className="flex flex-wrap items-center gap-2">
            <label htmlFor="retry-from" className="text-sm text-slate-700">
              Retry from
            </label>
            <select id="retry-from" className="input w-auto py-1" value={from} onChange={(e) => setFrom(e.target.value)}>
              {["planning", "building", "testing", "reviewing", "sandboxing"].map((p) => (
                <option key={p}>{p}</option>
              ))}
            </select>
            <button type="button" className="btn-secondary" disabled={busy} onClick={() => act(() => api.POST("/api/jobs/{job_id}/retry", { ...path, body: { from: from as "building", reason: "" } }))}>
              <RotateCcw aria-hidden="true" className="h-4 w-4" /> Retry
            </button>
          </span>
        )}
        <button
          type="button"
          className="btn-secondary"
          onClick={() => download(`/api/jobs/${detail.id}/artifacts.zip`, `vdo-${detail.id.slice(0, 8)}.zip`).catch((e: Error) => setMessage(e.message))}
        >
          <Download aria-hidden="true" className="h-4 w-4" /> Download zip
        </button>
      </div>
      {message && (
        <p role="alert" className="max-w-md text-right text-sm text-red-800">
          {message}
        </p>
      )}
    </div>
  );
}

function Overview({ id, runs, detail, now }: { id: string; runs: StepRun[]; detail: JobDetail | null; now: number }) {
  const [plan, setPlan] = useState<Plan | null>(null);
  const planned = runs.filter((r) => r.step === "plan" && r.outcome === "ok").length;
  useEffect(() => {
    if (!planned) return;
    api.GET("/api/jobs/{job_id}/plan", { params: { path: { job_id: id } } }).then(({ data }) => setPlan(data ?? null));
  }, [id, planned]);
  const attempts = [...new Set(runs.filter((r) => r.attempt > 0).map((r) => r.attempt))].sort((a, b) => b - a);
  return (
    <div className="grid gap-4 lg:grid-cols-2">
      <Card title="Plan">
        {plan ? (
          <div className="space-y-3 text-sm">
            <p>{plan.summary}</p>
            <ol className="list-decimal space-y-1 pl-5">
              {plan.steps.map((step, i) => (
                <li key={i}>{step}</li>
              ))}
            </ol>
            <p>
              <span className="font-medium">Files:</span> <span className="font-mono text-xs">{plan.files.join(", ")}</span>
            </p>
            {plan.test_strategy && (
              <p>
                <span className="font-medium">Tests:</span> {plan.test_strategy}
              </p>
            )}
            {plan.run_command.length > 0 && (
              <p>
                <span className="font-medium">Runs with:</span> <code className="text-xs">{plan.run_command.join(" ")}</code>
              </p>
            )}
            {plan.model && <p className="text-xs text-slate-600">Planned by {plan.model}</p>}
          </div>
        ) : (
          <p className="text-sm text-slate-600">No plan yet.</p>
        )}
      </Card>
      <Card title="Description">
        <p className="whitespace-pre-wrap text-sm">{detail?.description ?? ""}</p>
        <p className="mt-3 text-xs text-slate-600">
          Models:{" "}
          {detail && Object.keys(detail.routes).length
            ? Object.entries(detail.routes).map(([phase, chain]) => `${phase} ${chain.join(" → ")}`).join("; ")
            : "the deployment's defaults"}
        </p>
      </Card>
      {attempts.map((attempt) => (
        <AttemptCard key={attempt} attempt={attempt} runs={runs.filter((r) => r.attempt === attempt)} now={now} last={attempt === attempts[0]} />
      ))}
    </div>
  );
}

const OUTCOME: Record<string, string> = {
  ok: "text-emerald-800",
  passed: "text-emerald-800",
  approved: "text-emerald-800",
  up: "text-emerald-800",
  failed: "text-red-800",
  error: "text-red-800",
  down: "text-red-800",
  changes_requested: "text-amber-800",
};

function AttemptCard({ attempt, runs, now, last }: { attempt: number; runs: StepRun[]; now: number; last: boolean }) {
  const notYet = (what: string) => (last ? `Not ${what} yet.` : `Not reached: attempt ${attempt} was sent back before.`);
  const tests = runs.find((r) => r.step === "run_tests");
  const review = runs.find((r) => r.step === "review");
  const sandbox = runs.find((r) => r.step === "sandbox_run");
  const comments = (review?.details.comments as { path?: string; comment?: string }[] | undefined) ?? [];
  return (
    <Card title={`Attempt ${attempt}`} className="lg:col-span-2">
      <div className="grid gap-4 md:grid-cols-3">
        <div>
          <h3 className="mb-1 text-sm font-semibold">Steps</h3>
          <ul className="space-y-1 text-sm">
            {runs.map((run) => (
              <li key={run.step} className="flex justify-between gap-2">
                <span>
                  {run.step} <span className={`text-xs ${OUTCOME[run.outcome ?? ""] ?? "text-sky-800"}`}>{run.outcome ?? "running"}</span>
                </span>
                <span className="tabular-nums text-slate-600">{duration(((run.finishedAt ?? now) - run.startedAt) / 1000)}</span>
              </li>
            ))}
          </ul>
        </div>
        <div>
          <h3 className="mb-1 text-sm font-semibold">Test results</h3>
          {tests?.finishedAt ? (
            <div className="text-sm" data-testid={`tests-${attempt}`}>
              <p className={OUTCOME[tests.outcome ?? ""]}>
                {String(tests.details.passed ?? "?")} passed, {String(tests.details.failed ?? "?")} failed
                {tests.details.errors ? `, ${String(tests.details.errors)} errors` : ""} of {String(tests.details.total ?? "?")}
              </p>
              <pre className="mt-1 max-h-48 overflow-auto whitespace-pre-wrap rounded bg-slate-50 p-2 text-xs text-slate-800">{tests.summary}</pre>
            </div>
          ) : (
            <p className="text-sm text-slate-600">{notYet("run")}</p>
          )}
          <h3 className="mb-1 mt-3 text-sm font-semibold">Review</h3>
          {review?.finishedAt ? (
            <div className="text-sm">
              <p className={OUTCOME[review.outcome ?? ""]}>{review.outcome === "approved" ? "Approved" : "Changes requested"}</p>
              {comments.length > 0 && (
                <ul className="mt-1 list-disc space-y-0.5 pl-5 text-xs">
                  {comments.map((c, i) => (
                    <li key={i}>
                      <span className="font-mono">{c.path || "(general)"}</span>: {c.comment}
                    </li>
                  ))}
                </ul>
              )}
            </div>
          ) : (
            <p className="text-sm text-slate-600">{notYet("reviewed")}</p>
          )}
        </div>
        <div>
          <h3 className="mb-1 text-sm font-semibold">Sandbox report</h3>
          {sandbox?.finishedAt ? (
            <dl className="grid grid-cols-[auto,1fr] gap-x-3 gap-y-0.5 text-xs">
              <dt className="text-slate-600">Result</dt>
              <dd className={OUTCOME[sandbox.outcome ?? ""]}>{sandbox.outcome === "up" ? "started and up" : "did not come up"}</dd>
              <dt className="text-slate-600">Check</dt>
              <dd>{String(sandbox.details.ready_detail ?? "–")}</dd>
              <dt className="text-slate-600">Took</dt>
              <dd>{duration(Number(sandbox.details.duration_seconds ?? 0))}</dd>
              <dt className="text-slate-600">Memory peak</dt>
              <dd>{bytes(sandbox.details.peak_memory_bytes as number | null)}</dd>
              <dt className="text-slate-600">CPU</dt>
              <dd>{sandbox.details.cpu_seconds == null ? "–" : duration(Number(sandbox.details.cpu_seconds))}</dd>
              <dt className="text-slate-600">Isolation</dt>
              <dd>{String(sandbox.details.backend ?? "–")}</dd>
              <dt className="text-slate-600">Command</dt>
              <dd className="break-all font-mono">{Array.isArray(sandbox.details.command) ? sandbox.details.command.join(" ") : "–"}</dd>
            </dl>
          ) : (
            <p className="text-sm text-slate-600">{notYet("started in the sandbox")}</p>
          )}
        </div>
      </div>
    </Card>
  );
}

function Files({ id, version }: { id: string; version: string }) {
  const [attempt, setAttempt] = useState<number | null>(null);
  const [tree, setTree] = useState<ArtifactTree | null>(null);
  const [problem, setProblem] = useState("");
  const [path, setPath] = useState<string | null>(null);
  const [text, setText] = useState<string | null>(null);
  const [mode, setMode] = useState<"code" | "diff">("code");
  const [diff, setDiff] = useState<AttemptsDiff | null>(null);

  useEffect(() => {
    api.GET("/api/jobs/{job_id}/artifacts", { params: { path: { job_id: id }, query: { attempt: attempt ?? undefined } } }).then(({ data, error }) => {
      setTree(data ?? null);
      setProblem(data ? "" : errorText(error, "No files yet."));
      if (data && (path === null || !data.items.some((f) => f.path === path))) setPath(data.items[0]?.path ?? null);
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [id, attempt, version]);

  const shownAttempt = tree?.attempt ?? null;
  useEffect(() => {
    if (!path || shownAttempt === null) return;
    setText(null);
    getRaw(`/api/jobs/${id}/artifacts/file?path=${encodeURIComponent(path)}&attempt=${shownAttempt}`).then(async (r) =>
      setText(r.ok ? await r.text() : `(could not read the file: ${r.status})`),
    );
  }, [id, path, shownAttempt]);

  useEffect(() => {
    if (mode !== "diff" || shownAttempt === null || shownAttempt < 2) {
      setDiff(null);
      return;
    }
    api
      .GET("/api/jobs/{job_id}/diff", { params: { path: { job_id: id }, query: { from: shownAttempt - 1, to: shownAttempt, limit: 200 } } })
      .then((answer) => setDiff(must(answer)), () => setDiff(null));
  }, [id, mode, shownAttempt]);

  if (!tree) return <p className="card p-4 text-sm text-slate-600">{problem || "Loading the files…"}</p>;
  const attempts = Array.from({ length: tree.attempts }, (_, i) => i + 1);
  return (
    <div className="space-y-3">
      <div className="flex flex-wrap items-center gap-2">
        <label htmlFor="files-attempt" className="text-sm font-medium">
          Attempt
        </label>
        <select id="files-attempt" className="input w-auto py-1" value={tree.attempt} onChange={(e) => setAttempt(Number(e.target.value))}>
          {attempts.map((a) => (
            <option key={a} value={a}>
              {a}
            </option>
          ))}
        </select>
        <div role="group" aria-label="Show" className="flex gap-1">
          <button type="button" className={mode === "code" ? "btn-primary" : "btn-secondary"} aria-pressed={mode === "code"} onClick={() => setMode("code")}>
            <FileCode2 aria-hidden="true" className="h-4 w-4" /> Code
          </button>
          <button type="button" className={mode === "diff" ? "btn-primary" : "btn-secondary"} aria-pressed={mode === "diff"} onClick={() => setMode("diff")}>
            <GitCompare aria-hidden="true" className="h-4 w-4" /> Changes from attempt {Math.max(1, tree.attempt - 1)}
          </button>
        </div>
        <span className="ml-auto text-xs text-slate-600">
          {tree.total} files, {bytes(tree.total_bytes)}
        </span>
      </div>
      {mode === "code" ? (
        <div className="grid gap-3 md:grid-cols-[16rem,1fr]">
          <nav aria-label="Files" className="card max-h-[32rem] overflow-auto p-1">
            <ul>
              {tree.items.map((file) => (
                <li key={file.path}>
                  <button
                    type="button"
                    aria-current={file.path === path ? "true" : undefined}
                    onClick={() => setPath(file.path)}
                    className={`w-full truncate rounded px-2 py-1 text-left font-mono text-xs focus-visible:outline focus-visible:outline-2 focus-visible:outline-indigo-600 ${
                      file.path === path ? "bg-indigo-100 text-indigo-950" : "hover:bg-slate-100"
                    }`}
                    title={`${file.path} · ${bytes(file.size)} · written by ${file.step} (attempt ${file.attempt})`}
                  >
                    {file.path}
                  </button>
                </li>
              ))}
            </ul>
          </nav>
          <div className="min-w-0">
            {path && text !== null ? <CodeView path={path} text={text} /> : <p className="text-sm text-slate-600">Loading…</p>}
          </div>
        </div>
      ) : tree.attempt < 2 ? (
        <p className="card p-4 text-sm text-slate-600">This is the first attempt: there is nothing earlier to compare it with.</p>
      ) : diff ? (
        <div className="space-y-3" aria-label={`Changes from attempt ${diff.from_attempt} to ${diff.to_attempt}`}>
          <p className="text-sm text-slate-700">
            From attempt {diff.from_attempt} to {diff.to_attempt}: {diff.modified} modified, {diff.added} added, {diff.removed} removed,{" "}
            {diff.unchanged} unchanged.
          </p>
          {diff.items.length === 0 && <p className="text-sm">Nothing changed.</p>}
          {diff.items.map((item) => (
            <FileDiffView key={item.path} diff={item} />
          ))}
        </div>
      ) : (
        <p className="text-sm text-slate-600">Loading the changes…</p>
      )}
    </div>
  );
}

function Log({ id, events, liveLines }: { id: string; events: JobEvent[]; liveLines: (LiveLogLine & { seq: number })[] }) {
  const pipeline = usePipeline();
  const [lines, setLines] = useState<LogLine[]>([]);
  const load = useCallback(async () => {
    const { data } = await api.GET("/api/jobs/{job_id}/logs", { params: { path: { job_id: id }, query: { include: ["replies"], limit: 5000 } } });
    if (data) setLines(data.items);
  }, [id]);
  useEffect(() => {
    void load();
  }, [load]);
  useThrottledLoad(load, String(events.length), 400);
  // Live lines of a step still at work; once it has a result, its lines are in the log above.
  const ended = new Set(
    events.filter((e) => e.type === "StepFinished" || e.type === "StepFailed").map((e) => `${String(e.data.step)}:${String(e.data.attempt)}`),
  );
  const view: ViewLine[] = [
    ...lines.map((l, i) => ({
      key: `r${l.position}:${l.line ?? "e"}:${i}`,
      phase: l.phase,
      stream: l.stream,
      level: l.level,
      text: l.text,
      at: Date.parse(l.timestamp),
    })),
    ...liveLines
      .filter((l) => !ended.has(`${l.step}:${l.attempt}`))
      .map((l) => ({
        key: `l${l.seq}`,
        phase: stepPhase(pipeline, l.step) ?? null,
        stream: l.stream,
        level: "info" as const,
        text: l.text,
        at: l.at * 1000,
        live: true,
      })),
  ];
  return <LogView lines={view} />;
}

function Calls({ id, version }: { id: string; version: number }) {
  const [calls, setCalls] = useState<ModelCall[] | null>(null);
  const load = useCallback(async () => {
    const { data } = await api.GET("/api/jobs/{job_id}/calls", { params: { path: { job_id: id }, query: { limit: 500 } } });
    if (data) setCalls(data.items);
  }, [id]);
  useEffect(() => {
    void load();
  }, [load]);
  useThrottledLoad(load, String(version), 400);
  if (!calls) return <p className="text-sm text-slate-600">Loading…</p>;
  if (calls.length === 0) return <p className="card p-4 text-sm text-slate-600">No model calls yet.</p>;
  const total = calls.reduce((sum, c) => sum + (c.cost_usd ?? 0), 0);
  return (
    <div className="card overflow-x-auto">
      <table className="w-full text-sm">
        <caption className="px-4 py-2 text-left text-xs text-slate-600">
          {calls.length} calls, {usd(total)} in all
        </caption>
        <thead className="border-y border-slate-200 bg-slate-50 text-left text-xs uppercase text-slate-600">
          <tr>
            <th scope="col" className="px-3 py-2">Step</th>
            <th scope="col" className="px-3 py-2">Model</th>
            <th scope="col" className="px-3 py-2">Outcome</th>
            <th scope="col" className="px-3 py-2 text-right">In</th>
            <th scope="col" className="px-3 py-2 text-right">Out</th>
            <th scope="col" className="px-3 py-2 text-right">Cost</th>
            <th scope="col" className="px-3 py-2 text-right">Latency</th>
          </tr>
        </thead>
        <tbody className="divide-y divide-slate-100">
          {calls.map((call) => (
            <tr key={call.key}>
              <td className="px-3 py-1.5">
                {call.step} <span className="text-xs text-slate-600">#{call.attempt}.{call.call}{call.try_number > 1 ? ` try ${call.try_number}` : ""}</span>
              </td>
              <td className="px-3 py-1.5 font-mono text-xs">{call.route}</td>
              <td className={`px-3 py-1.5 ${call.outcome === "ok" ? "text-emerald-800" : call.outcome ? "text-red-800" : "text-sky-800"}`}>
                {call.outcome ?? "running"}
                {call.error ? <span className="block text-xs">{call.error}</span> : null}
              </td>
              <td className="px-3 py-1.5 text-right tabular-nums">{tokens(call.input_tokens)}</td>
              <td className="px-3 py-1.5 text-right tabular-nums">{tokens(call.output_tokens)}</td>
              <td className="px-3 py-1.5 text-right tabular-nums">
                {usd(call.cost_usd)}
                {call.cost_basis === "estimated" || call.cost_basis === "worst_case" ? (
                  <span className="block text-xs text-slate-600">{call.cost_basis === "estimated" ? "estimated" : "worst case"}</span>
                ) : null}
              </td>
              <td className="px-3 py-1.5 text-right tabular-nums">{call.latency_ms == null ? "–" : duration(call.latency_ms / 1000)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
