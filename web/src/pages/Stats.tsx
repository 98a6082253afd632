import { useCallback, useEffect, useRef, useState } from "react";
import { api, must } from "../api/client";
import type { Stats } from "../api/types";
import { BarChart } from "../components/BarChart";
import { duration, usd } from "../lib/format";
import { useLive } from "../live/useLive";

function Tile({ label, value }: { label: string; value: string }) {
  return (
    <div className="card px-4 py-3">
      <p className="text-xs font-medium text-slate-600">{label}</p>
      <p className="text-2xl font-semibold tabular-nums">{value}</p>
    </div>
  );
}

export default function StatsPage() {
  const [stats, setStats] = useState<Stats | null>(null);
  const [error, setError] = useState("");
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const load = useCallback(async () => {
    try {
      setStats(must(await api.GET("/api/stats", { params: { query: { days: 30 } } })));
      setError("");
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  }, []);
  useEffect(() => {
    void load();
    return () => {
      if (timer.current) clearTimeout(timer.current);
    };
  }, [load]);
  // Figures move with the jobs: a burst of events is one reload.
  const soon = () => {
    if (!timer.current) timer.current = setTimeout(() => ((timer.current = null), void load()), 1000);
  };
  useLive({ after: stats ? stats.projected_position : null, onEvent: soon, onCaughtUp: soon });

  if (!stats) return <p className="text-sm text-slate-600">{error || "Loading…"}</p>;
  const day = (iso: string) => iso.slice(5);
  return (
    <div className="space-y-4">
      <h1 className="text-2xl font-semibold">Stats</h1>
      <div className="grid grid-cols-2 gap-3 md:grid-cols-4">
        <Tile label="Jobs" value={String(stats.total_jobs)} />
        <Tile label="Success rate" value={stats.success_rate == null ? "–" : `${Math.round(stats.success_rate * 100)}%`} />
        <Tile label="Mean time to complete" value={duration(stats.mean_duration_seconds)} />
        <Tile label="Model spending" value={usd(stats.total_cost_usd)} />
      </div>
      <div className="grid gap-4 lg:grid-cols-2">
        <section className="card">
          <h2 className="card-title">Jobs per day</h2>
          <BarChart
            title="Jobs submitted per day, by how they ended"
            bars={(stats.jobs_by_day ?? []).map((d) => ({
              label: day(d.day),
              value: d.submitted,
              parts: [
                { name: "completed", value: Math.min(d.completed, d.submitted), className: "fill-emerald-600" },
                { name: "other", value: Math.max(0, d.submitted - d.completed), className: "fill-slate-400" },
              ],
            }))}
          />
          <p className="px-4 pb-3 text-xs text-slate-600">
            <span className="mr-1 inline-block h-2 w-2 rounded-sm bg-emerald-600" /> completed{" "}
            <span className="ml-3 mr-1 inline-block h-2 w-2 rounded-sm bg-slate-400" /> other (running, failed, cancelled)
          </p>
        </section>
        <section className="card">
          <h2 className="card-title">Duration per phase (median)</h2>
          <BarChart
            title="Median seconds per phase"
            format={(v) => duration(v)}
            className="fill-sky-600"
            bars={(stats.phase_durations ?? []).map((p) => ({ label: p.phase, value: p.p50_seconds }))}
          />
        </section>
        <section className="card">
          <h2 className="card-title">Cost per day</h2>
          <BarChart title="Model spending per day, USD" format={usd} className="fill-violet-600" bars={stats.cost_by_day.map((d) => ({ label: day(d.day), value: d.cost_usd }))} />
        </section>
        <section className="card">
          <h2 className="card-title">Cost per model</h2>
          {stats.cost_by_model.length === 0 ? (
            <p className="px-4 py-6 text-sm text-slate-600">No model calls yet.</p>
          ) : (
            <table className="w-full text-sm">
              <thead className="bg-slate-50 text-left text-xs uppercase text-slate-600">
                <tr>
                  <th scope="col" className="px-4 py-2">Model</th>
                  <th scope="col" className="px-3 py-2 text-right">Calls</th>
                  <th scope="col" className="px-3 py-2 text-right">Tokens in/out</th>
                  <th scope="col" className="px-4 py-2 text-right">Cost</th>
                </tr>
              </thead>
              <tbody className="divide-y divide-slate-100">
                {stats.cost_by_model.map((m) => (
                  <tr key={m.route}>
                    <td className="px-4 py-1.5 font-mono text-xs">{m.route}</td>
                    <td className="px-3 py-1.5 text-right tabular-nums">{m.calls}</td>
                    <td className="px-3 py-1.5 text-right tabular-nums">
                      {m.input_tokens}/{m.output_tokens}
                    </td>
                    <td className="px-4 py-1.5 text-right tabular-nums">{usd(m.cost_usd)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      </div>
    </div>
  );
}
