import { describe, expect, it } from "vitest";
import type { ProvidersReport } from "../api/types";
import { baseUrlProblem, keyProblem, keyRequest, refusalOf, reportedSince, routeReason } from "./providers";

describe("the key form", () => {
  it("refuses what the gateway refuses, without quoting the key", () => {
    expect(keyProblem("")).toBeNull();
    expect(keyProblem("  sk-ant-abc123  ")).toBeNull();
    const spaced = keyProblem("sk-ant abc123");
    expect(spaced).toMatch(/spaces or control characters/);
    expect(spaced).not.toContain("abc123");
    expect(keyProblem("sk-\u0007bell")).toMatch(/control characters/);
    expect(keyProblem("k".repeat(4097))).toMatch(/at most 4096/);
    expect(baseUrlProblem("")).toBeNull();
    expect(baseUrlProblem("http://127.0.0.1:11434/v1")).toBeNull();
    expect(baseUrlProblem("https://proxy.example/anthropic")).toBeNull();
    expect(baseUrlProblem("file:///etc/passwd")).toMatch(/http:\/\/ or https:\/\//);
    expect(baseUrlProblem("localhost:11434")).toMatch(/http:\/\/ or https:\/\//);
    expect(baseUrlProblem("127.0.0.1")).toMatch(/Not an address/);
    expect(baseUrlProblem("http://host /v1")).toMatch(/no spaces/);
  });

  it("sends the key when typed, and the base URL only when changed (empty removes it)", () => {
    expect(keyRequest({ key: " sk-1 ", baseUrl: "" }, null)).toEqual({ body: { api_key: "sk-1" } });
    expect(keyRequest({ key: "sk-1", baseUrl: "http://x:1/v1" }, "http://x:1/v1")).toEqual({ body: { api_key: "sk-1" } });
    expect(keyRequest({ key: "", baseUrl: "http://y:2/v1" }, "http://x:1/v1")).toEqual({ body: { base_url: "http://y:2/v1" } });
    expect(keyRequest({ key: "", baseUrl: "" }, "http://x:1/v1")).toEqual({ body: { base_url: "" } });
    expect(keyRequest({ key: "", baseUrl: "" }, null)).toEqual({ errors: { form: "Type a key, a base URL or both." } });
    expect(keyRequest({ key: "", baseUrl: "http://x:1/v1" }, "http://x:1/v1")).toMatchObject({ errors: { form: /Nothing changed/ } });
    expect(keyRequest({ key: "a b", baseUrl: "ftp://x" }, null)).toEqual({
      errors: { key: expect.stringMatching(/spaces/), baseUrl: expect.stringMatching(/http/) },
    });
  });
});

const report = (times: (string | null)[]): ProvidersReport => ({
  providers: [],
  phases: times.map((reported_at, i) => ({ phase: `p${i}`, routes: [], scripted: false, reported_at })),
  scripted: false,
  reported_at: times.filter(Boolean).sort().at(-1) ?? null,
});

describe("a change of keys is in force", () => {
  it("once every AI service has reported after the latest report before it", () => {
    const before = "2026-12-06T10:00:00.123456+00:00";
    expect(reportedSince(report([before, "2026-12-06T09:59:59+00:00"]), before)).toBe(false);
    expect(reportedSince(report(["2026-12-06T10:00:00.123457+00:00", "2026-12-06T10:00:01+00:00"]), before)).toBe(true);
    // Microseconds count: the same millisecond is not later.
    expect(reportedSince(report(["2026-12-06T10:00:00.1234+00:00"]), before)).toBe(false);
    expect(reportedSince(report(["2026-12-06T10:00:02+00:00", null]), before)).toBe(false);
    expect(reportedSince(report(["2026-12-06T10:00:02+00:00"]), null)).toBe(true);
  });
});

describe("a refused job", () => {
  it("is told by its reason, when it failed", () => {
    const scripted = "build failed: no model configured: the built-in scripted model only handles the demo jobs";
    expect(refusalOf("failed", scripted)).toBe("no-model");
    expect(refusalOf("failed", "no key for the tester's model (openai:gpt-4.1; set by VDO_TESTER_MODEL)")).toBe("no-key");
    expect(refusalOf("running", scripted)).toBeNull();
    expect(refusalOf("cancelled", scripted)).toBeNull();
    expect(refusalOf("failed", "tests failed on the last attempt")).toBeNull();
    expect(refusalOf("failed", null)).toBeNull();
  });

  it("routes read with their source", () => {
    expect(routeReason("fallback", "the default openai:gpt-4.1 needs OPENAI_API_KEY")).toBe(
      "fallback: the default openai:gpt-4.1 needs OPENAI_API_KEY",
    );
    expect(routeReason("default", "the deployment's default")).toBe("the deployment's default");
    expect(routeReason("setting", null)).toBe("setting");
    expect(routeReason(null, null)).toBe("");
  });
});
