import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { Template } from "../api/types";
import { EMPTY_FORM, toRequest, validate } from "../lib/newJob";
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
