import { lazy, Suspense } from "react";
import { BrowserRouter, Navigate, Route, Routes, useLocation } from "react-router-dom";
import { AuthProvider, useAuth } from "./auth";
import { Layout } from "./components/Layout";
import { JobsPage } from "./pages/Jobs";
import { JobDetailPage } from "./pages/JobDetail";
import { NewJobPage } from "./pages/NewJob";
import { SignInPage } from "./pages/SignIn";

// Less visited pages load when first opened.
const StatsPage = lazy(() => import("./pages/Stats"));
const SettingsPage = lazy(() => import("./pages/Settings"));

function Protected() {
  const { me } = useAuth();
  const location = useLocation();
  if (!me) return <Navigate to="/signin" replace state={{ from: location.pathname }} />;
  return <Layout />;
}

export function App() {
  return (
    <BrowserRouter>
      <AuthProvider>
        <Suspense fallback={<p className="p-6 text-sm text-slate-600">Loading…</p>}>
          <Routes>
            <Route path="/signin" element={<SignInPage />} />
            <Route element={<Protected />}>
              <Route path="/" element={<Navigate to="/jobs" replace />} />
              <Route path="/jobs" element={<JobsPage />} />
              <Route path="/jobs/new" element={<NewJobPage />} />
              <Route path="/jobs/:id" element={<JobDetailPage />} />
              <Route path="/stats" element={<StatsPage />} />
              <Route path="/settings" element={<SettingsPage />} />
              <Route path="*" element={<p className="text-sm">No such page.</p>} />
            </Route>
          </Routes>
        </Suspense>
      </AuthProvider>
    </BrowserRouter>
  );
}
