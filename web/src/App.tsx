import { lazy, Suspense, useEffect } from "react";
import { Link, Navigate, Route, Routes, useLocation } from "react-router-dom";
import { ApiError, signInUrl } from "./api/client";
import { seedSparks, useMe } from "./api/queries";
import { useLiveStream } from "./api/stream";
import { Layout } from "./components/Layout";
import { Empty, ErrorBox, Loading } from "./components/ui";
import Alerts from "./pages/Alerts";
import Gpus from "./pages/Gpus";
import Nodes, { NodeDetailPage } from "./pages/Nodes";
import Overview from "./pages/Overview";
import SignIn from "./pages/SignIn";

// Charts (uPlot) load only on the pages that draw them.
const GpuDetail = lazy(() => import("./pages/GpuDetail"));
const Slurm = lazy(() => import("./pages/Slurm"));
const SlurmJob = lazy(() => import("./pages/Slurm").then((m) => ({ default: m.SlurmJobPage })));
const JobReport = lazy(() => import("./pages/JobReport"));
const Efficiency = lazy(() => import("./pages/Efficiency"));
// The ops agent's chat: only for those who open it.
const Agent = lazy(() => import("./pages/Agent"));

function NotFound() {
  return (
    <Empty title="Page not found">
      <Link to="/" className="text-sky-700 hover:underline">
        Back to the overview
      </Link>
    </Empty>
  );
}

function Authed() {
  const me = useMe();
  const loc = useLocation();
  const signedIn = me.isSuccess;
  const status = useLiveStream(signedIn);
  useEffect(() => {
    // Sparkline history is a nicety: ask for it once the first page has settled.
    if (!signedIn) return;
    const id = setTimeout(() => seedSparks().catch(() => undefined), 2500);
    return () => clearTimeout(id);
  }, [signedIn]);

  if (me.isPending) return <Loading what="Connecting to the control plane" />;
  if (me.isError) {
    if (me.error instanceof ApiError && me.error.status === 401)
      return <Navigate to={signInUrl(loc.pathname + loc.search)} replace />;
    return (
      <div className="p-6">
        <ErrorBox error={me.error} />
      </div>
    );
  }
  return (
    <Layout status={status}>
      <Suspense fallback={<Loading />}>
        <Routes>
          <Route path="/" element={<Overview />} />
          <Route path="/gpus" element={<Gpus />} />
          <Route path="/gpus/:node/:index" element={<GpuDetail />} />
          <Route path="/nodes" element={<Nodes />} />
          <Route path="/nodes/:name" element={<NodeDetailPage />} />
          <Route path="/slurm" element={<Slurm />} />
          <Route path="/slurm/jobs/:id" element={<SlurmJob />} />
          <Route path="/slurm/jobs/:id/report" element={<JobReport />} />
          <Route path="/efficiency" element={<Efficiency />} />
          <Route path="/alerts" element={<Alerts />} />
          <Route path="/agent" element={<Agent />} />
          <Route path="*" element={<NotFound />} />
        </Routes>
      </Suspense>
    </Layout>
  );
}

export default function App() {
  return (
    <Routes>
      <Route path="/signin" element={<SignIn />} />
      <Route path="/*" element={<Authed />} />
    </Routes>
  );
}
