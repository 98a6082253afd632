import { fireEvent, render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { LogView, type ViewLine } from "./LogView";

const line = (n: number, phase: string | null): ViewLine => ({ key: String(n), phase, stream: "event", level: n === 3 ? "error" : "info", text: `line ${n}`, at: 0 });

describe("LogView", () => {
  it("filters by phase", () => {
    render(<LogView lines={[line(1, "planning"), line(2, "testing"), line(3, "testing"), line(4, null)]} />);
    const log = screen.getByRole("log", { name: "Job log" });
    expect(within(log).getAllByText(/^line/)).toHaveLength(4);
    fireEvent.change(screen.getByLabelText("Show phase"), { target: { value: "testing" } });
    expect(within(log).getAllByText(/^line/).map((e) => e.textContent?.endsWith("line 2") || e.textContent?.endsWith("line 3"))).toEqual([true, true]);
    fireEvent.change(screen.getByLabelText("Show phase"), { target: { value: "reviewing" } });
    expect(within(log).getByText("No log lines for reviewing.")).toBeInTheDocument();
  });

  it("holds still while paused, counts what came meanwhile, and follows again", () => {
    const { rerender } = render(<LogView lines={[line(1, "building")]} />);
    fireEvent.click(screen.getByRole("button", { name: "Pause" }));
    rerender(<LogView lines={[line(1, "building"), line(2, "building"), line(3, "testing")]} />);
    const log = screen.getByRole("log", { name: "Job log" });
    expect(within(log).queryByText("line 2")).not.toBeInTheDocument();
    expect(screen.getByText("Paused: 2 new lines")).toBeInTheDocument();
    fireEvent.click(screen.getByRole("button", { name: "Follow" }));
    expect(within(log).getByText("line 3")).toBeInTheDocument();
    expect(screen.getByText("Following")).toBeInTheDocument();
  });
});
