// Who is signed in: the token (kept in this browser until sign-out) and what `/api/me` says of it.
import { createContext, useCallback, useContext, useEffect, useState, type ReactNode } from "react";
import { api, errorText, forgetToken, onSignedOut, storeToken, storedToken } from "./api/client";
import type { Me } from "./api/types";

interface Auth {
  me: Me | null;
  /** Why the user was signed out, for the sign-in page. */
  notice: string;
  signIn(token: string): Promise<string | null>;
  signOut(): void;
}

const AuthContext = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [checking, setChecking] = useState(Boolean(storedToken()));
  const [notice, setNotice] = useState("");

  useEffect(() => onSignedOut((reason) => {
    setMe(null);
    setNotice(reason);
  }), []);

  useEffect(() => {
    if (!storedToken()) return;
    api.GET("/api/me").then(({ data }) => {
      if (data) setMe(data);
      setChecking(false);
    }, () => setChecking(false));
  }, []);

  const signIn = useCallback(async (token: string) => {
    const { data, error, response } = await api.GET("/api/me", {
      headers: { Authorization: `Bearer ${token}` },
    });
    if (response.status === 401) return "This token is not valid (unknown, expired or revoked).";
    if (!data) return errorText(error, `The gateway answered ${response.status}.`);
    storeToken(token);
    setNotice("");
    setMe(data);
    return null;
  }, []);

  const signOut = useCallback(() => forgetToken(""), []);

  if (checking) return <p className="p-6 text-sm text-slate-600">Loading…</p>;
  return <AuthContext.Provider value={{ me, notice, signIn, signOut }}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  const auth = useContext(AuthContext);
  if (!auth) throw new Error("useAuth outside AuthProvider");
  return auth;
}
