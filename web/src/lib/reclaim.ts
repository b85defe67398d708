// Reclaim as the UI says it: each watched job's stage in one line ("warned 20:31, cancels at
// 21:31"), which operator levers apply, and the command each amounts to. The control plane runs
// the ladder (gpuwarden.reclaim); nothing here decides anything.

import type { ReclaimCandidate, ReclaimEvent, ReclaimNode, ReclaimPlan } from "../api/types";
import { duration } from "./format";

export type ReclaimAction = "cancel" | "requeue" | "hold";
export type ReclaimLever = "exempt" | "act";

const VERBS: Record<ReclaimAction, { base: string; third: string; past: string }> = {
  cancel: { base: "cancel", third: "cancels", past: "cancelled" },
  requeue: { base: "requeue", third: "requeues", past: "requeued" },
  hold: { base: "requeue and hold", third: "requeues and holds", past: "requeued and held" },
};

function verbs(action: string | null | undefined) {
  return VERBS[(action as ReclaimAction) in VERBS ? (action as ReclaimAction) : "cancel"];
}

/** A unix time as the local wall clock, "20:31". */
export function hhmm(t: number): string {
  return new Date(t * 1000).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
}

/** A unix time as the local date and time, for tooltips. */
export function fullTime(t: number): string {
  return new Date(t * 1000).toLocaleString();
}

/** When each job got its latest warning (real or dry-run), from reclaim's history. */
export function lastWarnings(events: readonly ReclaimEvent[] | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of events ?? [])
    if ((e.event === "warned" || e.event === "would_warn") && e.at > (out.get(e.key) ?? -Infinity)) out.set(e.key, e.at);
  return out;
}

/**
 * When job `c`'s latest warning went out: the history's time when it has one, else where the
 * ladder put it (idle since + the warning's offset); null before the first warning.
 */
export function warnedAt(
  c: Pick<ReclaimCandidate, "key" | "warnings_sent" | "idle_since"> &
    Partial<Pick<ReclaimCandidate, "last_warned_at">>,
  plan: Pick<ReclaimPlan, "warn_after_s">,
  history?: Map<string, number>,
): number | null {
  if (c.warnings_sent <= 0) return null;
  if (c.last_warned_at != null) return c.last_warned_at; // the API's own record

  const seen = history?.get(c.key);
  if (seen !== undefined && (c.idle_since === null || seen >= c.idle_since - 1)) return seen;
  const offset = plan.warn_after_s[c.warnings_sent - 1];
  return c.idle_since !== null && offset !== undefined ? c.idle_since + offset : null;
}

function when(t: number, now: number | undefined, dry: boolean): string {
  const bits: string[] = [];
  if (now !== undefined && t - now >= 1) bits.push(`in ${duration(t - now)}`);
  if (dry) bits.push("dry-run");
  return `${hhmm(t)}${bits.length ? ` (${bits.join(", ")})` : ""}`;
}

/** Why-texts of an idle job that say the ladder is held up, worth showing beside its stage. */
const HELD_UP = /^(waiting|re-check)/;

/**
 * Job `c`'s stage in one line, e.g. "warned 20:31, cancels at 21:31 (in 58m)" or
 * "would cancel at 21:31 (dry-run)". `lastWarned`: see warnedAt.
 */
export function stageText(
  c: ReclaimCandidate,
  plan: Pick<ReclaimPlan, "mode" | "action" | "warn_after_s">,
  lastWarned: number | null,
  now?: number,
): string {
  const v = verbs(plan.action);
  const dry = plan.mode === "dry-run";
  switch (c.status) {
    case "exempt":
      return c.why.startsWith("exempted") ? c.why : `exempt: ${c.why}`;
    case "grace":
      return `grace period: ${c.why}`;
    case "busy":
      return `busy: ${c.why}`;
    case "unknown":
      return c.why.startsWith("paused") ? c.why : `no verdict: ${c.why}`;
    case "proposed":
      return `${v.base} proposed: ${c.why}`;
    case "acted":
      return dry ? `would have ${v.past} (dry-run)` : v.past;
  }
  // idle
  const n = c.warnings_sent;
  const of = plan.warn_after_s.length;
  const warned =
    n > 0 && lastWarned !== null
      ? `${dry ? "would have warned" : "warned"} ${hhmm(lastWarned)}${of > 1 ? ` (${n} of ${of})` : ""}`
      : c.idle_since !== null
        ? `idle since ${hhmm(c.idle_since)}`
        : "idle";
  let next = "";
  if (c.next_at !== null && c.next_event === "warn")
    next = `${dry ? "would warn" : "warns"}${n > 0 ? " again" : ""} at ${when(c.next_at, now, dry)}`;
  else if (c.next_at !== null && c.next_event === "act")
    next = dry
      ? `would ${v.base} at ${when(c.next_at, now, true)}`
      : plan.mode === "approve"
        ? `asks an operator to ${v.base} it at ${when(c.next_at, now, false)}`
        : `${v.third} at ${when(c.next_at, now, false)}`;
  const text = next ? `${warned}, ${next}` : `${warned}: ${c.why}`;
  return next && HELD_UP.test(c.why) ? `${text} · ${c.why}` : text;
}

export type StageTone = "ok" | "warn" | "bad" | "busy" | "muted";

export function stageTone(c: Pick<ReclaimCandidate, "status" | "warnings_sent" | "next_event">): StageTone {
  switch (c.status) {
    case "idle":
      return c.warnings_sent > 0 || c.next_event === "act" ? "warn" : "busy";
    case "proposed":
      return "warn";
    case "acted":
      return "bad";
    case "exempt":
    case "busy":
      return "ok";
    default:
      return "muted";
  }
}

/** The stage of a node of a cluster with autostop, in one line. */
export function nodeStageText(n: ReclaimNode, now?: number): string {
  const dry = n.mode === "dry-run";
  if (n.status === "idle" && n.next_at !== null)
    return `${n.warned ? "warned" : n.idle_since !== null ? `idle since ${hhmm(n.idle_since)}` : "idle"}, ${
      n.next_event === "warn" ? (dry ? "would warn" : "warns") : dry ? `would ${n.action}` : `${n.action}s`
    } at ${when(n.next_at, now, dry)}`;
  return n.why ? `${n.status}: ${n.why}` : n.status;
}

/**
 * The candidate reclaim has for a job on GPU `node/index`, whose jobs (as the GPU's own view
 * lists them) are `jobs`: by job id, else by the GPU it holds. A GPU without a job has none,
 * even while an older plan still lists the job that just left it.
 */
export function candidateFor(
  plan: Pick<ReclaimPlan, "candidates"> | undefined,
  gpu: { node: string; index: number },
  jobs: readonly string[],
): ReclaimCandidate | undefined {
  if (!plan || !jobs.length) return undefined;
  const held = `${gpu.node}/gpu${gpu.index}`;
  return plan.candidates.find((c) => jobs.includes(c.key)) ?? plan.candidates.find((c) => c.gpus.includes(held));
}

/** The levers that apply to a job in its stage: none once acted on; no exempting twice. */
export function levers(c: Pick<ReclaimCandidate, "status">): ReclaimLever[] {
  if (c.status === "acted") return [];
  if (c.status === "exempt") return ["act"];
  return ["exempt", "act"];
}

/** The command a lever amounts to (what its confirmation dialog shows). */
export function leverCommand(lever: ReclaimLever, key: string, action: string | null | undefined): string {
  if (lever === "exempt") return `gpuwarden reclaim exempt ${key}`;
  if (action === "requeue") return `scontrol requeue ${key}`;
  if (action === "hold") return `scontrol requeuehold ${key}`;
  return `scancel ${key}`;
}

const capital = (s: string) => s[0].toUpperCase() + s.slice(1);

/** A lever's button, "Exempt" or "Cancel now" (the policy's action). */
export function leverLabel(lever: ReclaimLever, action: string | null | undefined): string {
  return lever === "exempt" ? "Exempt" : `${capital(verbs(action).base)} now`;
}

/** What a lever's confirm button says: "Exempt job 42", "Cancel job 42 now". */
export function leverConfirm(lever: ReclaimLever, key: string, action: string | null | undefined): string {
  if (lever === "exempt") return `Exempt job ${key}`;
  const base = verbs(action).base;
  return action === "hold" ? `Requeue and hold job ${key} now` : `${capital(base)} job ${key} now`;
}

export function leverHelp(lever: ReclaimLever, action: string | null | undefined, mode: string | null | undefined): string {
  if (lever === "exempt")
    return "Reclaim keeps this job until it ends, whatever its GPUs do; a proposed action is denied.";
  const v = verbs(action);
  return `Reclaim ${v.third} the job now, after checking once more that it still runs with GPUs${
    mode === "dry-run" ? " (this really happens, although reclaim itself runs in dry-run mode)" : ""
  }. Its owner and the admins are told.`;
}

/** What "$ saved" assumes (the API's definition), for its tooltip. */
export const SAVED_ASSUMPTION =
  "Counted as: each reclaim action on a job saves the job's $/hr until its time limit would have ended it, at most 24 h; " +
  "a node stopped by autostop saves its $/hr while it stays stopped. The figures grow as that time passes.";
