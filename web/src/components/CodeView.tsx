import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import ini from "highlight.js/lib/languages/ini";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import markdown from "highlight.js/lib/languages/markdown";
import python from "highlight.js/lib/languages/python";
import sql from "highlight.js/lib/languages/sql";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import { useMemo } from "react";

hljs.registerLanguage("python", python);
hljs.registerLanguage("json", json);
hljs.registerLanguage("yaml", yaml);
hljs.registerLanguage("bash", bash);
hljs.registerLanguage("markdown", markdown);
hljs.registerLanguage("ini", ini);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("xml", xml);
hljs.registerLanguage("sql", sql);

const BY_EXTENSION: Record<string, string> = {
  py: "python",
  json: "json",
  yml: "yaml",
  yaml: "yaml",
  sh: "bash",
  md: "markdown",
  toml: "ini",
  ini: "ini",
  cfg: "ini",
  txt: "plaintext",
  js: "javascript",
  ts: "javascript",
  html: "xml",
  sql: "sql",
  csv: "plaintext",
};

export function languageOf(path: string): string {
  const extension = path.split(".").pop()?.toLowerCase() ?? "";
  return BY_EXTENSION[extension] ?? "plaintext";
}

/** Highlighted HTML cut into lines, each with the spans open across its ends closed and
 * reopened, so a multi-line string or comment keeps its colour on every line. */
export function splitLines(html: string): string[] {
  const lines: string[] = [];
  let open: string[] = [];
  for (const raw of html.split("\n")) {
    const line = open.join("") + raw;
    for (const tag of raw.match(/<span[^>]*>|<\/span>/g) ?? []) {
      if (tag === "</span>") open.pop();
      else open = [...open, tag];
    }
    lines.push(line + "</span>".repeat(open.length));
  }
  return lines;
}

/** A file's text with line numbers and syntax highlighting (highlight.js escapes the text). */
export function CodeView({ path, text }: { path: string; text: string }) {
  const language = languageOf(path);
  const html = useMemo(() => {
    if (language === "plaintext") return null;
    return splitLines(hljs.highlight(text, { language, ignoreIllegals: true }).value);
  }, [language, text]);
  const plain = text.split("\n");
  return (
    <div className="overflow-auto rounded-md border border-slate-200 bg-white" aria-label={`Content of ${path}`} role="region">
      <table className="w-full border-collapse font-mono text-xs leading-5" data-language={language}>
        <tbody>
          {plain.map((line, index) => (
            <tr key={index}>
              <td className="w-10 select-none border-r border-slate-200 bg-slate-50 px-2 text-right text-slate-500">
                {index + 1}
              </td>
              {html ? (
                <td className="whitespace-pre px-3" dangerouslySetInnerHTML={{ __html: html[index] ?? "" }} />
              ) : (
                <td className="whitespace-pre px-3">{line}</td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
