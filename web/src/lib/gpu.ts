import type { GpuState, GpuView, NodeView } from "../api/types";

export const STATES: GpuState[] = ["busy", "allocated_idle", "idle", "down"];

export const STATE_LABEL: Record<GpuState, string> = {
  busy: "Busy",
  idle: "Idle",
  allocated_idle: "Allocated, idle",
  down: "Down",
};

export const STATE_HELP: Record<GpuState, string> = {
  busy: "working: utilization at or above the idle threshold",
  idle: "no job and no load: available",
  allocated_idle: "held by a job but doing nothing: the most wasted GPU",
  down: "the GPU or its node does not answer",
};

/** Tailwind classes per state: a dot/bar colour, a soft badge, and a card accent. */
export const STATE_STYLE: Record<GpuState, { dot: string; badge: string; ring: string; hex: string }> = {
  busy: {
    dot: "bg-emerald-500",
    badge: "bg-emerald-100 text-emerald-800 dark:bg-emerald-500/15 dark:text-emerald-300",
    ring: "border-l-emerald-500",
    hex: "#10b981",
  },
  allocated_idle: {
    dot: "bg-amber-500",
    badge: "bg-amber-100 text-amber-900 dark:bg-amber-500/15 dark:text-amber-300",
    ring: "border-l-amber-500",
    hex: "#f59e0b",
  },
  idle: {
    dot: "bg-slate-400",
    badge: "bg-slate-100 text-slate-700 dark:bg-slate-500/20 dark:text-slate-300",
    ring: "border-l-slate-400",
    hex: "#94a3b8",
  },
  down: {
    dot: "bg-rose-500",
    badge: "bg-rose-100 text-rose-800 dark:bg-rose-500/15 dark:text-rose-300",
    ring: "border-l-rose-500",
    hex: "#f43f5e",
  },
};

export function isGpuState(s: string | null | undefined): s is GpuState {
  return !!s && (STATES as string[]).includes(s);
}

export function gpuKey(g: { node: string; index: number }): string {
  return `${g.node}/${g.index}`;
}

export type Counts = Record<GpuState, number> & { total: number };

export function countStates(gpus: readonly GpuView[]): Counts {
  const c: Counts = { total: gpus.length, busy: 0, idle: 0, allocated_idle: 0, down: 0 };
  for (const g of gpus) c[g.state] += 1;
  return c;
}

export interface GpuFilter {
  node?: string;
  state?: GpuState;
  job?: string;
  user?: string;
  q?: string;
}

/** One word (or "job N" pair) of the GPUs page's search box. */
export type SearchTerm = { kind: "job"; id: string } | { kind: "text"; text: string };

const JOB_ID = /^\d+(?:_\d+)?$/;

/**
 * The search box's grammar: "job 4", "job:4", "job4", "#4" or a bare "4" mean job id 4 (exact,
 * so 4 is not 14 or 40); any other word is matched as text. Every term must match.
 */
export function parseSearch(q: string | undefined): SearchTerm[] {
  const words = (q ?? "").trim().toLowerCase().split(/\s+/).filter(Boolean);
  const out: SearchTerm[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    const tagged = /^(?:job[:#]?|#)(\d+(?:_\d+)?)$/.exec(w);
    if (tagged) out.push({ kind: "job", id: tagged[1] });
    else if ((w === "job" || w === "job:") && JOB_ID.test(words[i + 1] ?? "")) out.push({ kind: "job", id: words[++i] });
    else if (JOB_ID.test(w)) out.push({ kind: "job", id: w });
    else out.push({ kind: "text", text: w });
  }
  return out;
}

/** Job `id` or one of its array tasks (4 matches 4_1). */
function sameJob(jobId: string, id: string): boolean {
  return jobId === id || jobId.startsWith(`${id}_`);
}

/**
 * The GPUs page's filters; job and user match exactly, `q` is a search (see parseSearch) over
 * node, GPU, model, UUID, job ids, users, partitions and, when `jobNames` is given (Slurm's
 * queue: job id → name), job names.
 */
export function filterGpus(gpus: readonly GpuView[], f: GpuFilter, jobNames?: ReadonlyMap<string, string>): GpuView[] {
  const terms = parseSearch(f.q);
  return gpus.filter((g) => {
    if (f.node && g.node !== f.node) return false;
    if (f.state && g.state !== f.state) return false;
    if (f.job && !g.jobs.some((j) => j.job_id === f.job)) return false;
    if (f.user && !g.jobs.some((j) => j.user === f.user)) return false;
    if (!terms.length) return true;
    const hay = [
      g.node,
      `${g.node}/${g.index}`,
      g.name,
      g.uuid,
      ...g.jobs.flatMap((j) => [`job ${j.job_id}`, j.user, j.partition, jobNames?.get(j.job_id) ?? ""]),
    ]
      .join("\n")
      .toLowerCase();
    return terms.every((t) => (t.kind === "job" ? g.jobs.some((j) => sameJob(j.job_id, t.id)) : hay.includes(t.text)));
  });
}

export interface NodeGroup {
  node: string;
  gpus: GpuView[];
  counts: Counts;
}

/** GPUs grouped by node, nodes in name order (natural: node2 before node10), GPUs by index. */
export function groupByNode(gpus: readonly GpuView[]): NodeGroup[] {
  const by = new Map<string, GpuView[]>();
  for (const g of gpus) {
    const list = by.get(g.node);
    if (list) list.push(g);
    else by.set(g.node, [g]);
  }
  return [...by.entries()]
    .sort(([a], [b]) => naturalCompare(a, b))
    .map(([node, list]) => {
      list.sort((a, b) => a.index - b.index);
      return { node, gpus: list, counts: countStates(list) };
    });
}

const collator = new Intl.Collator("en", { numeric: true, sensitivity: "base" });
export function naturalCompare(a: string, b: string): number {
  return collator.compare(a, b);
}

/** Distinct users and jobs on the GPUs, for the filter menus. */
export function jobsAndUsers(gpus: readonly GpuView[]): { jobs: string[]; users: string[] } {
  const jobs = new Set<string>();
  const users = new Set<string>();
  for (const g of gpus)
    for (const j of g.jobs) {
      if (j.job_id) jobs.add(j.job_id);
      if (j.user) users.add(j.user);
    }
  return { jobs: [...jobs].sort(naturalCompare), users: [...users].sort(naturalCompare) };
}

// NVML clock-event (throttle) reasons as gpuwarden reports them, in plain words.
const THROTTLE_WORDS: Record<string, string> = {
  gpu_idle: "idle (clocks lowered, harmless)",
  applications_clocks_setting: "application clock setting",
  sw_power_cap: "power cap",
  hw_slowdown: "hardware slowdown",
  sync_boost: "sync boost",
  sw_thermal_slowdown: "thermal (software)",
  hw_thermal_slowdown: "thermal (hardware)",
  hw_power_brake_slowdown: "power brake",
  display_clock_setting: "display clock setting",
};

/** Reasons that slow real work down (not the harmless "GPU idle" one). */
export function harmfulThrottles(reasons: readonly string[]): string[] {
  return reasons.filter((r) => r !== "gpu_idle" && r !== "none");
}

export function throttleWords(reason: string): string {
  return THROTTLE_WORDS[reason] ?? reason.replace(/_/g, " ");
}

export function nodeHealth(n: NodeView): { label: string; tone: "ok" | "warn" | "bad" } {
  if (!n.up) return { label: "down", tone: "bad" };
  const h = (n.health ?? "ok").toLowerCase();
  if (h === "ok" || h === "healthy") return { label: n.health ?? "ok", tone: "ok" };
  if (h === "degraded" || h === "warning") return { label: h, tone: "warn" };
  return { label: h, tone: "bad" };
}
