import type { GpuHistory } from "../api/types";

export const RANGES = ["1h", "6h", "24h", "7d"] as const;
export type Range = (typeof RANGES)[number];
export const RANGE_SECONDS: Record<Range, number> = { "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

export function isRange(s: string | null | undefined): s is Range {
  return !!s && (RANGES as readonly string[]).includes(s);
}

export interface ChartSpec {
  metric: string;
  title: string;
  unit: string;
  scale?: (v: number) => number;
  max?: number;
}

/** The GPU detail page's charts: DCGM metric, title, unit and conversion for display. */
export const CHARTS: ChartSpec[] = [
  { metric: "DCGM_FI_DEV_GPU_UTIL", title: "Utilization", unit: "%", max: 100 },
  { metric: "DCGM_FI_DEV_FB_USED", title: "Memory used", unit: "GiB", scale: (v) => v / 1024 },
  { metric: "DCGM_FI_DEV_GPU_TEMP", title: "Temperature", unit: "°C" },
  { metric: "DCGM_FI_DEV_POWER_USAGE", title: "Power", unit: "W" },
  { metric: "DCGM_FI_DEV_SM_CLOCK", title: "SM clock", unit: "MHz" },
  { metric: "DCGM_FI_DEV_MEM_COPY_UTIL", title: "Memory bandwidth", unit: "%", max: 100 },
];

/**
 * One series as uPlot's columnar data on a regular time grid from start to end by step:
 * missing samples become null (a gap), never an invented value.
 */
export function toColumns(
  points: ReadonlyArray<readonly [number, number]>,
  start: number,
  end: number,
  step: number,
  scale?: (v: number) => number,
): [number[], (number | null)[]] {
  const n = Math.max(0, Math.floor((end - start) / step) + 1);
  if (n > 20_000 || n === 0) {
    // Not a grid we can lay out: plot the points as they come.
    return [points.map((p) => p[0]), points.map((p) => (scale ? scale(p[1]) : p[1]))];
  }
  const xs = new Array<number>(n);
  const ys = new Array<number | null>(n).fill(null);
  for (let i = 0; i < n; i++) xs[i] = start + i * step;
  for (const [t, v] of points) {
    const i = Math.round((t - start) / step);
    if (i >= 0 && i < n && Number.isFinite(v)) ys[i] = scale ? scale(v) : v;
  }
  return [xs, ys];
}

/**
 * The window a history chart shows: from the first sample that exists (on the step grid) to
 * the window's end, so fresh data fills the chart instead of a sliver at its right edge; never
 * wider than the window asked for, never shorter than `minSpan` seconds. With no sample at
 * all it is the whole window.
 */
export function fitWindow(
  h: { start: number; end: number; step: number; series: Record<string, ReadonlyArray<readonly [number, number]>> },
  minSpan = 60,
): { start: number; end: number; fitted: boolean; first: number | null } {
  let first = Infinity;
  for (const pts of Object.values(h.series))
    for (const p of pts)
      if (Number.isFinite(p[1]) && p[0] < first) first = p[0];
  if (!Number.isFinite(first) || first <= h.start || !(h.step > 0)) return { start: h.start, end: h.end, fitted: false, first: Number.isFinite(first) ? first : null };
  const from = Math.min(first, h.end - minSpan);
  const start = Math.max(h.start, h.start + Math.floor((from - h.start) / h.step) * h.step);
  return { start, end: h.end, fitted: start > h.start, first };
}

export function seriesOf(h: GpuHistory, metric: string): ReadonlyArray<readonly [number, number]> {
  return (h.series[metric] ?? []) as ReadonlyArray<readonly [number, number]>;
}

/** min/mean/max of the non-null values (for a chart's legend). */
export function stats(ys: ReadonlyArray<number | null>): { min: number; mean: number; max: number; last: number } | null {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let n = 0;
  let last: number | null = null;
  for (const y of ys)
    if (y !== null) {
      if (y < min) min = y;
      if (y > max) max = y;
      sum += y;
      n++;
      last = y;
    }
  return n ? { min, max, mean: sum / n, last: last as number } : null;
}
