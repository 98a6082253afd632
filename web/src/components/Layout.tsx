import { BarChart3, ListChecks, LogOut, Plus, Settings } from "lucide-react";
import { NavLink, Outlet } from "react-router-dom";
import { useAuth } from "../auth";
import { usePipeline } from "../lib/pipeline";
import { useLiveStatus } from "../live/status";
import { ConnectionIndicator, StaleBanner } from "./ConnectionIndicator";

const link = ({ isActive }: { isActive: boolean }) =>
  `inline-flex items-center gap-1.5 rounded-md px-2.5 py-1.5 text-sm font-medium focus-visible:outline focus-visible:outline-2 focus-visible:outline-white ${
    isActive ? "bg-indigo-900 text-white" : "text-indigo-50 hover:bg-indigo-600"
  }`;

export function Layout() {
  const { me, signOut } = useAuth();
  const status = useLiveStatus();
  // Asked for as soon as someone is signed in, so that a job's page has it from the start.
  usePipeline();
  return (
    <div className="min-h-screen">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 focus:rounded focus:bg-white focus:p-2">
        Skip to content
      </a>
      <header className="bg-indigo-700 text-white">
        <div className="mx-auto flex max-w-6xl flex-wrap items-center gap-x-4 gap-y-2 px-4 py-2">
          <NavLink to="/jobs" className="mr-2 flex items-center gap-2 text-base font-bold tracking-tight">
            <img src="/favicon.svg" alt="" className="h-6 w-6" />
            VDO
          </NavLink>
          <nav aria-label="Main" className="order-3 flex w-full flex-wrap gap-1 sm:order-none sm:w-auto">
            <NavLink to="/jobs" end className={link}>
              <ListChecks aria-hidden="true" className="h-4 w-4" /> Jobs
            </NavLink>
            <NavLink to="/jobs/new" className={link}>
              <Plus aria-hidden="true" className="h-4 w-4" /> New job
            </NavLink>
            <NavLink to="/stats" className={link}>
              <BarChart3 aria-hidden="true" className="h-4 w-4" /> Stats
            </NavLink>
            {me?.role === "admin" && (
              <NavLink to="/settings" className={link}>
                <Settings aria-hidden="true" className="h-4 w-4" /> Settings
              </NavLink>
            )}
          </nav>
          <div className="ml-auto flex items-center gap-3">
            <ConnectionIndicator status={status} />
            <span className="hidden text-sm text-indigo-50 md:inline" data-testid="whoami">
              {me?.name} · {me?.role}
            </span>
            <button type="button" onClick={signOut} className="btn bg-indigo-800 text-white hover:bg-indigo-900">
              <LogOut aria-hidden="true" className="h-4 w-4" /> Sign out
            </button>
          </div>
        </div>
      </header>
      <StaleBanner status={status} />
      <main id="main" className="mx-auto max-w-6xl px-4 py-5">
        <Outlet />
      </main>
    </div>
  );
}
