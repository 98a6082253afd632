import { KeyRound } from "lucide-react";
import { useState, type FormEvent } from "react";
import { Navigate, useLocation } from "react-router-dom";
import { useAuth } from "../auth";

export function SignInPage() {
  const { me, notice, signIn } = useAuth();
  const location = useLocation();
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const from = (location.state as { from?: string } | null)?.from ?? "/jobs";
  if (me) return <Navigate to={from === "/signin" ? "/jobs" : from} replace />;

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!token.trim()) {
      setError("Paste your API token.");
      return;
    }
    setBusy(true);
    setError((await signIn(token.trim())) ?? "");
    setBusy(false);
  }

  return (
    <main className="flex min-h-screen items-center justify-center bg-gradient-to-b from-indigo-50 to-slate-50 px-4">
      <form onSubmit={submit} className="card w-full max-w-md p-6" aria-labelledby="signin-title" noValidate>
        <div className="mb-4 flex items-center gap-3">
          <img src="/favicon.svg" alt="" className="h-9 w-9" />
          <div>
            <h1 id="signin-title" className="text-xl font-semibold">
              Sign in to VDO
            </h1>
            <p className="text-sm text-slate-600">Vitso Dev Orchestrator</p>
          </div>
        </div>
        {notice && (
          <p role="alert" className="mb-3 rounded-md bg-amber-50 px-3 py-2 text-sm text-amber-900">
            {notice}
          </p>
        )}
        <label htmlFor="token" className="label">
          API token
        </label>
        <input
          id="token"
          type="password"
          autoComplete="off"
          className="input font-mono"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          aria-invalid={Boolean(error)}
          aria-describedby="token-help token-error"
          autoFocus
        />
        <p id="token-help" className="mt-1 text-xs text-slate-600">
          The first admin's token is in <code>.vdo/admin-token</code>; an admin makes others with{" "}
          <code>vdo token create</code>. It is kept in this browser until you sign out.
        </p>
        {error && (
          <p id="token-error" role="alert" className="mt-2 text-sm font-medium text-red-800">
            {error}
          </p>
        )}
        <button type="submit" className="btn-primary mt-4 w-full justify-center" disabled={busy}>
          <KeyRound aria-hidden="true" className="h-4 w-4" /> {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
