import { act, fireEvent, render, screen } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import { describe, expect, it, vi } from "vitest";
import type { Job } from "../api/types";
import { JobFilters, JobList } from "./JobList";

const job = (over: Partial<Job>): Job => ({
  id: "11111111-2222-3333-4444-555555555555",
  title: "word count",
  status: "queued",
  phase: "planning",
  step: "plan",
  attempt: 1,
  max_attempts: 3,
  budget_usd: 1,
  cost_usd: 0.0123,
  submitted_by: "ada",
  created_at: new Date(Date.now() - 120_000).toISOString(),
  updated_at: new Date().toISOString(),
  started_at: null,
  finished_at: null,
  finished_reason: null,
  version: 1,
  position: 1,
  priority: 5,
  queue_position: 2,
  status_label: "queued",
  ...over,
});

describe("JobFilters", () => {
  it("shows the counts and filters by status when one is picked", () => {
    const onChange = vi.fn();
    render(<JobFilters filter={{ status: null, q: "" }} counts={{ running: 2, failed: 1 }} total={5} onChange={onChange} />);
    expect(screen.getByTestId("count-all")).toHaveTextContent("5");
    expect(screen.getByTestId("count-running")).toHaveTextContent("2");
    expect(screen.getByTestId("count-completed")).toHaveTextContent("0");
    fireEvent.click(screen.getByRole("button", { name: /failed/ }));
    expect(onChange).toHaveBeenCalledWith({ status: "failed", q: "" });
  });

  it("searches once typing settles", () => {
    vi.useFakeTimers();
    const onChange = vi.fn();
    render(<JobFilters filter={{ status: "running", q: "" }} counts={{}} total={0} onChange={onChange} delay={200} />);
    fireEvent.change(screen.getByLabelText("Search jobs"), { target: { value: "tod" } });
    fireEvent.change(screen.getByLabelText("Search jobs"), { target: { value: "todo" } });
    act(() => vi.advanceTimersByTime(150));
    expect(onChange).not.toHaveBeenCalled();
    act(() => vi.advanceTimersByTime(100));
    expect(onChange).toHaveBeenCalledTimes(1);
    expect(onChange).toHaveBeenCalledWith({ status: "running", q: "todo" });
    vi.useRealTimers();
  });
});

describe("JobList", () => {
  it("lists each job with status, phase, attempt, cost, queue place and age", () => {
    render(
      <MemoryRouter>
        <JobList
          now={Date.now()}
          jobs={[job({}), job({ id: "99999999-2222-3333-4444-555555555555", title: "csv", status: "running", phase: "testing", queue_position: null, attempt: 2 })]}
        />
      </MemoryRouter>,
    );
    const rows = screen.getAllByRole("row").slice(1);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toHaveTextContent("word count");
    expect(rows[0]).toHaveTextContent("queued #2");
    expect(rows[0]).toHaveTextContent("1/3");
    expect(rows[0]).toHaveTextContent("$0.01");
    expect(rows[0]).toHaveTextContent("2 min ago");
    expect(rows[1]).toHaveTextContent("testing");
    expect(rows[1]).toHaveTextContent("2/3");
    expect(screen.getAllByRole("link", { name: "csv" })[0]).toHaveAttribute("href", "/jobs/99999999-2222-3333-4444-555555555555");
  });

  it("says when nothing matches", () => {
    render(<JobList jobs={[]} now={0} />);
    expect(screen.getByText("No jobs match.")).toBeInTheDocument();
  });
});
