// A unified diff (as the gateway gives it) split into lines to colour, with line numbers.

export interface DiffLine {
  kind: "add" | "remove" | "context" | "hunk" | "header";
  text: string;
  oldNumber: number | null;
  newNumber: number | null;
}

export function parseUnifiedDiff(diff: string): DiffLine[] {
  const lines: DiffLine[] = [];
  let oldLine = 0;
  let newLine = 0;
  for (const raw of diff.replace(/\n$/, "").split("\n")) {
    if (raw.startsWith("--- ") || raw.startsWith("+++ ")) {
      lines.push({ kind: "header", text: raw, oldNumber: null, newNumber: null });
    } else if (raw.startsWith("@@")) {
      const match = /@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(raw);
      oldLine = match ? Number(match[1]) : 0;
      newLine = match ? Number(match[2]) : 0;
      lines.push({ kind: "hunk", text: raw, oldNumber: null, newNumber: null });
    } else if (raw.startsWith("+")) {
      lines.push({ kind: "add", text: raw.slice(1), oldNumber: null, newNumber: newLine++ });
    } else if (raw.startsWith("-")) {
      lines.push({ kind: "remove", text: raw.slice(1), oldNumber: oldLine++, newNumber: null });
    } else if (raw.startsWith("\\")) {
      lines.push({ kind: "header", text: raw, oldNumber: null, newNumber: null });
    } else {
      lines.push({ kind: "context", text: raw.slice(1), oldNumber: oldLine++, newNumber: newLine++ });
    }
  }
  return lines;
}
