import { keepPreviousData, useQuery, type QueryClient } from "@tanstack/react-query";
import { sparks } from "../lib/spark";
import { gpuKey } from "../lib/gpu";
import type { Range } from "../lib/series";
import { api, ApiError, unwrap } from "./client";
import type {
  AlertView,
  EfficiencyReport,
  GpuDetail,
  GpuHistory,
  GpuView,
  JobReport,
  Me,
  NodeDetail,
  NodeView,
  Overview,
  QueryResult,
  ReclaimEvent,
  ReclaimPlan,
  SlurmJob,
  SlurmJobDetail,
  SlurmNode,
  SlurmPartition,
  Status,
} from "./types";

export const keys = {
  me: ["me"] as const,
  overview: ["overview"] as const,
  gpus: ["gpus"] as const,
  nodes: ["nodes"] as const,
  node: (name: string) => ["node", name] as const,
  gpu: (node: string, index: number) => ["gpu", node, index] as const,
  history: (node: string, index: number, w: HistoryWindow) => ["history", node, index, w] as const,
  status: ["status"] as const,
  alerts: ["alerts"] as const,
  reclaim: ["reclaim"] as const,
};

// Live data also arrives over the stream; polling is the fallback when the stream is down.
const LIVE = { refetchInterval: 30_000 } as const;

export const useMe = () =>
  useQuery({
    queryKey: keys.me,
    queryFn: () => unwrap<Me>(api.GET("/api/v1/me")),
    staleTime: 5 * 60_000,
    retry: (n, e) => !(e instanceof ApiError && e.status === 401) && n < 2,
  });

export const useOverview = () =>
  useQuery({ queryKey: keys.overview, queryFn: () => unwrap<Overview>(api.GET("/api/v1/overview")), ...LIVE });

export const useGpus = () =>
  useQuery({
    queryKey: keys.gpus,
    queryFn: async () => {
      const gpus = await unwrap<GpuView[]>(api.GET("/api/v1/gpus"));
      recordSparks(gpus, Date.now() / 1000);
      return gpus;
    },
    ...LIVE,
  });

export const useNodes = () =>
  useQuery({ queryKey: keys.nodes, queryFn: () => unwrap<NodeView[]>(api.GET("/api/v1/nodes")), ...LIVE });

export const useNode = (name: string) =>
  useQuery({
    queryKey: keys.node(name),
    queryFn: () => unwrap<NodeDetail>(api.GET("/api/v1/nodes/{name}", { params: { path: { name } } })),
    ...LIVE,
  });

export const useGpu = (node: string, index: number) =>
  useQuery({
    queryKey: keys.gpu(node, index),
    queryFn: () => unwrap<GpuDetail>(api.GET("/api/v1/gpus/{node}/{index}", { params: { path: { node, index } } })),
    ...LIVE,
  });

// Polled: the banner for a store that cannot write (a full disk) reads it.
export const useStatus = () =>
  useQuery({ queryKey: keys.status, queryFn: () => unwrap<Status>(api.GET("/api/v1/status")), refetchInterval: 15_000 });

// Slurm: only asked for when the overview says Slurm is configured.
const SLURM = { refetchInterval: 15_000, retry: false } as const;
export const useSlurmPartitions = (enabled: boolean) =>
  useQuery({ queryKey: ["slurm", "partitions"], queryFn: () => unwrap<SlurmPartition[]>(api.GET("/api/v1/slurm/partitions")), enabled, ...SLURM });
export const useSlurmNodes = (enabled: boolean) =>
  useQuery({ queryKey: ["slurm", "nodes"], queryFn: () => unwrap<SlurmNode[]>(api.GET("/api/v1/slurm/nodes")), enabled, ...SLURM });
export const useSlurmJobs = (enabled: boolean) =>
  useQuery({ queryKey: ["slurm", "jobs"], queryFn: () => unwrap<SlurmJob[]>(api.GET("/api/v1/slurm/jobs")), enabled, ...SLURM });
export const useSlurmJob = (id: number) =>
  useQuery({
    queryKey: ["slurm", "job", id],
    queryFn: () => unwrap<SlurmJobDetail>(api.GET("/api/v1/slurm/jobs/{job_id}", { params: { path: { job_id: id } } })),
    enabled: Number.isInteger(id) && id > 0,
    ...SLURM,
  });

/** A job's report (`jobstats JOBID`): stored once it ended, else computed now. */
export const useJobReport = (id: number) =>
  useQuery({
    queryKey: ["slurm", "report", id],
    queryFn: () => unwrap<JobReport>(api.GET("/api/v1/slurm/jobs/{job_id}/report", { params: { path: { job_id: id } } })),
    enabled: Number.isInteger(id) && id > 0,
    // a running job's figures grow; a stored summary never changes
    refetchInterval: (q) => (q.state.data?.source === "stored" || q.state.data?.finished ? false : 30_000),
    retry: false,
  });

export type EfficiencyBy = "user" | "account" | "partition";
export const useEfficiency = (since: string, by: EfficiencyBy) =>
  useQuery({
    queryKey: ["reports", "efficiency", since, by],
    queryFn: () => unwrap<EfficiencyReport>(api.GET("/api/v1/reports/efficiency", { params: { query: { since, by } } })),
    placeholderData: keepPreviousData,
    refetchInterval: 60_000,
  });

/** The reclaim plan: every job reclaim watches, its stage and next step, $ saved. */
export const useReclaim = () =>
  useQuery({
    queryKey: keys.reclaim,
    queryFn: () => unwrap<ReclaimPlan>(api.GET("/api/v1/reclaim")),
    // the ladder moves every reclaim interval; with nothing configured, asking rarely is enough
    refetchInterval: (q) => (q.state.data && !q.state.data.mode && !q.state.data.nodes.length ? 60_000 : 5_000),
  });

/** Reclaim's recent events (when each warning went out); only asked for while jobs are warned. */
export const useReclaimHistory = (enabled: boolean) =>
  useQuery({
    queryKey: [...keys.reclaim, "history"],
    queryFn: () => unwrap<ReclaimEvent[]>(api.GET("/api/v1/reclaim/history", { params: { query: { limit: 200 } } })),
    enabled,
    refetchInterval: 10_000,
    retry: false,
  });

export type AlertFilter = "firing" | "pending" | "resolved" | "all";
export const useAlerts = (state: AlertFilter) =>
  useQuery({
    queryKey: [...keys.alerts, state],
    queryFn: () => unwrap<AlertView[]>(api.GET("/api/v1/alerts", { params: { query: { state, limit: 200 } } })),
    refetchInterval: 15_000,
  });

export type HistoryWindow = { range: Range } | { start: number; end: number };

export const useGpuHistory = (node: string, index: number, w: HistoryWindow, enabled = true) =>
  useQuery({
    enabled,
    queryKey: keys.history(node, index, w),
    queryFn: () =>
      unwrap<GpuHistory>(
        api.GET("/api/v1/gpus/{node}/{index}/history", {
          params: {
            path: { node, index },
            query: "range" in w ? { range: w.range } : { start: w.start, end: w.end, range: undefined },
          },
        }),
      ),
    placeholderData: keepPreviousData,
    // A relative window follows the clock; a zoomed (absolute) one never changes.
    refetchInterval: "range" in w ? (w.range === "1h" ? 15_000 : 60_000) : false,
  });

/** Seed the sparklines with the last 30 minutes of utilization of every GPU (one query). */
export async function seedSparks(): Promise<void> {
  const end = Date.now() / 1000;
  const res = await unwrap<QueryResult>(
    api.GET("/api/v1/query", {
      params: { query: { selector: "DCGM_FI_DEV_GPU_UTIL", start: end - 1800, end, step: 30, limit: 10_000 } },
    }),
  );
  for (const s of res.series) {
    const node = s.labels.node ?? s.labels.hostname;
    const gpu = s.labels.gpu;
    if (node !== undefined && gpu !== undefined) sparks.seed(`${node}/${gpu}`, s.points);
  }
}

export function recordSparks(gpus: readonly GpuView[], t: number): void {
  for (const g of gpus) sparks.push(gpuKey(g), t, g.utilization);
}

/** Apply one live update from the stream to the cache: no refetch, no reload. */
export function applyLive(qc: QueryClient, event: "overview" | "gpus", data: unknown): void {
  if (event === "overview") {
    qc.setQueryData<Overview>(keys.overview, data as Overview);
  } else {
    const gpus = data as GpuView[];
    recordSparks(gpus, Date.now() / 1000);
    qc.setQueryData<GpuView[]>(keys.gpus, gpus);
    // Details (processes, fields) and node rows are not in the stream: refresh what is shown.
    void qc.invalidateQueries({ queryKey: ["gpu"], refetchType: "active" });
    void qc.invalidateQueries({ queryKey: ["node"], refetchType: "active" });
    void qc.invalidateQueries({ queryKey: keys.nodes, refetchType: "active" });
    void qc.invalidateQueries({ queryKey: keys.alerts, refetchType: "active" });
  }
}
