import { Download, KeyRound, Plus, Trash2 } from "lucide-react";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { api, download, errorText, must } from "../api/client";
import type { ProvidersReport, Template, Token, TokenCreated, User } from "../api/types";
import { when } from "../lib/format";

function Section({ title, children }: { title: string; children: React.ReactNode }) {
  return (
    <section className="card">
      <h2 className="card-title">{title}</h2>
      <div className="p-4">{children}</div>
    </section>
  );
}

function Providers() {
  const [report, setReport] = useState<ProvidersReport | null | "absent">(null);
  useEffect(() => {
    // Asked again every few seconds until every AI service has reported (they report when they
    // start, which may be after this page is opened).
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ask = () => {
      api.GET("/api/admin/providers").then(
        ({ data }) => {
          if (stopped) return;
          setReport(data ?? "absent");
          if (!data || data.phases.some((phase) => !phase.reported_at)) timer = setTimeout(ask, 3000);
        },
        () => {
          if (stopped) return;
          setReport("absent");
          timer = setTimeout(ask, 3000);
        },
      );
    };
    ask();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  if (report === null) return <p className="text-sm text-slate-600">Loading…</p>;
  if (report === "absent" || !report.reported_at)
    return <p className="text-sm text-slate-700">Not reported yet: the AI services say which providers they have once they run.</p>;
  return (
    <div className="space-y-3 text-sm">
      <ul className="flex flex-wrap gap-2">
        {report.providers.map((p) => (
          <li key={p.name} className={`rounded-md border px-3 py-1.5 ${p.configured ? "border-emerald-300 bg-emerald-50 text-emerald-900" : "border-slate-300 text-slate-700"}`}>
            <span className="font-medium">{p.name}</span>: {p.configured ? `configured${p.key_source ? ` (${p.key_source})` : ""}` : "no key"}
            {p.base_url && <span className="block text-xs">at {p.base_url}</span>}
          </li>
        ))}
      </ul>
      <table className="w-full text-sm">
        <thead className="text-left text-xs uppercase text-slate-600">
          <tr>
            <th scope="col" className="py-1">Phase</th>
            <th scope="col" className="py-1">Models, in order</th>
          </tr>
        </thead>
        <tbody>
          {report.phases.map((p) => (
            <tr key={p.phase} className="border-t border-slate-100">
              <td className="py-1 capitalize">{p.phase}</td>
              <td className="py-1 font-mono text-xs">
                {p.scripted ? "built-in scripted model" : (p.routes ?? []).join(" → ")}
                {p.problem && <span className="block text-red-800">{p.problem}</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="text-xs text-slate-600">
        {report.scripted ? "No provider is configured: every phase runs on the built-in scripted model. " : ""}Reported{" "}
        {when(report.reported_at)}. Keys are never shown.
      </p>
    </div>
  );
}

function Accounts() {
  const [users, setUsers] = useState<User[]>([]);
  const [tokens, setTokens] = useState<Token[]>([]);
  const [name, setName] = useState("");
  const [role, setRole] = useState<User["role"]>("member");
  const [tokenUser, setTokenUser] = useState("");
  const [made, setMade] = useState<TokenCreated | null>(null);
  const [message, setMessage] = useState("");
  const load = useCallback(async () => {
    setUsers(must(await api.GET("/api/users")).items);
    setTokens(must(await api.GET("/api/tokens", { params: { query: { revoked: false } } })).items);
  }, []);
  useEffect(() => {
    void load().catch((e: Error) => setMessage(e.message));
  }, [load]);

  async function addUser(event: FormEvent) {
    event.preventDefault();
    const { data, error } = await api.POST("/api/users", { body: { name, role } });
    setMessage(data ? `Added ${data.name}.` : errorText(error));
    if (data) setName("");
    await load();
  }
  async function makeToken(event: FormEvent) {
    event.preventDefault();
    const { data, error } = await api.POST("/api/tokens", { body: { user: tokenUser || undefined, name: "dashboard" } });
    setMade(data ?? null);
    setMessage(data ? "" : errorText(error));
    await load();
  }
  async function revoke(id: string) {
    const { error, response } = await api.DELETE("/api/tokens/{token_id}", { params: { path: { token_id: id } } });
    setMessage(response.ok ? `Token ${id} revoked.` : errorText(error));
    await load();
  }
  return (
    <div className="space-y-4 text-sm">
      {message && <p role="status" className="rounded bg-slate-100 px-3 py-1.5">{message}</p>}
      <div className="grid gap-4 md:grid-cols-2">
        <div>
          <h3 className="mb-1 font-semibold">Users</h3>
          <ul className="divide-y divide-slate-100 rounded border border-slate-200">
            {users.map((u) => (
              <li key={u.name} className="flex justify-between px-3 py-1.5">
                <span className="font-medium">{u.name}</span>
                <span className="text-slate-700">{u.role}</span>
              </li>
            ))}
          </ul>
          <form onSubmit={addUser} className="mt-2 flex flex-wrap items-end gap-2">
            <div>
              <label htmlFor="new-user" className="label">New user</label>
              <input id="new-user" className="input w-40" value={name} onChange={(e) => setName(e.target.value)} placeholder="ada" />
            </div>
            <div>
              <label htmlFor="new-role" className="label">Role</label>
              <select id="new-role" className="input w-auto" value={role} onChange={(e) => setRole(e.target.value as User["role"])}>
                <option>member</option>
                <option>viewer</option>
                <option>admin</option>
              </select>
            </div>
            <button type="submit" className="btn-secondary" disabled={!name}>
              <Plus aria-hidden="true" className="h-4 w-4" /> Add
            </button>
          </form>
        </div>
        <div>
          <h3 className="mb-1 font-semibold">Active tokens</h3>
          <ul className="divide-y divide-slate-100 rounded border border-slate-200">
            {tokens.map((t) => (
              <li key={t.id} className="flex items-center justify-between gap-2 px-3 py-1.5">
                <span>
                  <span className="font-mono">{t.prefix}…</span> {t.user} · {t.name}
                  <span className="block text-xs text-slate-600">
                    made {when(t.created_at)}{t.expires_at ? `, expires ${when(t.expires_at)}` : ""}
                  </span>
                </span>
                <button type="button" className="btn-danger px-2" onClick={() => revoke(t.id)} aria-label={`Revoke token ${t.prefix} of ${t.user}`}>
                  <Trash2 aria-hidden="true" className="h-4 w-4" />
                </button>
              </li>
            ))}
          </ul>
          <form onSubmit={makeToken} className="mt-2 flex flex-wrap items-end gap-2">
            <div>
              <label htmlFor="token-user" className="label">New token for</label>
              <select id="token-user" className="input w-auto" value={tokenUser} onChange={(e) => setTokenUser(e.target.value)}>
                <option value="">me</option>
                {users.map((u) => (
                  <option key={u.name}>{u.name}</option>
                ))}
              </select>
            </div>
            <button type="submit" className="btn-secondary">
              <KeyRound aria-hidden="true" className="h-4 w-4" /> Make token
            </button>
          </form>
          {made && (
            <p role="status" className="mt-2 rounded bg-amber-50 p-2 text-amber-950">
              Token for {made.user}, shown this once: <code className="break-all">{made.token}</code>
            </p>
          )}
        </div>
      </div>
    </div>
  );
}

function Templates() {
  const [templates, setTemplates] = useState<Template[]>([]);
  useEffect(() => {
    api.GET("/api/templates", { params: { query: { limit: 200 } } }).then((a) => setTemplates(must(a).items), () => undefined);
  }, []);
  return (
    <ul className="divide-y divide-slate-100 text-sm">
      {templates.map((t) => (
        <li key={t.id} className="py-1.5">
          <span className="font-medium">{t.name}</span> <span className="text-slate-700">· {t.title}</span>
          {t.builtin && <span className="ml-2 rounded bg-slate-100 px-1.5 text-xs">built in</span>}
          {t.scripted && <span className="ml-1 rounded bg-emerald-50 px-1.5 text-xs text-emerald-900">no key needed</span>}
          {t.summary && <span className="block text-xs text-slate-600">{t.summary}</span>}
        </li>
      ))}
    </ul>
  );
}

export default function SettingsPage() {
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Settings</h1>
      <Section title="Model providers">
        <Providers />
      </Section>
      <Section title="Users and tokens">
        <Accounts />
      </Section>
      <Section title="Templates">
        <Templates />
      </Section>
      <Section title="Backup">
        <p className="mb-2 text-sm text-slate-700">The whole history (jobs, users, tokens digested, templates) and every file, as one verified bundle.</p>
        <button
          type="button"
          className="btn-secondary"
          disabled={busy}
          onClick={() => {
            setBusy(true);
            download("/api/admin/backup", "vdo-backup.tar.gz").then(
              () => (setBusy(false), setMessage("")),
              (e: Error) => (setBusy(false), setMessage(e.message)),
            );
          }}
        >
          <Download aria-hidden="true" className="h-4 w-4" /> {busy ? "Preparing…" : "Download a backup"}
        </button>
        {message && <p role="alert" className="mt-2 text-sm text-red-800">{message}</p>}
      </Section>
    </div>
  );
}
