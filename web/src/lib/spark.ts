// Recent utilization per GPU for the cards' sparklines: seeded from the metrics store, then
// live updates. Kept outside React: 1,000 GPUs × 180 points is a few MB at most.

export const SPARK_POINTS = 180;
/** How far back a sparkline reaches. */
export const SPARK_WINDOW_S = 1800;

export interface SparkSeries {
  t: readonly number[];
  v: readonly number[];
}

const EMPTY: SparkSeries = { t: [], v: [] };

/**
 * Points at least `window / capacity` seconds apart (the newest may be closer: it is replaced
 * by the next update until that spacing is reached), none older than `window`, at most
 * `capacity`: by default a point per 10 s over the last 30 minutes.
 */
export class SparkStore {
  private data = new Map<string, { t: number[]; v: number[] }>();
  version = 0;

  constructor(
    private readonly capacity = SPARK_POINTS,
    private readonly window = SPARK_WINDOW_S,
  ) {}

  private get spacing(): number {
    return this.window / this.capacity;
  }

  push(key: string, t: number, v: number | null | undefined): void {
    if (typeof v !== "number" || !Number.isFinite(v)) return;
    let s = this.data.get(key);
    if (!s) this.data.set(key, (s = { t: [], v: [] }));
    const n = s.t.length;
    if (n && s.t[n - 1] >= t) return; // the same scrape seen twice
    if (n >= 2 && t - s.t[n - 2] < this.spacing) {
      s.t[n - 1] = t;
      s.v[n - 1] = v;
    } else {
      s.t.push(t);
      s.v.push(v);
    }
    this.trim(s, t);
    this.version++;
  }

  /** Seed from stored history (oldest first): it fills in before the first live point. */
  seed(key: string, points: ReadonlyArray<readonly [number, number]>): void {
    const s = this.data.get(key) ?? { t: [], v: [] };
    const first = s.t.length ? s.t[0] : Infinity;
    const older = points.filter((p) => Number.isFinite(p[1]) && Number.isFinite(p[0]) && p[0] < first - this.spacing / 2);
    if (!older.length) return;
    const t: number[] = [];
    const v: number[] = [];
    for (const [pt, pv] of older) {
      if (t.length && pt - t[t.length - 1] < this.spacing) continue;
      t.push(pt);
      v.push(pv);
    }
    s.t = [...t, ...s.t];
    s.v = [...v, ...s.v];
    this.trim(s, s.t[s.t.length - 1]);
    this.data.set(key, s);
    this.version++;
  }

  private trim(s: { t: number[]; v: number[] }, now: number): void {
    let drop = 0;
    while (drop < s.t.length && s.t[drop] < now - this.window) drop++;
    drop = Math.max(drop, s.t.length - this.capacity);
    if (drop > 0) {
      s.t.splice(0, drop);
      s.v.splice(0, drop);
    }
  }

  get(key: string): readonly number[] {
    return this.data.get(key)?.v ?? [];
  }

  series(key: string): SparkSeries {
    return this.data.get(key) ?? EMPTY;
  }
}

export const sparks = new SparkStore();

/**
 * x positions (0..width) for a sparkline: the time axis fits the samples that exist, from the
 * first to the last, over the whole width — a GPU watched for two minutes draws two minutes
 * edge to edge, not a sliver at the right.
 */
export function sparkXs(t: readonly number[], width: number): number[] {
  if (t.length < 2) return t.map(() => width);
  const t0 = t[0];
  const span = t[t.length - 1] - t0;
  if (span <= 0) return t.map((_, i) => (i / (t.length - 1)) * width);
  return t.map((x) => ((x - t0) / span) * width);
}
