import { describe, expect, it } from "vitest";
import { applyEvent, argsJson, newTurn, turnOf, usageLine, type AgentEvent, type ProposedCall, type RunView } from "./agent";

const call: ProposedCall = {
  call_id: "c1",
  tool: "silence_alert",
  args: { subject: "node1/*", duration: "1h", comment: "maintenance", rule: null },
  digest: "ab".repeat(32),
  description: "silence alerts * on node1/* for 1h",
  state: "proposed",
  decided_by: null,
  decided_at: null,
  result: null,
};

const run = (over: Partial<RunView>): RunView => ({
  id: "0123456789ab",
  status: "done",
  mode: "llm",
  prompt: "silence node1 for an hour",
  created_by: "alice (operator)",
  created_at: 1,
  updated_at: 2,
  answer: "",
  error: null,
  calls: [],
  usage: { requests: 2, input_tokens: 1200, output_tokens: 34, cost: null },
  ...over,
});

const play = (events: AgentEvent[]) => events.reduce(applyEvent, newTurn("k", "silence node1 for an hour"));

describe("a turn built from the run's events", () => {
  it("joins text deltas, keeps tool lines in order, and places the proposal cards", () => {
    const t = play([
      { type: "run", id: "0123456789ab", mode: "llm" },
      { type: "text", delta: "Look" },
      { type: "text", delta: "ing…" },
      { type: "tool_call", tool: "list_alerts", args: {} },
      { type: "tool_result", tool: "list_alerts", chars: 321 },
      { type: "approval_required", calls: [call] },
      { type: "end", run: run({ status: "awaiting_approval", calls: [call] }) },
    ]);
    expect(t.runId).toBe("0123456789ab");
    expect(t.items).toEqual([
      { kind: "text", text: "Looking…" },
      { kind: "tool", tool: "list_alerts", args: {}, chars: 321 },
      { kind: "calls", ids: ["c1"] },
    ]);
    expect(t.run?.status).toBe("awaiting_approval");
  });

  it("updates the card in place when the resumed run ends", () => {
    let t = play([{ type: "approval_required", calls: [call] }]);
    const done = { ...call, state: "executed" as const, decided_by: "alice (operator)", result: "silence 1: rule * subject node1/* for 1h" };
    const resumed: AgentEvent[] = [
      { type: "tool_result", tool: "silence_alert", chars: 40 },
      { type: "text", delta: "Done." },
      { type: "end", run: run({ calls: [done], answer: "Done." }) },
    ];
    t = resumed.reduce(applyEvent, t);
    expect(t.calls).toEqual([done]);
    expect(t.items.filter((i) => i.kind === "calls")).toHaveLength(1);
    expect(t.items.at(-1)).toEqual({ kind: "text", text: "Done." });
  });

  it("shows the answer of a run read from the list, with its cards first", () => {
    const t = turnOf(run({ answer: "From the tools: ok", calls: [{ ...call, state: "denied" }] }));
    expect(t.items).toEqual([
      { kind: "calls", ids: ["c1"] },
      { kind: "text", text: "From the tools: ok" },
    ]);
    expect(t.streaming).toBe(false);
  });
});

describe("labels", () => {
  it("says tokens and cost, or that the cost is unknown", () => {
    expect(usageLine(run({}))).toBe("2 model requests · 1,200 input + 34 output tokens · cost unknown");
    expect(usageLine(run({ usage: { requests: 1, input_tokens: 10, output_tokens: 5, cost: 0.00123 } }))).toMatch(/1 model request · .* · \$0\.0012$/);
    expect(usageLine(run({ mode: "analyzers" }))).toMatch(/analyzers/);
  });

  it("prints arguments with sorted keys", () => {
    expect(argsJson({ b: 1, a: "x" })).toBe('{\n  "a": "x",\n  "b": 1\n}');
  });
});
