import { describe, expect, it } from "vitest";
import {
  durationProblem,
  isHeld,
  jobActions,
  jobCommand,
  nodeAction,
  nodeCommand,
  reasonProblem,
  silenceDraft,
  silenceSummary,
} from "./actions";

describe("job actions", () => {
  it("offers what applies to the job's state", () => {
    expect(jobActions({ state: "RUNNING" })).toEqual(["cancel"]);
    expect(jobActions({ state: "PENDING", reason: "Resources" })).toEqual(["hold", "cancel"]);
    expect(jobActions({ state: "PENDING", reason: "JobHeldUser" })).toEqual(["release", "cancel"]);
    expect(jobActions({ state: "PENDING", reason: "(JobHeldAdmin)" })).toEqual(["release", "cancel"]);
    expect(jobActions({ state: "COMPLETED" })).toEqual([]);
    expect(jobActions({ state: "CANCELLED" })).toEqual([]);
    expect(isHeld({ state: "RUNNING", reason: "JobHeldUser" })).toBe(false);
  });
  it("names the Slurm command each one is", () => {
    expect(jobCommand("cancel", 42)).toBe("scancel 42");
    expect(jobCommand("hold", 42)).toBe("scontrol hold 42");
    expect(jobCommand("release", "42")).toBe("scontrol release 42");
  });
});

describe("node actions", () => {
  it("drains a healthy node and resumes a drained or down one", () => {
    expect(nodeAction({ state: "idle", flags: [] })).toBe("drain");
    expect(nodeAction({ state: "mixed", flags: [] })).toBe("drain");
    expect(nodeAction({ state: "idle", flags: ["DRAIN"] })).toBe("resume");
    expect(nodeAction({ state: "drained" })).toBe("resume");
    expect(nodeAction({ state: "down*" })).toBe("resume");
  });
  it("quotes the reason as scontrol takes it", () => {
    expect(nodeCommand("drain", "node2", " fan noise ")).toBe('scontrol update NodeName=node2 State=DRAIN Reason="fan noise"');
    expect(reasonProblem("")).toMatch(/Say why/);
    expect(reasonProblem('fan "noise"')).toMatch(/double quotes/);
    expect(reasonProblem("fan's noise")).toBeNull();
    expect(nodeCommand("resume", "node2")).toBe("scontrol update NodeName=node2 State=RESUME");
  });
});

describe("silences", () => {
  it("are prefilled from the alert", () => {
    const d = silenceDraft({ rule: "gpu_idle", subject: "node1/gpu0" });
    expect(d).toEqual({ rule: "gpu_idle", subject: "node1/gpu0", duration: "2h", comment: "" });
    expect(silenceSummary(d)).toBe("silence rule gpu_idle on node1/gpu0 for 2h");
  });
  it("check the duration the way the API reads it", () => {
    expect(durationProblem("30m")).toBeNull();
    expect(durationProblem("1.5h")).toBeNull();
    expect(durationProblem("2 hours")).toMatch(/30m, 2h or 1d/);
    expect(durationProblem("")).not.toBeNull();
  });
});
