import { describe, expect, it } from "vitest";
import { fitWindow, isRange, stats, toColumns } from "./series";
import { sparkXs, SparkStore } from "./spark";
import { nodeStateTone } from "./slurm";

describe("history shaping", () => {
  it("lays points on a regular grid with gaps as null", () => {
    const [xs, ys] = toColumns([[100, 1], [120, 3]], 100, 130, 10);
    expect(xs).toEqual([100, 110, 120, 130]);
    expect(ys).toEqual([1, null, 3, null]);
  });
  it("applies a unit conversion", () => {
    const [, ys] = toColumns([[0, 2048]], 0, 0, 1, (v) => v / 1024);
    expect(ys).toEqual([2]);
  });
  it("summarises a series ignoring gaps", () => {
    expect(stats([1, null, 3])).toEqual({ min: 1, max: 3, mean: 2, last: 3 });
    expect(stats([null])).toBeNull();
  });
  it("knows its ranges", () => {
    expect(isRange("24h")).toBe(true);
    expect(isRange("2h")).toBe(false);
  });
});

describe("history window fit", () => {
  const h = (series: Record<string, [number, number][]>) => ({ start: 0, end: 3600, step: 15, series });
  it("starts at the first sample, on the step grid, not at the range's start", () => {
    const w = fitWindow(h({ a: [[3000, 1], [3015, 2]], b: [[3100, 5]] }));
    expect(w).toEqual({ start: 3000, end: 3600, fitted: true, first: 3000 });
    expect(fitWindow(h({ a: [[3007, 1]] })).start).toBe(3000); // grid point at or before it
  });
  it("keeps the whole window when data reaches back to its start, or there is none", () => {
    expect(fitWindow(h({ a: [[0, 1], [3600, 2]] }))).toEqual({ start: 0, end: 3600, fitted: false, first: 0 });
    expect(fitWindow(h({}))).toEqual({ start: 0, end: 3600, fitted: false, first: null });
    expect(fitWindow(h({ a: [[3000, Number.NaN]] })).fitted).toBe(false);
  });
  it("never shorter than minSpan seconds", () => {
    expect(fitWindow(h({ a: [[3595, 1]] })).start).toBe(3540); // a minute, on the grid
    expect(fitWindow(h({ a: [[3595, 1]] }), 30).start).toBe(3570);
  });
  it("the fitted columns begin at the first sample", () => {
    const w = fitWindow(h({ a: [[3540, 1], [3600, 2]] }));
    const [xs, ys] = toColumns([[3540, 1], [3600, 2]], w.start, w.end, 15);
    expect(xs[0]).toBe(3540);
    expect(ys.filter((y) => y !== null)).toEqual([1, 2]);
  });
});

describe("sparklines", () => {
  it("keeps points a spacing apart, the newest updated in place, none outside the window", () => {
    const s = new SparkStore(3, 30); // a point per 10 s over 30 s
    s.push("a", 0, 1);
    s.push("a", 1, 2);
    expect(s.series("a")).toEqual({ t: [0, 1], v: [1, 2] });
    s.push("a", 5, 3); // within 10 s of the point before the newest: replaces the newest
    expect(s.series("a")).toEqual({ t: [0, 5], v: [1, 3] });
    s.push("a", 5, 99); // the same scrape twice
    s.push("a", 6, null); // a gap
    expect(s.get("a")).toEqual([1, 3]);
    s.push("a", 12, 4);
    s.push("a", 25, 5);
    s.push("a", 40, 6);
    expect(s.series("a").t).toEqual([12, 25, 40]); // 0 and 5 aged out / over capacity
  });
  it("seeds stored history before the live points", () => {
    const s = new SparkStore(180, 1800);
    s.push("a", 1000, 50);
    s.seed("a", [[100, 1], [105, 2], [130, 3], [995, 4], [1000, 5]]);
    expect(s.series("a")).toEqual({ t: [100, 130, 1000], v: [1, 3, 50] });
    s.seed("b", [[1, 5], [20, Number.NaN], [30, 7]]);
    expect(s.get("b")).toEqual([5, 7]);
  });
  it("fits the time axis to the samples that exist, edge to edge", () => {
    expect(sparkXs([100, 110, 120], 96)).toEqual([0, 48, 96]);
    expect(sparkXs([100, 103], 96)).toEqual([0, 96]); // 3 s of data still spans the card
    expect(sparkXs([100], 96)).toEqual([96]);
  });
});

describe("slurm words", () => {
  it("tones node states", () => {
    expect(nodeStateTone("down*")).toBe("bad");
    expect(nodeStateTone("drained")).toBe("warn");
    expect(nodeStateTone("MIXED+DRAIN")).toBe("busy");
    expect(nodeStateTone("idle")).toBe("ok");
  });
});
