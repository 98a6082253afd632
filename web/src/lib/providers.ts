// The model providers as the dashboard shows them: their names, the rules of the key form (the
// gateway's own: it refuses the same things with a 422), and when the AI services have taken a
// change of keys.
import type { ProviderKeyIn, ProvidersReport } from "../api/types";

export const PROVIDERS = ["anthropic", "openai", "google"] as const;
export type ProviderName = (typeof PROVIDERS)[number];

export const PROVIDER_LABELS: Record<string, string> = {
  anthropic: "Anthropic",
  openai: "OpenAI",
  google: "Google",
};

export const providerLabel = (name: string): string => PROVIDER_LABELS[name] ?? name;

export const KEY_MAX = 4096;

export interface KeyForm {
  /** The key as typed; empty: keep the stored one. */
  key: string;
  /** The base URL as it now reads in its field. */
  baseUrl: string;
}

export type KeyFormErrors = Partial<Record<"key" | "baseUrl" | "form", string>>;

const hasSpaceOrControl = (text: string) => [...text].some((ch) => /\s/.test(ch) || /\p{C}/u.test(ch));

export function keyProblem(typed: string): string | null {
  const key = typed.trim();
  if (!key) return null;
  if (key.length > KEY_MAX) return `A key is at most ${KEY_MAX} characters.`;
  if (hasSpaceOrControl(key)) return "The key holds spaces or control characters: paste the key alone.";
  return null;
}

export function baseUrlProblem(typed: string): string | null {
  const text = typed.trim();
  if (!text) return null;
  if (hasSpaceOrControl(text)) return "An address has no spaces.";
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "Not an address: give it whole, e.g. http://127.0.0.1:11434/v1.";
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname)
    return "An http:// or https:// address with a host, e.g. http://127.0.0.1:11434/v1.";
  return null;
}

/** What to send for the form: the key when one was typed, the base URL when it was changed from
 * `storedBaseUrl` (an empty one removes it; an unchanged one is left out, so a stored address's
 * credentials, which are never shown, are kept). */
export function keyRequest(form: KeyForm, storedBaseUrl: string | null | undefined): { body: ProviderKeyIn } | { errors: KeyFormErrors } {
  const errors: KeyFormErrors = {};
  const key = keyProblem(form.key);
  if (key) errors.key = key;
  const url = baseUrlProblem(form.baseUrl);
  if (url) errors.baseUrl = url;
  if (Object.keys(errors).length) return { errors };
  const body: ProviderKeyIn = {};
  if (form.key.trim()) body.api_key = form.key.trim();
  if (form.baseUrl.trim() !== (storedBaseUrl ?? "")) body.base_url = form.baseUrl.trim();
  if (!Object.keys(body).length)
    return { errors: { form: storedBaseUrl ? "Nothing changed: type a new key, or change the base URL." : "Type a key, a base URL or both." } };
  return { body };
}

/** The moment after which a change of keys is in force everywhere: the latest report before it
 * (the services' own clock: their next reports are later). */
export const reportedBefore = (report: ProvidersReport | null | undefined): string | null => report?.reported_at ?? null;

/** Whether every AI service has reported since `since` (when none had reported before, once
 * every one has). */
export function reportedSince(report: ProvidersReport, since: string | null): boolean {
  if (report.phases.some((phase) => !phase.reported_at)) return false;
  if (!since) return true;
  const after = microseconds(since);
  return report.phases.every((phase) => microseconds(phase.reported_at ?? "") > after);
}

/** An ISO time to the microsecond (the services report with microseconds; Date keeps ms). */
function microseconds(iso: string): number {
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? "";
  const seconds = Date.parse(iso.replace(/\.\d+/, ""));
  return seconds * 1000 + Number(fraction.padEnd(6, "0").slice(0, 6));
}

/** Why a phase takes its routes, in words. The reason says where they come from ("the
 * deployment's default", "set by VDO_TESTER_MODEL"), except for a fallback, which is named:
 * "fallback: the default openai:gpt-4.1 needs OPENAI_API_KEY, …". */
export function routeReason(source: string | null | undefined, why: string | null | undefined): string {
  if (source === "fallback" && why) return `fallback: ${why}`;
  return why || source || "";
}

/** Why a job was refused for want of a model, from its end's reason: no provider configured at
 * all (the built-in scripted model's refusal), or none for a phase's chosen model. */
export type Refusal = "no-model" | "no-key";

export function refusalOf(status: string | null | undefined, reason: string | null | undefined): Refusal | null {
  if (status !== "failed" || !reason) return null;
  if (reason.includes("no model configured")) return "no-model";
  if (reason.includes("no key for the")) return "no-key";
  return null;
}
