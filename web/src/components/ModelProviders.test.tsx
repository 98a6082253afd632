import { act, fireEvent, render, screen, waitFor, within } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { api } from "../api/client";
import type { ProvidersReport, ProviderView } from "../api/types";
import { ModelProviders } from "./ModelProviders";

const KEY = "sk-ant-secret-never-shown-wxyz";
const provider = (name: string, over: Partial<ProviderView> = {}): ProviderView => ({
  name,
  configured: false,
  key_source: null,
  base_url: null,
  phases: [],
  stored_key: null,
  stored_base_url: null,
  stored_at: null,
  stored_by: null,
  environment_wins: false,
  ...over,
});
const phase = (name: string, reported_at: string, routes: string[], scripted: boolean) => ({
  phase: name,
  routes,
  source: scripted ? "scripted" : "fallback",
  why: scripted ? "no AI provider is configured" : "the default openai:gpt-4.1 needs OPENAI_API_KEY, which is not set",
  scripted,
  problem: null,
  providers: [],
  reported_at,
});
const PHASES = ["planner", "builder", "tester", "reviewer"];
const scripted = (at: string): ProvidersReport => ({
  providers: [provider("anthropic"), provider("openai"), provider("google")],
  phases: PHASES.map((p) => phase(p, at, ["scripted:scripted-demo-1"], true)),
  scripted: true,
  reported_at: at,
});
const withKey = (at: string): ProvidersReport => ({
  providers: [
    provider("anthropic", {
      configured: true,
      key_source: "settings",
      base_url: "http://127.0.0.1:9999",
      phases: PHASES,
      stored_key: "…wxyz",
      stored_base_url: "http://127.0.0.1:9999",
      stored_at: at,
      stored_by: "admin",
    }),
    provider("openai"),
    provider("google"),
  ],
  phases: PHASES.map((p) => phase(p, at, ["anthropic:claude-sonnet-4-6"], false)),
  scripted: false,
  reported_at: at,
});
const answer = <T,>(data: T | undefined, status = 200, error?: unknown) => ({ data, error, response: new Response(null, { status }) });

let current: ProvidersReport;
beforeEach(() => {
  current = scripted("2026-12-06T10:00:00.000001+00:00");
  vi.spyOn(api, "GET").mockImplementation((() => Promise.resolve(answer(current))) as never);
});
afterEach(() => vi.restoreAllMocks());


describe("Settings → Model providers", () => {
  it("saves a key, empties its field, shows only its last four and waits for the AI services to take it", async () => {
    const put = vi.spyOn(api, "PUT").mockImplementation((async () => {
      // The services re-report a moment after the change.
      setTimeout(() => (current = withKey("2026-12-06T10:00:01.5+00:00")), 50);
      return answer(withKey("2026-12-06T10:00:01+00:00").providers[0]);
    }) as never);
    render(<ModelProviders />);
    const anthropic = await screen.findByRole("region", { name: "Anthropic" });
    expect(within(anthropic).getByTestId("anthropic-state")).toHaveTextContent("no key");
    expect(screen.getByText(/every phase runs on the built-in scripted model/)).toBeInTheDocument();
    expect(screen.getByText(/takes effect at once, with no restart/)).toBeInTheDocument();
    expect(screen.getByText(/encrypted at rest, never\s+shown again/)).toBeInTheDocument();
    expect(screen.getByText(/not included in backups/)).toBeInTheDocument();

    const field = within(anthropic).getByLabelText("Anthropic API key");
    expect(field).toHaveAttribute("type", "password");
    expect(field).toHaveAttribute("autocomplete", "off");
    expect(field).toHaveValue("");
    fireEvent.input(field, { target: { value: KEY } });
    fireEvent.change(within(anthropic).getByLabelText("Anthropic Base URL (optional)"), { target: { value: "http://127.0.0.1:9999" } });
    fireEvent.click(within(anthropic).getByRole("button", { name: "Save the Anthropic settings" }));

    await waitFor(() => expect(put).toHaveBeenCalledTimes(1));
    expect(put.mock.calls[0]![1]).toMatchObject({ params: { path: { provider: "anthropic" } }, body: { api_key: KEY, base_url: "http://127.0.0.1:9999" } });
    expect(await within(anthropic).findByText("Saved the key …wxyz and the base URL.")).toBeInTheDocument();
    expect(field).toHaveValue("");
    expect(await screen.findByText(/Every AI service has taken the change/, {}, { timeout: 3000 })).toBeInTheDocument();
    expect(within(anthropic).getByTestId("anthropic-state")).toHaveTextContent("configured");
    expect(within(anthropic).getByTestId("anthropic-key")).toHaveTextContent("entered here: …wxyz by admin");
    expect(screen.getAllByText(/fallback: the default openai:gpt-4.1 needs OPENAI_API_KEY/)).toHaveLength(4);
    expect(document.body.innerHTML).not.toContain(KEY);
  });

  it("says what is wrong with a key and sends nothing", async () => {
    const put = vi.spyOn(api, "PUT");
    render(<ModelProviders />);
    const openai = await screen.findByRole("region", { name: "OpenAI" });
    expect(within(openai).getByText(/Ollama http:\/\/127.0.0.1:11434\/v1/)).toBeInTheDocument();
    fireEvent.click(within(openai).getByRole("button", { name: "Save the OpenAI settings" }));
    expect(within(openai).getByText("Type a key, a base URL or both.")).toBeInTheDocument();
    const field = within(openai).getByLabelText("OpenAI API key");
    fireEvent.input(field, { target: { value: "sk-one two" } });
    fireEvent.click(within(openai).getByRole("button", { name: "Save the OpenAI settings" }));
    expect(field).toHaveAttribute("aria-invalid", "true");
    expect(field).toHaveAccessibleDescription(/spaces or control characters/);
    expect(field).toHaveFocus();
    expect(put).not.toHaveBeenCalled();
  });

  it("shows the gateway's refusal of a key", async () => {
    vi.spyOn(api, "PUT").mockResolvedValue(answer(undefined, 422, { detail: "the key holds spaces or control characters: paste it alone" }) as never);
    render(<ModelProviders />);
    const google = await screen.findByRole("region", { name: "Google" });
    fireEvent.input(within(google).getByLabelText("Google API key"), { target: { value: "AIza-key" } });
    fireEvent.click(within(google).getByRole("button", { name: "Save the Google settings" }));
    expect(await within(google).findByRole("alert")).toHaveTextContent("paste it alone");
  });

  it("tests a key and shows the answer or the provider's error", async () => {
    current = withKey("2026-12-06T10:00:01+00:00");
    const post = vi.spyOn(api, "POST").mockResolvedValueOnce(
      answer({ provider: "anthropic", ok: true, model: "claude-haiku-4-5", key_source: "settings", answer: "OK", error: null, latency_ms: 412.5 }) as never,
    );
    render(<ModelProviders />);
    const anthropic = await screen.findByRole("region", { name: "Anthropic" });
    fireEvent.click(within(anthropic).getByRole("button", { name: "Test the Anthropic key" }));
    expect(await within(anthropic).findByTestId("provider-test")).toHaveTextContent("claude-haiku-4-5 answered in 413 ms (key from Settings): “OK”");
    post.mockResolvedValueOnce(
      answer({ provider: "anthropic", ok: false, model: "claude-haiku-4-5", key_source: "settings", answer: "", error: "401 invalid x-api-key", latency_ms: 80 }) as never,
    );
    fireEvent.click(within(anthropic).getByRole("button", { name: "Test the Anthropic key" }));
    await waitFor(() => expect(within(anthropic).getByTestId("provider-test")).toHaveTextContent("claude-haiku-4-5 failed in 80 ms: 401 invalid x-api-key"));
    post.mockResolvedValueOnce(answer(undefined, 503, { detail: "the key was not tried: no AI service answered" }) as never);
    fireEvent.click(within(anthropic).getByRole("button", { name: "Test the Anthropic key" }));
    expect(await within(anthropic).findByText(/Not tried: the key was not tried/)).toBeInTheDocument();
  });

  it("removes a stored key only once confirmed", async () => {
    current = withKey("2026-12-06T10:00:01+00:00");
    const remove = vi.spyOn(api, "DELETE").mockResolvedValue(answer(undefined, 204) as never);
    render(<ModelProviders />);
    const anthropic = await screen.findByRole("region", { name: "Anthropic" });
    fireEvent.click(within(anthropic).getByRole("button", { name: "Remove the Anthropic key entered here" }));
    const confirm = within(anthropic).getByRole("group", { name: "Confirm removing the Anthropic key" });
    expect(within(confirm).getByRole("button", { name: "Yes, remove it" })).toHaveFocus();
    fireEvent.click(within(confirm).getByRole("button", { name: "Keep it" }));
    expect(remove).not.toHaveBeenCalled();
    fireEvent.click(within(anthropic).getByRole("button", { name: "Remove the Anthropic key entered here" }));
    await act(async () => {
      fireEvent.click(within(anthropic).getByRole("button", { name: "Yes, remove it" }));
    });
    await waitFor(() => expect(remove).toHaveBeenCalledTimes(1));
    expect(await within(anthropic).findByText("Removed the key and base URL entered here.")).toBeInTheDocument();
  });

  it("explains a stored key the environment's overrides", async () => {
    current = withKey("2026-12-06T10:00:01+00:00");
    current.providers[0] = { ...current.providers[0]!, key_source: "ANTHROPIC_API_KEY", environment_wins: true };
    render(<ModelProviders />);
    const anthropic = await screen.findByRole("region", { name: "Anthropic" });
    expect(within(anthropic).getByTestId("anthropic-key")).toHaveTextContent("from the environment: ANTHROPIC_API_KEY");
    expect(anthropic).toHaveTextContent("The environment's ANTHROPIC_API_KEY is used; the key entered here (…wxyz) is not.");
  });
});
