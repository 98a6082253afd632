import { Download, KeyRound, Plus, Trash2 } from "lucide-react";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { useLocation } from "react-router-dom";
import { api, download, errorText, must } from "../api/client";
import type { Template, Token, TokenCreated, User } from "../api/types";
import { ModelProviders } from "../components/ModelProviders";
import { when } from "../lib/format";

function Section({ id, title, children }: { id?: string; title: string; children: React.ReactNode }) {
  return (
    <section id={id} tabIndex={id ? -1 : undefined} aria-labelledby={id ? `${id}-title` : undefined} className="card scroll-mt-4 focus:outline-none">
      <h2 id={id ? `${id}-title` : undefined} className="card-title">
        {title}
      </h2>
      <div className="p-4">{children}</div>
    </section>
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
  const { hash } = useLocation();
  // A link to a section (#model-providers, from a refused job) brings it into view and focus.
  useEffect(() => {
    const section = hash ? document.getElementById(hash.slice(1)) : null;
    section?.scrollIntoView?.();
    section?.focus({ preventScroll: true });
  }, [hash]);
  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Settings</h1>
      <Section id="model-providers" title="Model providers">
        <ModelProviders />
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
