import { describe, expect, it } from "vitest";
import type { ReclaimCandidate, ReclaimEvent, ReclaimNode } from "../api/types";
import {
  candidateFor,
  hhmm,
  lastWarnings,
  leverCommand,
  leverConfirm,
  leverLabel,
  levers,
  nodeStageText,
  stageText,
  stageTone,
  warnedAt,
} from "./reclaim";

// local wall-clock times, so the texts read the same in any time zone
const at = (h: number, m: number, s = 0) => new Date(2025, 0, 15, h, m, s).getTime() / 1000;

const cand = (over: Partial<ReclaimCandidate> = {}): ReclaimCandidate => ({
  key: "42",
  kind: "job",
  user: "alice",
  name: "train",
  partition: "gpu",
  gpus: ["node1/gpu0", "node1/gpu1"],
  status: "idle",
  why: "2 of 2 GPUs below 5 %",
  idle_since: at(20, 0),
  warnings_sent: 0,
  last_warned_at: null,
  next_event: "warn",
  next_at: at(20, 31),
  rate_per_hour: 4,
  burned: 1,
  ...over,
});
const auto = { mode: "auto", action: "cancel", warn_after_s: [1860, 3600] };
const dry = { ...auto, mode: "dry-run" };

describe("reclaim stage text", () => {
  it("says when the next warning goes out", () => {
    expect(hhmm(at(9, 5))).toBe("09:05");
    expect(stageText(cand(), auto, null)).toBe("idle since 20:00, warns at 20:31");
    expect(stageText(cand(), auto, null, at(20, 30))).toBe("idle since 20:00, warns at 20:31 (in 1m)");
    expect(stageText(cand(), dry, null)).toBe("idle since 20:00, would warn at 20:31 (dry-run)");
  });
  it("says when it was warned and when the action comes", () => {
    const warned = cand({ warnings_sent: 2, next_event: "act", next_at: at(21, 31) });
    expect(stageText(warned, auto, at(20, 31))).toBe("warned 20:31 (2 of 2), cancels at 21:31");
    expect(stageText(warned, { ...auto, action: "hold" }, at(20, 31))).toBe(
      "warned 20:31 (2 of 2), requeues and holds at 21:31",
    );
    expect(stageText(warned, { ...auto, mode: "approve" }, at(20, 31))).toBe(
      "warned 20:31 (2 of 2), asks an operator to cancel it at 21:31",
    );
    expect(stageText(warned, dry, at(20, 31), at(21, 0))).toBe(
      "would have warned 20:31 (2 of 2), would cancel at 21:31 (in 31m, dry-run)",
    );
    const one = { ...auto, warn_after_s: [1860] };
    expect(stageText(cand({ warnings_sent: 1, next_event: "act", next_at: at(21, 31) }), one, at(20, 31))).toBe(
      "warned 20:31, cancels at 21:31",
    );
  });
  it("names a held-up ladder and the other stages", () => {
    const capped = cand({ warnings_sent: 2, next_event: "act", next_at: at(21, 31), why: "waiting: the cap of actions per cycle is reached" });
    expect(stageText(capped, auto, at(20, 31))).toContain("· waiting: the cap");
    expect(stageText(cand({ status: "exempt", why: "exempted by olivia" }), auto, null)).toBe("exempted by olivia");
    expect(stageText(cand({ status: "exempt", why: "user bob is exempt" }), auto, null)).toBe("exempt: user bob is exempt");
    expect(stageText(cand({ status: "acted" }), auto, null)).toBe("cancelled");
    expect(stageText(cand({ status: "acted" }), dry, null)).toBe("would have cancelled (dry-run)");
    expect(stageText(cand({ status: "unknown", why: "paused: no fresh data for node3/gpu0" }), auto, null)).toBe(
      "paused: no fresh data for node3/gpu0",
    );
    expect(stageText(cand({ status: "grace", why: "started under 10m ago" }), auto, null)).toBe(
      "grace period: started under 10m ago",
    );
  });
  it("tones the stages", () => {
    expect(stageTone(cand())).toBe("busy");
    expect(stageTone(cand({ warnings_sent: 1 }))).toBe("warn");
    expect(stageTone(cand({ status: "acted" }))).toBe("bad");
    expect(stageTone(cand({ status: "exempt" }))).toBe("ok");
  });
});

describe("when a job was warned", () => {
  const ev = (key: string, event: string, t: number): ReclaimEvent => ({
    id: 1,
    at: t,
    key,
    kind: "job",
    event,
    mode: "auto",
    detail: {},
    rate_per_hour: null,
    saved_from: null,
    saved_until: null,
  });
  it("takes the history's latest warning, else the ladder's offset", () => {
    const h = lastWarnings([ev("42", "warned", at(20, 31)), ev("42", "warned", at(20, 45)), ev("42", "acted", at(21, 0)), ev("7", "would_warn", at(19, 0))]);
    expect(h.get("42")).toBe(at(20, 45));
    expect(h.get("7")).toBe(at(19, 0));
    const c = cand({ warnings_sent: 1 });
    expect(warnedAt(c, auto, h)).toBe(at(20, 45));
    expect(warnedAt(c, auto, new Map())).toBe(at(20, 31)); // idle since 20:00 + 1860 s
    expect(warnedAt(cand(), auto, h)).toBeNull();
    // a warning from an earlier idle streak is not this one's
    expect(warnedAt(cand({ warnings_sent: 1, idle_since: at(22, 0) }), auto, h)).toBe(at(22, 31));
  });
});

describe("reclaim levers", () => {
  it("finds the candidate of a GPU or a job", () => {
    const plan = { candidates: [cand(), cand({ key: "7", gpus: ["node2/gpu3"] })] };
    expect(candidateFor(plan, { node: "node1", index: 1 }, ["42"])?.key).toBe("42");
    expect(candidateFor(plan, { node: "node2", index: 3 }, ["7_1"])?.key).toBe("7"); // by the GPU
    expect(candidateFor(plan, { node: "node9", index: 0 }, ["7"])?.key).toBe("7");
    expect(candidateFor(plan, { node: "node9", index: 0 }, ["8"])).toBeUndefined();
    // the job just left the GPU: an older plan still lists it, the GPU shows nothing
    expect(candidateFor(plan, { node: "node1", index: 1 }, [])).toBeUndefined();
    expect(candidateFor(undefined, { node: "node1", index: 0 }, ["42"])).toBeUndefined();
  });
  it("offers what applies and shows the command", () => {
    expect(levers(cand())).toEqual(["exempt", "act"]);
    expect(levers(cand({ status: "exempt" }))).toEqual(["act"]);
    expect(levers(cand({ status: "acted" }))).toEqual([]);
    expect(leverCommand("exempt", "42_3", "cancel")).toBe("gpuwarden reclaim exempt 42_3");
    expect(leverCommand("act", "42", "cancel")).toBe("scancel 42");
    expect(leverCommand("act", "42", "requeue")).toBe("scontrol requeue 42");
    expect(leverCommand("act", "42", "hold")).toBe("scontrol requeuehold 42");
    expect(leverLabel("act", "cancel")).toBe("Cancel now");
    expect(leverLabel("exempt", "cancel")).toBe("Exempt");
    expect(leverConfirm("act", "42", "cancel")).toBe("Cancel job 42 now");
    expect(leverConfirm("act", "42", "hold")).toBe("Requeue and hold job 42 now");
    expect(leverConfirm("exempt", "42", "cancel")).toBe("Exempt job 42");
  });
  it("says a node's stage", () => {
    const n: ReclaimNode = {
      name: "pod-1",
      cluster: "c",
      status: "idle",
      why: "2 GPUs idle",
      idle_since: at(20, 0),
      warned: true,
      next_event: "act",
      next_at: at(20, 30),
      rate_per_hour: 3,
      burned: 1,
      action: "stop",
      mode: "auto",
    };
    expect(nodeStageText(n)).toBe("warned, stops at 20:30");
    expect(nodeStageText({ ...n, mode: "dry-run", warned: false })).toBe("idle since 20:00, would stop at 20:30 (dry-run)");
    expect(nodeStageText({ ...n, status: "stopped", why: "stopped at 20:30" })).toBe("stopped: stopped at 20:30");
  });
});
