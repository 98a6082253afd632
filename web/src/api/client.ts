// The typed API client: every call carries the signed-in user's token, and a 401 anywhere
// signs the user out (back to the sign-in page, with a message).
import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./schema";

const TOKEN_KEY = "vdo.token";
type Listener = (reason: string) => void;
const signedOutListeners = new Set<Listener>();

export function storedToken(): string | null {
  return window.localStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string): void {
  window.localStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(reason = ""): void {
  window.localStorage.removeItem(TOKEN_KEY);
  for (const listener of signedOutListeners) listener(reason);
}

export function onSignedOut(listener: Listener): () => void {
  signedOutListeners.add(listener);
  return () => signedOutListeners.delete(listener);
}

export const SESSION_ENDED = "Your token was refused (expired, revoked or unknown). Sign in again.";

const auth: Middleware = {
  onRequest({ request }) {
    const token = storedToken();
    if (token) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
  onResponse({ response }) {
    if (response.status === 401 && storedToken()) forgetToken(SESSION_ENDED);
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: window.location.origin });
api.use(auth);

/** The message of an API error body ({detail}), or a fallback. */
export function errorText(error: unknown, fallback = "The request failed."): string {
  if (error && typeof error === "object" && "detail" in error) {
    const detail = (error as { detail: unknown }).detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail))
      return detail.map((d) => (d && typeof d === "object" && "msg" in d ? String(d.msg) : String(d))).join("; ");
  }
  return fallback;
}

/** The data of an answer, or an Error with the API's own message. */
export function must<T>(answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.data === undefined) throw new Error(errorText(answer.error, `${answer.response.status} ${answer.response.statusText}`));
  return answer.data;
}

/** Fetch a file with the token (a link cannot carry it) and hand it to the browser to save. */
export async function download(path: string, fallbackName: string): Promise<void> {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${storedToken() ?? ""}` } });
  if (response.status === 401) {
    forgetToken(SESSION_ENDED);
    throw new Error(SESSION_ENDED);
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      detail = errorText(await response.json(), detail);
    } catch {
      /* not JSON: keep the status */
    }
    throw new Error(detail);
  }
  const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") ?? "")?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A plain GET with the token, for what the schema does not type (text files, newer endpoints). */
export async function getRaw(path: string): Promise<Response> {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${storedToken() ?? ""}` } });
  if (response.status === 401 && storedToken()) forgetToken(SESSION_ENDED);
  return response;
}
