import { Plus } from "lucide-react";
import { useCallback, useEffect, useRef, useState } from "react";
import { Link } from "react-router-dom";
import { api, must } from "../api/client";
import type { Job, Stats } from "../api/types";
import { JobFilters, JobList, type JobFilter } from "../components/JobList";
import { useLive } from "../live/useLive";
import { firstItems } from "../lib/paging";
import { useNow } from "../lib/useNow";

const PAGE = 100;

export function JobsPage() {
  const [filter, setFilter] = useState<JobFilter>({ status: null, q: "" });
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [total, setTotal] = useState(0);
  const [stats, setStats] = useState<Stats | null>(null);
  const [shown, setShown] = useState(PAGE);
  const shownRef = useRef(shown);
  shownRef.current = shown;
  const [after, setAfter] = useState<number | null>(null);
  const [error, setError] = useState("");
  const now = useNow(5000);
  const wanted = useRef(0);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const filterRef = useRef(filter);
  filterRef.current = filter;

  // Counts and list, from read models at least as recent as the last event heard of (the
  // projector may be a moment behind the live updates: then ask again shortly).
  const refresh = useCallback(async (tries = 0): Promise<void> => {
    try {
      const counts = must(await api.GET("/api/stats", { params: { query: { days: 1 } } }));
      const current = filterRef.current;
      const page = await firstItems(
        async (offset, limit) =>
          must(
            await api.GET("/api/jobs", {
              params: { query: { limit, offset, status: current.status ?? undefined, q: current.q || undefined } },
            }),
          ),
        shownRef.current,
      );
      setStats(counts);
      setJobs(page.items);
      setTotal(page.total);
      setError("");
      setAfter((known) => known ?? counts.projected_position);
      if (counts.projected_position < wanted.current && tries < 20) {
        timer.current = setTimeout(() => void refresh(tries + 1), 150);
      }
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  }, []);

  const soon = useCallback(() => {
    if (timer.current) clearTimeout(timer.current);
    timer.current = setTimeout(() => void refresh(), 100);
  }, [refresh]);

  // A new filter starts again from the first page.
  const changeFilter = useCallback((next: JobFilter) => {
    setShown(PAGE);
    setFilter(next);
  }, []);
  useEffect(() => {
    void refresh();
  }, [filter, shown, refresh]);
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);

  useLive({
    after,
    onEvent: (_event, position) => {
      wanted.current = Math.max(wanted.current, position);
      soon();
    },
    onCaughtUp: (position) => {
      wanted.current = Math.max(wanted.current, position);
      soon();
    },
  });

  const counts = stats?.by_status ?? {};
  return (
    <div className="space-y-4">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-2xl font-semibold">Jobs</h1>
        <Link to="/jobs/new" className="btn-primary">
          <Plus aria-hidden="true" className="h-4 w-4" /> New job
        </Link>
      </div>
      <JobFilters filter={filter} counts={counts} total={stats?.total_jobs ?? 0} onChange={changeFilter} />
      {error && (
        <p role="alert" className="rounded-md bg-red-50 px-3 py-2 text-sm text-red-900">
          {error}
        </p>
      )}
      {jobs === null ? (
        <p className="text-sm text-slate-600">Loading jobs…</p>
      ) : (
        <>
          <JobList jobs={jobs} now={now} />
          {total > jobs.length && (
            <div className="flex flex-wrap items-center gap-3">
              <p className="text-xs text-slate-600" data-testid="jobs-shown">
                Showing the newest {jobs.length} of {total}.
              </p>
              <button type="button" className="btn-secondary" onClick={() => setShown(jobs.length + PAGE)}>
                Show {Math.min(PAGE, total - jobs.length)} more
              </button>
            </div>
          )}
        </>
      )}
    </div>
  );
}
