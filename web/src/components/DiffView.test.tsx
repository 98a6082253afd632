import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { FileDiff } from "../api/types";
import { FileDiffView } from "./DiffView";

const diff: FileDiff = {
  path: "wc.py",
  change: "modified",
  from_sha256: "a",
  to_sha256: "b",
  binary: false,
  diff: "--- a/wc.py\n+++ b/wc.py\n@@ -1,3 +1,3 @@\n def count(text):\n-    return len(text.split()) + 1\n+    return len(text.split())\n \n",
  lines_added: 1,
  lines_removed: 1,
  truncated: false,
};

describe("FileDiffView", () => {
  it("colours added and removed lines with both line numbers", () => {
    const { container } = render(<FileDiffView diff={diff} />);
    const rows = [...container.querySelectorAll("tr")];
    expect(rows.map((r) => r.dataset.kind)).toEqual(["hunk", "context", "remove", "add", "context"]);
    const removed = rows[2]!.querySelectorAll("td");
    expect(removed[0]).toHaveTextContent("2");
    expect(removed[1]).toHaveTextContent("");
    expect(rows[2]).toHaveTextContent("removed: return len(text.split()) + 1");
    const added = rows[3]!.querySelectorAll("td");
    expect(added[1]).toHaveTextContent("2");
    expect(rows[3]).toHaveTextContent("added: return len(text.split())");
    expect(screen.getByText("+1")).toBeInTheDocument();
  });

  it("says a binary file has no line diff", () => {
    render(<FileDiffView diff={{ ...diff, binary: true, diff: null }} />);
    expect(screen.getByText("Binary file: no line diff.")).toBeInTheDocument();
  });
});
