import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import { describe, expect, it, vi } from "vitest";
import type { ModelDefaults, Template } from "../api/types";
import { EMPTY_FORM, modelWarning, toRequest, validate } from "../lib/newJob";
import { NewJobFormView } from "./NewJob";

const template: Template = {
  id: "repair-loop-demo",
  name: "repair-loop-demo",
  builtin: true,
  title: "Word count, showing the repair loop",
  description: "A command-line word-count tool with tests",
  summary: "Takes two attempts.",
  routes: {},
  max_attempts: 3,
  budget_usd: null,
  priority: null,
  scripted: true,
  from_job: null,
  from_template: null,
  created_by: null,
  created_at: null,
  updated_by: null,
  updated_at: null,
  version: null,
  source: "builtin",
};

describe("the new-job form", () => {
  it("says what is missing and sends nothing", async () => {
    const onSubmit = vi.fn();
    render(<NewJobFormView templates={[template]} onSubmit={onSubmit} />);
    fireEvent.click(screen.getByRole("button", { name: "Submit job" }));
    expect(await screen.findByText("Give the job a title.")).toBeInTheDocument();
    expect(screen.getByText("Describe what to build, in plain words.")).toBeInTheDocument();
    expect(screen.getByLabelText("Title")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByLabelText("Title")).toHaveAccessibleDescription("Give the job a title.");
    expect(onSubmit).not.toHaveBeenCalled();
  });

  it("opens the advanced fields to show their mistakes", async () => {
    const onSubmit = vi.fn();
    render(<NewJobFormView templates={[]} onSubmit={onSubmit} />);
    fireEvent.change(screen.getByLabelText("Title"), { target: { value: "wc" } });
    fireEvent.change(screen.getByLabelText("Description"), { target: { value: "a word count tool" } });
    fireEvent.click(screen.getByRole("button", { name: /Advanced/ }));
    fireEvent.change(screen.getByLabelText("Model for the planner"), { target: { value: "acme:big" } });
    fireEvent.change(screen.getByLabelText("Max attempts"), { target: { value: "11" } });
    fireEvent.click(screen.getByRole("button", { name: /Advanced/ }));
    fireEvent.click(screen.getByRole("button", { name: "Submit job" }));
    expect(await screen.findByText(/"acme" is not a provider/)).toBeInTheDocument();
    expect(screen.getByText("A whole number from 1 to 10.")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: /Advanced/ })).toHaveAttribute("aria-expanded", "true");
    expect(onSubmit).not.toHaveBeenCalled();
  });

  it("fills itself from a template and submits it, showing the gateway's refusal", async () => {
    const onSubmit = vi.fn().mockResolvedValue("the budget is over the daily cap");
    render(<NewJobFormView templates={[template]} onSubmit={onSubmit} />);
    fireEvent.change(screen.getByLabelText(/Start from a template/), { target: { value: "repair-loop-demo" } });
    expect(screen.getByLabelText("Title")).toHaveValue("Word count, showing the repair loop");
    fireEvent.click(screen.getByRole("button", { name: "Submit job" }));
    await waitFor(() => expect(onSubmit).toHaveBeenCalledTimes(1));
    expect(onSubmit.mock.calls[0]![0]).toMatchObject({ template: "repair-loop-demo", maxAttempts: "3" });
    expect(await screen.findByText("the budget is over the daily cap")).toBeInTheDocument();
  });
});

describe("validate and toRequest", () => {
  it("send only what was given", () => {
    const form = {
      ...EMPTY_FORM,
      title: " wc ",
      description: "a tool",
      budget: "2.5",
      routes: { ...EMPTY_FORM.routes, reviewer: "google:gemini-2.5-pro, openai:gpt-4.1" },
    };
    expect(validate(form)).toEqual({});
    expect(toRequest(form)).toEqual({
      title: "wc",
      description: "a tool",
      budget_usd: 2.5,
      routes: { reviewer: ["google:gemini-2.5-pro", "openai:gpt-4.1"] },
    });
    expect(validate({ ...form, budget: "0" }).budget).toMatch(/more than \$0/);
    expect(validate({ ...form, title: "x".repeat(201) }).title).toMatch(/At most 200/);
  });
});

const phases = (routes: string[], source: string, why: string) =>
  (["planner", "builder", "tester", "reviewer"] as const).map((phase) => ({ phase, routes, source, why, problem: null }));
const SCRIPTED: ModelDefaults = {
  phases: phases(["scripted:scripted-demo-1"], "scripted", "no AI provider is configured"),
  scripted: true,
  providers: [],
  budget_usd: 5,
  max_attempts: 3,
  max_output_tokens: 16000,
  reported_at: "2026-12-06T10:00:00+00:00",
};
const ANTHROPIC: ModelDefaults = {
  ...SCRIPTED,
  phases: phases(["anthropic:claude-sonnet-4-6"], "fallback", "the default openai:gpt-4.1 needs OPENAI_API_KEY, which is not set"),
  scripted: false,
  providers: ["anthropic"],
};
const demoForm = { ...EMPTY_FORM, template: "repair-loop-demo", routes: { planner: "scripted:demo", builder: "scripted:demo", tester: "scripted:demo", reviewer: "scripted:demo" } };
const ownForm = { ...EMPTY_FORM, title: "md", description: "a markdown to HTML converter" };

describe("modelWarning", () => {
  it("warns of a job the scripted model will refuse, but not of a demo template's", () => {
    expect(modelWarning(ownForm, undefined, SCRIPTED)).toEqual({ kind: "no-model" });
    expect(modelWarning(demoForm, template, SCRIPTED)).toBeNull();
    expect(modelWarning({ ...demoForm, routes: { ...EMPTY_FORM.routes } }, template, SCRIPTED)).toBeNull();
    // A demo with a model picked for a phase needs that model's key.
    expect(modelWarning({ ...demoForm, routes: { ...demoForm.routes, builder: "openai:gpt-4.1" } }, template, SCRIPTED)).toEqual({ kind: "no-model" });
    // A user's template made from a demo is no demo (scripted is null).
    expect(modelWarning(ownForm, { ...template, scripted: null }, SCRIPTED)).toEqual({ kind: "no-model" });
  });

  it("says nothing until the AI services have reported, or when a provider is configured", () => {
    expect(modelWarning(ownForm, undefined, null)).toBeNull();
    expect(modelWarning(ownForm, undefined, { ...SCRIPTED, reported_at: null })).toBeNull();
    expect(modelWarning(ownForm, undefined, ANTHROPIC)).toBeNull();
  });

  it("names the phases whose chosen models have no key", () => {
    const form = { ...ownForm, routes: { ...EMPTY_FORM.routes, tester: "openai:gpt-4.1", reviewer: "gemini:gemini-2.5-pro, anthropic:claude-haiku-4-5" } };
    expect(modelWarning(form, undefined, ANTHROPIC)).toEqual({ kind: "no-key", phases: ["tester"] });
    const broken = { ...ANTHROPIC, phases: ANTHROPIC.phases.map((p) => (p.phase === "planner" ? { ...p, routes: [], problem: "no key for the planner's model" } : p)) };
    expect(modelWarning(ownForm, undefined, broken)).toEqual({ kind: "no-key", phases: ["planner"] });
  });
});

describe("the new-job form with the deployment's defaults", () => {
  const view = (props: Partial<Parameters<typeof NewJobFormView>[0]>) =>
    render(
      <MemoryRouter>
        <NewJobFormView templates={[template]} onSubmit={vi.fn().mockResolvedValue(null)} {...props} />
      </MemoryRouter>,
    );

  it("shows each phase's model, the budget and the attempts a job gets when left empty", () => {
    view({ defaults: ANTHROPIC });
    fireEvent.click(screen.getByRole("button", { name: /Advanced/ }));
    const planner = screen.getByLabelText("Model for the planner");
    expect(planner).toHaveAttribute("placeholder", "anthropic:claude-sonnet-4-6");
    expect(planner).toHaveAccessibleDescription(/empty: anthropic:claude-sonnet-4-6 \(fallback: the default openai:gpt-4.1 needs OPENAI_API_KEY/);
    expect(screen.getByLabelText("Budget (USD)")).toHaveAccessibleDescription(/empty: \$5\.00/);
    expect(screen.getByLabelText("Max attempts")).toHaveAccessibleDescription(/empty: 3/);
    expect(screen.queryByText(/No AI model is configured/)).not.toBeInTheDocument();
  });

  it("warns before submitting a job that will be refused, and sends it once confirmed", async () => {
    const onSubmit = vi.fn().mockResolvedValue(null);
    view({ defaults: SCRIPTED, admin: true, onSubmit });
    fireEvent.change(screen.getByLabelText("Title"), { target: { value: "md" } });
    fireEvent.change(screen.getByLabelText("Description"), { target: { value: "a markdown to HTML converter" } });
    expect(screen.getByText(/No AI model is configured/)).toBeInTheDocument();
    expect(screen.getByRole("link", { name: "Settings → Model providers" })).toHaveAttribute("href", "/settings#model-providers");
    expect(screen.getByRole("button", { name: "Submit job" })).toHaveAccessibleDescription(/this job will be refused/);
    fireEvent.click(screen.getByRole("button", { name: "Submit job" }));
    const anyway = await screen.findByRole("button", { name: "Submit anyway" });
    expect(anyway).toHaveFocus();
    expect(onSubmit).not.toHaveBeenCalled();
    fireEvent.click(screen.getByRole("button", { name: "Not now" }));
    expect(onSubmit).not.toHaveBeenCalled();
    fireEvent.click(screen.getByRole("button", { name: "Submit job" }));
    fireEvent.click(await screen.findByRole("button", { name: "Submit anyway" }));
    await waitFor(() => expect(onSubmit).toHaveBeenCalledTimes(1));
  });

  it("tells someone who is no admin to ask one", () => {
    view({ defaults: SCRIPTED, admin: false });
    expect(screen.getByText(/Ask an admin to add a model provider's key/)).toBeInTheDocument();
    expect(screen.queryByRole("link", { name: /Settings/ })).not.toBeInTheDocument();
  });

  it("says a demo template runs on the scripted model for free, and submits it without asking", async () => {
    const onSubmit = vi.fn().mockResolvedValue(null);
    view({ defaults: SCRIPTED, admin: true, onSubmit });
    fireEvent.change(screen.getByLabelText(/Start from a template/), { target: { value: "repair-loop-demo" } });
    expect(screen.getByText(/runs on the built-in scripted model, for free, even when a provider's key is configured/)).toBeInTheDocument();
    expect(screen.queryByText(/No AI model is configured/)).not.toBeInTheDocument();
    fireEvent.click(screen.getByRole("button", { name: "Submit job" }));
    await waitFor(() => expect(onSubmit).toHaveBeenCalledTimes(1));
  });
});
