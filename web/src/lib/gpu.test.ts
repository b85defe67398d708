import { describe, expect, it } from "vitest";
import type { GpuView } from "../api/types";
import {
  countStates,
  filterGpus,
  groupByNode,
  harmfulThrottles,
  isGpuState,
  jobsAndUsers,
  parseSearch,
  throttleWords,
} from "./gpu";

function gpu(node: string, index: number, state: GpuView["state"], job?: [string, string]): GpuView {
  return {
    node,
    index,
    uuid: `GPU-${node}-${index}`,
    name: "NVIDIA H100 80GB HBM3",
    state,
    up: state !== "down",
    simulated: true,
    utilization: state === "busy" ? 90 : 0,
    memory_used_mib: 0,
    memory_total_mib: 81920,
    temperature_c: 40,
    power_w: 100,
    power_limit_w: 700,
    sm_clock_mhz: 1980,
    throttle_reasons: [],
    xid_errors: 0,
    last_xid: null,
    processes: 0,
    jobs: job ? [{ job_id: job[0], user: job[1], partition: "gpu", has_process: true }] : [],
    cost_per_hour: 2,
    error: null,
  };
}

const fleet = [
  gpu("node10", 1, "busy", ["17", "alice"]),
  gpu("node2", 0, "idle"),
  gpu("node10", 0, "allocated_idle", ["18", "bob"]),
  gpu("node2", 1, "down"),
  gpu("node2", 2, "busy", ["17", "alice"]),
];

describe("gpu states", () => {
  it("counts states", () => {
    expect(countStates(fleet)).toEqual({ total: 5, busy: 2, idle: 1, allocated_idle: 1, down: 1 });
    expect(countStates([])).toEqual({ total: 0, busy: 0, idle: 0, allocated_idle: 0, down: 0 });
  });
  it("validates state names from the URL", () => {
    expect(isGpuState("allocated_idle")).toBe(true);
    expect(isGpuState("sleeping")).toBe(false);
    expect(isGpuState(null)).toBe(false);
  });
  it("groups by node in natural order, GPUs by index", () => {
    const groups = groupByNode(fleet);
    expect(groups.map((g) => g.node)).toEqual(["node2", "node10"]);
    expect(groups[1].gpus.map((g) => g.index)).toEqual([0, 1]);
    expect(groups[0].counts.down).toBe(1);
  });
  it("filters by node, state, job, user and text", () => {
    expect(filterGpus(fleet, { node: "node2" })).toHaveLength(3);
    expect(filterGpus(fleet, { state: "busy" })).toHaveLength(2);
    expect(filterGpus(fleet, { job: "17" }).map((g) => `${g.node}/${g.index}`)).toEqual(["node10/1", "node2/2"]);
    expect(filterGpus(fleet, { user: "bob" })).toHaveLength(1);
    expect(filterGpus(fleet, { user: "bob", state: "busy" })).toHaveLength(0);
    expect(filterGpus(fleet, { q: "node10/0" })).toHaveLength(1);
    expect(filterGpus(fleet, { q: "ALICE" })).toHaveLength(2);
    expect(filterGpus(fleet, {})).toHaveLength(5);
  });
  it("searches job ids exactly, as 'job 4', 'job:4', '#4' or a bare number", () => {
    const more = [...fleet, gpu("node4", 0, "busy", ["4", "carol"]), gpu("node4", 1, "busy", ["14", "carol"]), gpu("node5", 0, "busy", ["4_2", "dan"])];
    const keys = (q: string) => filterGpus(more, { q }).map((g) => `${g.node}/${g.index}`);
    expect(keys("job 4")).toEqual(["node4/0", "node5/0"]); // not job 14; array task 4_2 is job 4's
    expect(keys("4")).toEqual(keys("job 4"));
    expect(keys("job:4")).toEqual(keys("job 4"));
    expect(keys("#4")).toEqual(keys("job 4"));
    expect(keys("JOB 17")).toEqual(["node10/1", "node2/2"]);
    expect(keys("job 4 dan")).toEqual(["node5/0"]); // every term must match
    expect(keys("node4")).toEqual(["node4/0", "node4/1"]);
    expect(keys("job").length).toBe(6); // every GPU that has a job, while "job 4" is typed
    expect(parseSearch("job 4 alice")).toEqual([{ kind: "job", id: "4" }, { kind: "text", text: "alice" }]);
    expect(parseSearch("  ")).toEqual([]);
  });
  it("searches job names from Slurm's queue", () => {
    const names = new Map([["17", "llama-finetune"], ["18", "eval-sweep"]]);
    expect(filterGpus(fleet, { q: "finetune" }, names).map((g) => `${g.node}/${g.index}`)).toEqual(["node10/1", "node2/2"]);
    expect(filterGpus(fleet, { q: "EVAL" }, names)).toHaveLength(1);
    expect(filterGpus(fleet, { q: "finetune" })).toHaveLength(0); // no names known, no match
  });
  it("lists jobs and users for the filter menus", () => {
    expect(jobsAndUsers(fleet)).toEqual({ jobs: ["17", "18"], users: ["alice", "bob"] });
  });
  it("words throttle reasons and drops the harmless idle one", () => {
    expect(harmfulThrottles(["gpu_idle", "sw_power_cap"])).toEqual(["sw_power_cap"]);
    expect(throttleWords("hw_thermal_slowdown")).toBe("thermal (hardware)");
    expect(throttleWords("new_reason_x")).toBe("new reason x");
  });
});
