import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { ConnectionIndicator, StaleBanner } from "./ConnectionIndicator";

describe("ConnectionIndicator", () => {
  it("shows live, and a drop with a warning that the page may be stale", () => {
    const { rerender } = render(
      <>
        <ConnectionIndicator status={{ state: "live", detail: "", since: 0 }} />
        <StaleBanner status={{ state: "live", detail: "", since: 0 }} />
      </>,
    );
    expect(screen.getByRole("status")).toHaveTextContent("Live");
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
    const lost = { state: "reconnecting" as const, detail: "connection lost; trying again in 2 s", since: 0 };
    rerender(
      <>
        <ConnectionIndicator status={lost} />
        <StaleBanner status={lost} />
      </>,
    );
    expect(screen.getByRole("status")).toHaveTextContent("Reconnecting");
    expect(screen.getByRole("status")).toHaveAttribute("data-live-state", "reconnecting");
    expect(screen.getByRole("alert")).toHaveTextContent("may be out of date");
  });
});
