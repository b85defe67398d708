import { describe, expect, it } from "vitest";
import { isRange, stats, toColumns } from "./series";
import { SparkStore } from "./spark";
import { nodeStateTone, pendingReasonWords } from "./slurm";

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

describe("sparklines", () => {
  it("keeps the last N points and ignores repeats and gaps", () => {
    const s = new SparkStore(3);
    for (let t = 1; t <= 5; t++) s.push("a", t, t * 10);
    s.push("a", 5, 99);
    s.push("a", 6, null);
    expect(s.get("a")).toEqual([30, 40, 50]);
    s.seed("a", [[0, 1]]);
    expect(s.get("a")).toEqual([30, 40, 50]);
    s.seed("b", [[1, 5], [2, Number.NaN], [3, 7]]);
    expect(s.get("b")).toEqual([5, 7]);
  });
});

describe("slurm words", () => {
  it("explains pending reasons", () => {
    expect(pendingReasonWords("Resources")).toMatch(/not enough free/);
    expect(pendingReasonWords("(Priority)")).toMatch(/higher-priority/);
    expect(pendingReasonWords("QOSMaxFooLimit")).toBe("a QOS limit (QOSMaxFooLimit)");
    expect(pendingReasonWords("Weird")).toBe("Weird");
  });
  it("tones node states", () => {
    expect(nodeStateTone("down*")).toBe("bad");
    expect(nodeStateTone("drained")).toBe("warn");
    expect(nodeStateTone("MIXED+DRAIN")).toBe("busy");
    expect(nodeStateTone("idle")).toBe("ok");
  });
});
