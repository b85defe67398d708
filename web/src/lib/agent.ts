// The ops agent's conversation as the page keeps it: one turn per run, built from the run's
// server-sent events (POST /api/v1/agent/runs?stream=true and .../decisions?stream=true) the
// way `gpuwarden ask` (agent/terminal.py) reads them.
import type { components } from "../api/schema";

type Schemas = components["schemas"];
// Every field of a response is on the wire (see api/types.ts).
type Out<T> = T extends readonly (infer U)[] ? Out<U>[] : T extends object ? { [K in keyof T]-?: Out<T[K]> } : T;

export type AgentStatus = Out<Schemas["AgentStatus"]>;
export type RunView = Out<Schemas["RunView"]>;
export type ProposedCall = Out<Schemas["ProposedCall"]>;
export type Usage = Out<Schemas["Usage"]>;
export type Decision = Schemas["Decision"];

export type Args = Record<string, unknown>;

export type AgentEvent =
  | { type: "run"; id: string; mode: RunView["mode"] }
  | { type: "text"; delta: string }
  | { type: "tool_call"; tool: string; args: Args }
  | { type: "tool_result"; tool: string; chars: number }
  | { type: "approval_required"; calls: ProposedCall[] }
  | { type: "refused"; calls: { tool: string; args: Args }[] }
  | { type: "error"; detail: string }
  | { type: "end"; run: RunView };

/** What a turn shows, in the order it happened. */
export type Item =
  | { kind: "text"; text: string }
  | { kind: "tool"; tool: string; args: Args | null; chars: number | null }
  | { kind: "refused"; tools: string[] }
  | { kind: "calls"; ids: string[] } // the proposal cards, where they were proposed
  | { kind: "error"; detail: string };

export interface Turn {
  key: string;
  prompt: string;
  runId: string | null;
  mode: RunView["mode"] | null;
  items: Item[];
  calls: ProposedCall[];
  run: RunView | null; // the run as last seen whole (an `end` event, or a GET)
  streaming: boolean;
}

export function newTurn(key: string, prompt: string): Turn {
  return { key, prompt, runId: null, mode: null, items: [], calls: [], run: null, streaming: true };
}

function mergeCalls(have: ProposedCall[], incoming: ProposedCall[]): ProposedCall[] {
  const byId = new Map(have.map((c) => [c.call_id, c]));
  for (const c of incoming) byId.set(c.call_id, c);
  return [...byId.values()];
}

function placed(items: Item[]): Set<string> {
  return new Set(items.flatMap((i) => (i.kind === "calls" ? i.ids : [])));
}

/** The turn after one event. */
export function applyEvent(t: Turn, e: AgentEvent): Turn {
  const items = t.items;
  const last = items[items.length - 1];
  switch (e.type) {
    case "run":
      return { ...t, runId: e.id, mode: e.mode };
    case "text":
      if (!e.delta) return t;
      if (last?.kind === "text") return { ...t, items: [...items.slice(0, -1), { kind: "text", text: last.text + e.delta }] };
      return { ...t, items: [...items, { kind: "text", text: e.delta }] };
    case "tool_call":
      return { ...t, items: [...items, { kind: "tool", tool: e.tool, args: e.args ?? {}, chars: null }] };
    case "tool_result": {
      // the latest call of that tool still waiting for its result (actions have no tool_call)
      for (let i = items.length - 1; i >= 0; i--) {
        const it = items[i];
        if (it.kind === "tool" && it.tool === e.tool && it.chars === null) {
          const next = [...items];
          next[i] = { ...it, chars: e.chars };
          return { ...t, items: next };
        }
      }
      return { ...t, items: [...items, { kind: "tool", tool: e.tool, args: null, chars: e.chars }] };
    }
    case "refused":
      return { ...t, items: [...items, { kind: "refused", tools: e.calls.map((c) => c.tool) }] };
    case "approval_required": {
      const seen = placed(items);
      const ids = e.calls.map((c) => c.call_id).filter((id) => !seen.has(id));
      return {
        ...t,
        calls: mergeCalls(t.calls, e.calls),
        items: ids.length ? [...items, { kind: "calls", ids }] : items,
      };
    }
    case "error":
      return { ...t, items: [...items, { kind: "error", detail: e.detail }] };
    case "end":
      return withRun(t, e.run);
  }
}

/** The turn once the whole run is known: its calls' states, and its answer if no text
 *  streamed (a run loaded from the list, or one that ended without text events). */
export function withRun(t: Turn, run: RunView): Turn {
  let items = t.items;
  const seen = placed(items);
  const unplaced = run.calls.filter((c) => !seen.has(c.call_id) && c.state !== "rejected").map((c) => c.call_id);
  if (unplaced.length) items = [...items, { kind: "calls", ids: unplaced }];
  if (run.answer && !items.some((i) => i.kind === "text")) items = [...items, { kind: "text", text: run.answer }];
  return { ...t, runId: run.id, mode: run.mode, prompt: t.prompt || run.prompt, calls: mergeCalls(t.calls, run.calls), run, items };
}

/** A turn for a run read from the API (the recent list, a link). */
export function turnOf(run: RunView): Turn {
  const rejected = run.calls.filter((c) => c.state === "rejected").map((c) => c.tool);
  const t: Turn = { ...newTurn(`run-${run.id}`, run.prompt), streaming: false };
  return withRun(rejected.length ? { ...t, items: [{ kind: "refused", tools: rejected }] } : t, run);
}

/** The run's state as the page shows it: a decision in flight counts as running. */
export function turnStatus(t: Turn): RunView["status"] {
  if (t.streaming) return "running";
  return t.run?.status ?? "failed";
}

export function usageLine(run: RunView): string {
  if (run.mode === "analyzers") return "answered by the analyzers · no model tokens";
  const u = run.usage;
  const n = (x: number) => x.toLocaleString("en-US");
  const cost = u.cost === null ? "cost unknown" : `$${u.cost < 0.01 ? u.cost.toFixed(4) : u.cost.toFixed(2)}`;
  return `${n(u.requests)} model request${u.requests === 1 ? "" : "s"} · ${n(u.input_tokens)} input + ${n(u.output_tokens)} output tokens · ${cost}`;
}

/** Arguments as the proposal card shows them: stable key order, indented. */
export function argsJson(args: Args): string {
  const sorted = Object.fromEntries(Object.keys(args).sort().map((k) => [k, args[k]]));
  return JSON.stringify(sorted, null, 2);
}

/** A tool call as one short line: name(args), long values cut. */
export function toolLine(tool: string, args: Args | null): string {
  if (args === null) return tool;
  const text = JSON.stringify(args);
  const shown = text === "{}" ? "" : text.length > 160 ? text.slice(0, 157) + "…" : text;
  return `${tool}(${shown})`;
}
