import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { Timeline } from "./Timeline";

describe("Timeline", () => {
  it("shows each phase's state and duration", () => {
    render(
      <Timeline
        attempt={2}
        phases={[
          { phase: "planning", state: "done", attempt: 1, startedAt: 0, finishedAt: 1, seconds: 1.5 },
          { phase: "building", state: "running", attempt: 2, startedAt: 0, finishedAt: null, seconds: 75 },
          { phase: "testing", state: "rejected", attempt: 2, startedAt: 0, finishedAt: 1, seconds: 0.25 },
          { phase: "reviewing", state: "pending", attempt: null, startedAt: null, finishedAt: null, seconds: null },
          { phase: "sandboxing", state: "failed", attempt: 2, startedAt: 0, finishedAt: 1, seconds: 3 },
        ]}
      />,
    );
    const list = screen.getByRole("list", { name: "Phases of attempt 2" });
    const items = within(list).getAllByRole("listitem");
    expect(items.map((i) => i.dataset.state)).toEqual(["done", "running", "rejected", "pending", "failed"]);
    expect(items[0]).toHaveTextContent("1.5 s");
    expect(items[1]).toHaveTextContent("running");
    expect(items[1]).toHaveTextContent("1 min 15 s");
    expect(items[2]).toHaveTextContent("sent back");
    expect(items[2]).toHaveTextContent("250 ms");
    expect(within(items[3]!).getByTestId("phase-duration")).toBeEmptyDOMElement();
  });
});
