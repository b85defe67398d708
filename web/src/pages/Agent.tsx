import { useQueryClient } from "@tanstack/react-query";
import clsx from "clsx";
import { useCallback, useEffect, useRef, useState } from "react";
import { useSearchParams } from "react-router-dom";
import { agentKeys, askStream, decideStream, getRun, useAgentRuns, useAgentStatus } from "../api/agent";
import { useMe } from "../api/queries";
import { Card, ErrorBox, PageHeader, Tone } from "../components/ui";
import {
  applyEvent,
  argsJson,
  newTurn,
  toolLine,
  turnOf,
  turnStatus,
  usageLine,
  withRun,
  type AgentEvent,
  type AgentStatus,
  type Item,
  type ProposedCall,
  type RunView,
  type Turn,
} from "../lib/agent";
import { ago } from "../lib/format";
import { roleAtLeast } from "../lib/roles";

const MAX_PROMPT = 4000;

type ToneName = "ok" | "warn" | "bad" | "busy" | "muted";

const RUN_TONE: Record<RunView["status"], ToneName> = {
  running: "busy",
  awaiting_approval: "warn",
  done: "ok",
  failed: "bad",
};
const RUN_LABEL: Record<RunView["status"], string> = {
  running: "working",
  awaiting_approval: "awaiting approval",
  done: "done",
  failed: "failed",
};
const CALL_TONE: Record<ProposedCall["state"], ToneName> = {
  proposed: "warn",
  approved: "busy",
  executed: "ok",
  denied: "muted",
  failed: "bad",
  rejected: "muted",
};

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// --- one proposed action ------------------------------------------------------------------

function CallCard({
  call,
  canAct,
  busy,
  onDecide,
}: {
  call: ProposedCall;
  canAct: boolean;
  busy: boolean;
  onDecide: (approve: boolean, comment: string) => void;
}) {
  const [comment, setComment] = useState("");
  const open = call.state === "proposed";
  return (
    <div
      data-testid="agent-call"
      data-call-id={call.call_id}
      data-state={call.state}
      className={clsx(
        "rounded-md border p-3",
        open ? "border-amber-300 bg-amber-50/60 dark:border-amber-700/60 dark:bg-amber-950/20" : "border-slate-200 dark:border-slate-800",
      )}
    >
      <div className="flex flex-wrap items-center gap-2">
        <span className="text-xs font-medium uppercase tracking-wide text-slate-500 dark:text-slate-400">
          {call.state === "rejected" ? "Refused proposal" : call.state === "proposed" ? "Proposed action" : "Action"}
        </span>
        <span data-testid="agent-call-state">
          <Tone tone={CALL_TONE[call.state]}>{call.state}</Tone>
        </span>
        {call.digest && (
          <span className="ml-auto font-mono text-[11px] text-slate-400" title={`approval binds to digest ${call.digest}`}>
            digest {call.digest.slice(0, 12)}
          </span>
        )}
      </div>
      <div className="mt-2 font-mono text-sm font-medium break-words" data-testid="agent-call-description">
        {call.description}
      </div>
      <pre
        data-testid="agent-call-args"
        className="mt-2 overflow-x-auto rounded bg-white/80 p-2 font-mono text-xs text-slate-700 ring-1 ring-slate-200 dark:bg-slate-950 dark:text-slate-300 dark:ring-slate-800"
      >
        {`${call.tool} ${argsJson(call.args)}`}
      </pre>
      {open ? (
        <div className="mt-3 flex flex-wrap items-center gap-2">
          <button
            type="button"
            data-testid="agent-approve"
            disabled={!canAct || busy}
            onClick={() => onDecide(true, comment)}
            className="rounded-md bg-emerald-600 px-3 py-1.5 text-sm font-medium text-white hover:bg-emerald-700 disabled:cursor-not-allowed disabled:opacity-40"
          >
            Approve
          </button>
          <button
            type="button"
            data-testid="agent-deny"
            disabled={!canAct || busy}
            onClick={() => onDecide(false, comment)}
            className="rounded-md border border-slate-300 px-3 py-1.5 text-sm hover:bg-slate-100 disabled:cursor-not-allowed disabled:opacity-40 dark:border-slate-700 dark:hover:bg-slate-800"
          >
            Deny
          </button>
          {canAct ? (
            <input
              type="text"
              value={comment}
              maxLength={500}
              onChange={(e) => setComment(e.target.value)}
              placeholder="comment (optional, kept with the decision)"
              aria-label="Comment on the decision"
              data-testid="agent-comment"
              className="min-w-0 flex-1 rounded-md border border-slate-300 bg-white px-2 py-1 text-sm dark:border-slate-700 dark:bg-slate-900"
            />
          ) : (
            <span className="text-sm text-slate-500 dark:text-slate-400" data-testid="agent-needs-operator">
              an operator must approve
            </span>
          )}
        </div>
      ) : (
        <div className="mt-2 text-sm text-slate-600 dark:text-slate-300">
          {call.decided_by && (
            <div className="text-xs text-slate-500" data-testid="agent-call-decided">
              {call.state === "rejected" ? "refused by" : call.state === "denied" ? "denied by" : "approved by"} {call.decided_by}
            </div>
          )}
          {call.result && (
            <div className="mt-1 whitespace-pre-wrap break-words" data-testid="agent-call-result">
              {call.result}
            </div>
          )}
        </div>
      )}
    </div>
  );
}

// --- one run ------------------------------------------------------------------------------

function ItemView({
  item,
  turn,
  canAct,
  onDecide,
}: {
  item: Item;
  turn: Turn;
  canAct: boolean;
  onDecide: (call: ProposedCall, approve: boolean, comment: string) => void;
}) {
  switch (item.kind) {
    case "text":
      return (
        <div data-testid="agent-answer" className="text-sm leading-relaxed break-words whitespace-pre-wrap">
          {item.text}
        </div>
      );
    case "tool":
      return (
        <div data-testid="agent-tool" className="truncate font-mono text-xs text-slate-400 dark:text-slate-500" title={toolLine(item.tool, item.args)}>
          · {toolLine(item.tool, item.args)}
          {item.chars !== null && ` → ${item.chars.toLocaleString("en-US")} chars`}
        </div>
      );
    case "refused":
      return (
        <div data-testid="agent-refused" className="text-xs text-amber-700 dark:text-amber-400">
          · refused proposals the question did not ask for: {item.tools.join(", ")}
        </div>
      );
    case "error":
      return (
        <div role="alert" data-testid="agent-error" className="rounded-md border border-rose-200 bg-rose-50 px-3 py-2 text-sm text-rose-800 dark:border-rose-900 dark:bg-rose-950/50 dark:text-rose-200">
          {item.detail}
        </div>
      );
    case "calls":
      return (
        <div className="flex flex-col gap-2">
          {item.ids.map((id) => {
            const call = turn.calls.find((c) => c.call_id === id);
            return call ? (
              <CallCard key={id} call={call} canAct={canAct} busy={turn.streaming} onDecide={(approve, comment) => onDecide(call, approve, comment)} />
            ) : null;
          })}
        </div>
      );
  }
}

function TurnView({
  turn,
  model,
  canAct,
  onDecide,
}: {
  turn: Turn;
  model: string | null;
  canAct: boolean;
  onDecide: (t: Turn, call: ProposedCall, approve: boolean, comment: string) => void;
}) {
  const status = turnStatus(turn);
  const run = turn.run;
  return (
    <article id={turn.runId ? `run-${turn.runId}` : undefined} data-testid="agent-turn" data-run={turn.runId ?? ""} data-status={status} className="flex flex-col gap-2">
      <div className="flex justify-end">
        <div data-testid="agent-question" className="max-w-[85%] rounded-lg rounded-br-sm bg-slate-800 px-3 py-2 text-sm break-words whitespace-pre-wrap text-white dark:bg-slate-700">
          {turn.prompt}
        </div>
      </div>
      <Card className="flex flex-col gap-2.5 p-4">
        <div className="flex items-center gap-2 text-xs text-slate-500 dark:text-slate-400">
          <span className="font-medium text-slate-700 dark:text-slate-200">gpuwarden agent</span>
          {turn.mode && <span>· via {turn.mode === "llm" ? (model ?? "the model") : "the analyzers"}</span>}
          {run && <span title={new Date(run.created_at * 1000).toLocaleString()}>· asked by {run.created_by}</span>}
          <span className="ml-auto" data-testid="agent-status" data-status={status}>
            <Tone tone={RUN_TONE[status]}>
              {status === "running" && <span className="h-1.5 w-1.5 animate-pulse rounded-full bg-sky-500" />}
              {RUN_LABEL[status]}
            </Tone>
          </span>
        </div>
        {turn.items.map((item, i) => (
          <ItemView key={i} item={item} turn={turn} canAct={canAct} onDecide={(call, approve, comment) => onDecide(turn, call, approve, comment)} />
        ))}
        {turn.streaming && turn.items.length === 0 && <div className="text-sm text-slate-400">Thinking…</div>}
        {run?.status === "failed" && run.error && !turn.streaming && (
          <div role="alert" data-testid="agent-run-error" className="rounded-md border border-rose-200 bg-rose-50 px-3 py-2 text-sm text-rose-800 dark:border-rose-900 dark:bg-rose-950/50 dark:text-rose-200">
            The run failed: {run.error}
          </div>
        )}
        {run && !turn.streaming && (
          <div data-testid="agent-usage" className="tabular border-t border-slate-100 pt-2 text-xs text-slate-500 dark:border-slate-800 dark:text-slate-400">
            {usageLine(run)}
          </div>
        )}
      </Card>
    </article>
  );
}

// --- what the agent is, and what it can be asked -------------------------------------------

function Intro({ status, onPick }: { status: AgentStatus; onPick: (q: string) => void }) {
  const examples = status.examples;
  return (
    <Card className="p-4 text-sm" data-testid="agent-intro">
      {status.llm ? (
        <p className="text-slate-600 dark:text-slate-300">
          Ask about the cluster in plain words. The agent reads gpuwarden&apos;s own data and may propose{" "}
          <span className="font-mono text-xs">{status.actions.join(", ")}</span>; nothing runs until an operator approves the exact
          action.
        </p>
      ) : (
        <p className="text-slate-600 dark:text-slate-300" data-testid="agent-no-llm">
          No LLM is configured, so answers come from the analyzers. They answer questions like these; free-form questions and
          proposing actions need a model (set <span className="font-mono text-xs">agent.model</span> in gpuwarden.yaml).
        </p>
      )}
      {examples.length > 0 && (
        <div className="mt-3 flex flex-wrap gap-2" data-testid="agent-examples">
          {examples.map((q) => (
            <button
              key={q}
              type="button"
              onClick={() => onPick(q)}
              className="rounded-full border border-slate-300 px-2.5 py-1 text-xs text-slate-700 hover:bg-slate-100 dark:border-slate-700 dark:text-slate-300 dark:hover:bg-slate-800"
            >
              {q}
            </button>
          ))}
        </div>
      )}
    </Card>
  );
}

function Recent({ open, onOpen }: { open: Set<string>; onOpen: (run: RunView) => void }) {
  const runs = useAgentRuns();
  const now = Date.now() / 1000;
  return (
    <Card className="p-3" data-testid="agent-recent">
      <h2 className="mb-2 px-1 text-xs font-medium uppercase tracking-wide text-slate-500 dark:text-slate-400">Recent runs</h2>
      {runs.isError ? (
        <div className="px-1 text-xs text-rose-600">{message(runs.error)}</div>
      ) : !runs.data ? (
        <div className="px-1 text-xs text-slate-400">Loading…</div>
      ) : runs.data.length === 0 ? (
        <div className="px-1 text-xs text-slate-400">No runs yet.</div>
      ) : (
        <ul className="flex flex-col gap-0.5">
          {runs.data.map((r) => (
            <li key={r.id}>
              <button
                type="button"
                data-testid={`agent-recent-${r.id}`}
                data-status={r.status}
                onClick={() => onOpen(r)}
                className={clsx(
                  "w-full rounded-md px-2 py-1.5 text-left hover:bg-slate-50 dark:hover:bg-slate-800/60",
                  open.has(r.id) && "bg-slate-50 dark:bg-slate-800/40",
                )}
              >
                <div className="truncate text-sm">{r.prompt}</div>
                <div className="mt-0.5 flex items-center gap-1.5 text-[11px] text-slate-500">
                  {r.status === "awaiting_approval" ? <Tone tone="warn">needs approval</Tone> : r.status === "failed" ? <Tone tone="bad">failed</Tone> : null}
                  <span className="truncate">
                    {r.created_by} · {ago(r.created_at, now)}
                  </span>
                </div>
              </button>
            </li>
          ))}
        </ul>
      )}
    </Card>
  );
}

// --- the page -----------------------------------------------------------------------------

export default function Agent() {
  const status = useAgentStatus();
  const me = useMe();
  const canAct = roleAtLeast(me.data?.role, "operator");
  const qc = useQueryClient();
  const [params, setParams] = useSearchParams();
  const [turns, setTurns] = useState<Turn[]>([]);
  const [prompt, setPrompt] = useState("");
  const [asking, setAsking] = useState(false);
  const [loadError, setLoadError] = useState<string | null>(null);
  const seq = useRef(0);
  const aborts = useRef(new Set<AbortController>());
  const box = useRef<HTMLTextAreaElement>(null);
  const bottom = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const live = aborts.current;
    return () => live.forEach((a) => a.abort());
  }, []);

  const update = useCallback((key: string, f: (t: Turn) => Turn) => {
    setTurns((ts) => ts.map((t) => (t.key === key ? f(t) : t)));
  }, []);

  /** Run one streamed request into a turn; whatever the stream leaves unsaid is read back. */
  const drive = useCallback(
    async (key: string, runId: string | null, go: (onEvent: (e: AgentEvent) => void, signal: AbortSignal) => Promise<void>) => {
      const ctl = new AbortController();
      aborts.current.add(ctl);
      let ended = false;
      let id = runId;
      try {
        await go((e) => {
          if (e.type === "end") ended = true;
          if (e.type === "run") id = e.id;
          update(key, (t) => applyEvent(t, e));
        }, ctl.signal);
      } catch (e) {
        update(key, (t) => ({ ...t, items: [...t.items, { kind: "error", detail: message(e) }] }));
      }
      try {
        // No `end`: a decision that leaves others of its batch open, or one the API refused
        // (403, 409) after the card already showed it as decided. Show the server's view.
        if (!ended && id && !ctl.signal.aborted) {
          const run = await getRun(id);
          update(key, (t) => withRun(t, run));
        }
      } catch {
        // the error above already says what went wrong
      } finally {
        aborts.current.delete(ctl);
        update(key, (t) => ({ ...t, streaming: false }));
        void qc.invalidateQueries({ queryKey: agentKeys.runs });
      }
    },
    [qc, update],
  );

  const send = async () => {
    const q = prompt.trim();
    if (!q || asking) return;
    const key = `ask-${++seq.current}`;
    setTurns((ts) => [...ts, newTurn(key, q)]);
    setPrompt("");
    setAsking(true);
    requestAnimationFrame(() => bottom.current?.scrollIntoView({ block: "end" }));
    try {
      await drive(key, null, (onEvent, signal) => askStream(q, onEvent, signal));
    } finally {
      setAsking(false);
      box.current?.focus();
    }
  };

  const decide = (turn: Turn, call: ProposedCall, approve: boolean, comment: string) => {
    if (!turn.runId) return;
    update(turn.key, (t) => ({
      ...t,
      streaming: true,
      calls: t.calls.map((c) => (c.call_id === call.call_id ? { ...c, state: approve ? "approved" : "denied", decided_by: "you" } : c)),
    }));
    const decision = { call_id: call.call_id, approve, comment, ...(approve ? { digest: call.digest } : {}) };
    const runId = turn.runId;
    void drive(turn.key, runId, (onEvent, signal) => decideStream(runId, [decision], onEvent, signal));
  };

  const open = useCallback(
    (run: RunView) => {
      setTurns((ts) => (ts.some((t) => t.runId === run.id) ? ts : [...ts, turnOf(run)]));
      requestAnimationFrame(() => document.getElementById(`run-${run.id}`)?.scrollIntoView({ block: "start", behavior: "smooth" }));
    },
    [],
  );

  // /agent?run=<id> opens that run (e.g. one left awaiting approval by `gpuwarden ask`)
  const linked = params.get("run");
  useEffect(() => {
    if (!linked) return;
    let stale = false;
    getRun(linked)
      .then((run) => {
        if (!stale) open(run);
      })
      .catch((e) => !stale && setLoadError(`run ${linked}: ${message(e)}`));
    return () => {
      stale = true;
    };
  }, [linked, open]);

  // keep the newest text in view while it streams, unless the reader scrolled up
  useEffect(() => {
    const nearBottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 160;
    if (nearBottom && turns.some((t) => t.streaming)) bottom.current?.scrollIntoView({ block: "end" });
  }, [turns]);

  const openIds = new Set(turns.flatMap((t) => (t.runId ? [t.runId] : [])));
  const st = status.data;

  return (
    <div>
      <PageHeader
        title="Ask"
        sub="The ops agent answers from gpuwarden's data and proposes actions that an operator approves."
        right={
          st && (
            <span data-testid="agent-model" data-llm={st.llm ? "yes" : "no"}>
              {st.llm ? (
                <Tone tone="ok">
                  model · {st.provider} {st.model}
                </Tone>
              ) : (
                <Tone tone="muted">no LLM · analyzers only</Tone>
              )}
            </span>
          )
        }
      />
      <div className="grid gap-6 lg:grid-cols-[minmax(0,1fr)_17rem]">
        <section className="flex min-w-0 flex-col gap-4" aria-label="Conversation">
          {status.isError ? <ErrorBox error={status.error} /> : st ? <Intro status={st} onPick={(q) => { setPrompt(q); box.current?.focus(); }} /> : null}
          {loadError && <ErrorBox error={loadError} />}
          <div className="flex flex-col gap-5" data-testid="agent-conversation">
            {turns.map((t) => (
              <TurnView key={t.key} turn={t} model={st?.model ?? null} canAct={canAct} onDecide={decide} />
            ))}
          </div>
          <div ref={bottom} />
          <form
            className="sticky bottom-0 -mx-1 bg-slate-50/90 px-1 pt-1 pb-4 backdrop-blur dark:bg-slate-950/90"
            onSubmit={(e) => {
              e.preventDefault();
              void send();
            }}
          >
            <Card className="flex items-end gap-2 p-2 focus-within:ring-2 focus-within:ring-sky-500/40">
              <textarea
                ref={box}
                data-testid="agent-prompt"
                data-search
                aria-label="Ask the ops agent"
                rows={2}
                maxLength={MAX_PROMPT}
                value={prompt}
                onChange={(e) => setPrompt(e.target.value)}
                onKeyDown={(e) => {
                  if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
                    e.preventDefault();
                    void send();
                  }
                }}
                placeholder={st?.llm ? "e.g. which GPUs are wasted? · silence the alerts on node3 for an hour" : "e.g. which GPUs are wasted and what do they cost?"}
                className="max-h-48 min-h-[2.5rem] flex-1 resize-y bg-transparent px-2 py-1.5 text-sm outline-none placeholder:text-slate-400"
              />
              <button
                type="submit"
                data-testid="agent-send"
                disabled={asking || !prompt.trim()}
                className="rounded-md bg-slate-900 px-4 py-2 text-sm font-medium text-white hover:bg-slate-700 disabled:opacity-40 dark:bg-slate-100 dark:text-slate-900 dark:hover:bg-white"
              >
                {asking ? "Asking…" : "Ask"}
              </button>
            </Card>
            <div className="mt-1 px-1 text-[11px] text-slate-400">Enter to send · Shift+Enter for a new line</div>
          </form>
        </section>
        <aside className="min-w-0 lg:sticky lg:top-16 lg:self-start">
          <Recent
            open={openIds}
            onOpen={(r) => {
              open(r);
              if (params.get("run")) setParams({}, { replace: true });
            }}
          />
        </aside>
      </div>
    </div>
  );
}
