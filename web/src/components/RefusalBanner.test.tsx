import { render, screen } from "@testing-library/react";
import { MemoryRouter } from "react-router-dom";
import { describe, expect, it } from "vitest";
import { RefusalBanner } from "./RefusalBanner";

describe("RefusalBanner", () => {
  it("sends an admin to Settings → Model providers", () => {
    render(
      <MemoryRouter>
        <RefusalBanner refusal="no-model" admin />
      </MemoryRouter>,
    );
    const note = screen.getByRole("note", { name: "Why this job was refused" });
    expect(note).toHaveTextContent("no AI model is configured");
    expect(screen.getByRole("link", { name: "Settings → Model providers" })).toHaveAttribute("href", "/settings#model-providers");
  });

  it("tells anyone else to ask an admin", () => {
    render(
      <MemoryRouter>
        <RefusalBanner refusal="no-key" admin={false} />
      </MemoryRouter>,
    );
    expect(screen.getByRole("note")).toHaveTextContent("no key is set for the provider of a model it needs");
    expect(screen.getByRole("note")).toHaveTextContent("Ask an admin");
    expect(screen.queryByRole("link")).not.toBeInTheDocument();
  });
});
