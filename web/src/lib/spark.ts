// Recent utilization per GPU for the cards' sparklines: seeded from the metrics store, then
// one point per live update. Kept outside React: 1,000 GPUs × 60 points is a few KB.

export const SPARK_POINTS = 60;

export class SparkStore {
  private data = new Map<string, number[]>();
  private lastT = new Map<string, number>();
  version = 0;

  constructor(private readonly capacity = SPARK_POINTS) {}

  push(key: string, t: number, v: number | null | undefined): void {
    if (typeof v !== "number" || !Number.isFinite(v)) return;
    if ((this.lastT.get(key) ?? -Infinity) >= t) return; // the same scrape seen twice
    this.lastT.set(key, t);
    let arr = this.data.get(key);
    if (!arr) this.data.set(key, (arr = []));
    arr.push(v);
    if (arr.length > this.capacity) arr.splice(0, arr.length - this.capacity);
    this.version++;
  }

  /** Seed from stored history (oldest first); live points already present win. */
  seed(key: string, points: ReadonlyArray<readonly [number, number]>): void {
    if (this.data.get(key)?.length) return;
    const vals = points.filter((p) => Number.isFinite(p[1])).slice(-this.capacity);
    if (!vals.length) return;
    this.data.set(key, vals.map((p) => p[1]));
    this.lastT.set(key, vals[vals.length - 1][0]);
    this.version++;
  }

  get(key: string): readonly number[] {
    return this.data.get(key) ?? [];
  }
}

export const sparks = new SparkStore();
