import { Search } from "lucide-react";
import { useEffect, useState } from "react";
import { Link } from "react-router-dom";
import type { Job, Status } from "../api/types";
import { STATUSES } from "../api/types";
import { age, usd } from "../lib/format";
import { StatusBadge } from "./StatusBadge";

export interface JobFilter {
  status: Status | null;
  q: string;
}

/** The counts at a glance (each one a filter) and the search box. Typing settles for a moment
 * before the filter changes. */
export function JobFilters({
  filter,
  counts,
  total,
  onChange,
  delay = 250,
}: {
  filter: JobFilter;
  counts: Record<string, number>;
  total: number;
  onChange(filter: JobFilter): void;
  delay?: number;
}) {
  const [text, setText] = useState(filter.q);
  useEffect(() => {
    if (text === filter.q) return;
    const timer = setTimeout(() => onChange({ ...filter, q: text }), delay);
    return () => clearTimeout(timer);
  }, [text, filter, onChange, delay]);
  const chip = (status: Status | null, label: string, count: number) => (
    <button
      key={label}
      type="button"
      aria-pressed={filter.status === status}
      onClick={() => onChange({ ...filter, status })}
      className={`flex min-w-[6.5rem] flex-col rounded-lg border px-3 py-2 text-left focus-visible:outline focus-visible:outline-2 focus-visible:outline-indigo-600 ${
        filter.status === status ? "border-indigo-600 bg-indigo-50 ring-1 ring-indigo-600" : "border-slate-200 bg-white hover:border-slate-400"
      }`}
    >
      <span className="text-xs font-medium capitalize text-slate-700">{label}</span>
      <span className="text-xl font-semibold tabular-nums" data-testid={`count-${label}`}>
        {count}
      </span>
    </button>
  );
  return (
    <div className="space-y-3">
      <div className="flex flex-wrap gap-2" role="group" aria-label="Filter by status">
        {chip(null, "all", total)}
        {STATUSES.map((s) => chip(s, s, counts[s] ?? 0))}
      </div>
      <div className="relative max-w-md">
        <label htmlFor="job-search" className="sr-only">
          Search jobs
        </label>
        <Search aria-hidden="true" className="pointer-events-none absolute left-2.5 top-2.5 h-4 w-4 text-slate-500" />
        <input
          id="job-search"
          type="search"
          className="input pl-8"
          placeholder="Search titles and descriptions"
          value={text}
          onChange={(e) => setText(e.target.value)}
        />
      </div>
    </div>
  );
}

function phaseOf(job: Job): string {
  if (job.status === "completed") return "done";
  if (job.status === "queued") return job.queue_position ? `queued #${job.queue_position}` : "queued";
  return job.phase ?? "–";
}

/** The jobs: a table on wide screens, cards on a phone. */
export function JobList({ jobs, now }: { jobs: Job[]; now: number }) {
  if (jobs.length === 0) return <p className="card px-4 py-8 text-center text-sm text-slate-600">No jobs match.</p>;
  return (
    <>
      <div className="card hidden overflow-x-auto md:block">
        <table className="w-full text-sm">
          <thead className="border-b border-slate-200 bg-slate-50 text-left text-xs uppercase tracking-wide text-slate-600">
            <tr>
              <th scope="col" className="px-4 py-2">Job</th>
              <th scope="col" className="px-3 py-2">Status</th>
              <th scope="col" className="px-3 py-2">Phase</th>
              <th scope="col" className="px-3 py-2 text-right">Attempt</th>
              <th scope="col" className="px-3 py-2 text-right">Cost</th>
              <th scope="col" className="px-3 py-2 text-right">Queue</th>
              <th scope="col" className="px-3 py-2 text-right">Age</th>
            </tr>
          </thead>
          <tbody className="divide-y divide-slate-100">
            {jobs.map((job) => (
              <tr key={job.id} data-job-id={job.id} className="hover:bg-slate-50">
                <td className="max-w-xs px-4 py-2">
                  <Link to={`/jobs/${job.id}`} className="font-medium text-indigo-800 hover:underline">
                    {job.title}
                  </Link>
                  <div className="text-xs text-slate-600">{job.submitted_by} · {job.id.slice(0, 8)}</div>
                </td>
                <td className="px-3 py-2">
                  <StatusBadge status={job.status} />
                </td>
                <td className="px-3 py-2 capitalize">{phaseOf(job)}</td>
                <td className="px-3 py-2 text-right tabular-nums">
                  {job.attempt}/{job.max_attempts}
                </td>
                <td className="px-3 py-2 text-right tabular-nums">{usd(job.cost_usd)}</td>
                <td className="px-3 py-2 text-right tabular-nums">{job.queue_position ? `#${job.queue_position}` : "–"}</td>
                <td className="px-3 py-2 text-right text-slate-700">
                  <time dateTime={job.created_at}>{age(job.created_at, now)}</time>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ul className="space-y-2 md:hidden">
        {jobs.map((job) => (
          <li key={job.id} data-job-id={job.id} className="card px-3 py-2.5">
            <div className="flex items-start justify-between gap-2">
              <Link to={`/jobs/${job.id}`} className="font-medium text-indigo-800 hover:underline">
                {job.title}
              </Link>
              <StatusBadge status={job.status} />
            </div>
            <div className="mt-1 flex flex-wrap gap-x-3 text-xs text-slate-700">
              <span className="capitalize">{phaseOf(job)}</span>
              <span>attempt {job.attempt}/{job.max_attempts}</span>
              <span>{usd(job.cost_usd)}</span>
              <span>{age(job.created_at, now)}</span>
            </div>
          </li>
        ))}
      </ul>
    </>
  );
}
