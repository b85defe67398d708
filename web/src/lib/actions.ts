// Operator actions as the UI offers them: which apply to a job or node in its current state,
// and the Slurm command each one amounts to (what the confirmation dialog shows). The API runs
// them (and writes the audit log); nothing here talks to Slurm.

export type JobAction = "cancel" | "hold" | "release";
export type NodeAction = "drain" | "resume";

const ACTIVE = new Set(["PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING"]);
const HELD = /^\(?(JobHeldUser|JobHeldAdmin|launch_failed_requeued_held)\)?$/;

/** A job held by its owner or an admin waits for `scontrol release`. */
export function isHeld(job: { state: string; reason?: string | null }): boolean {
  return job.state.toUpperCase() === "PENDING" && HELD.test(job.reason ?? "");
}

/** The actions that make sense for a job now: none once it has finished. */
export function jobActions(job: { state: string; reason?: string | null }): JobAction[] {
  const s = job.state.toUpperCase();
  if (!ACTIVE.has(s)) return [];
  if (s === "PENDING") return isHeld(job) ? ["release", "cancel"] : ["hold", "cancel"];
  return ["cancel"];
}

export const JOB_ACTION_LABEL: Record<JobAction, string> = { cancel: "Cancel", hold: "Hold", release: "Release" };

export const JOB_ACTION_HELP: Record<JobAction, string> = {
  cancel: "Slurm stops the job (its processes are killed) and removes it from the queue.",
  hold: "The job stays in the queue but will not start until it is released.",
  release: "The job may start again as soon as resources allow.",
};

export function jobCommand(action: JobAction, jobId: number | string): string {
  return action === "cancel" ? `scancel ${jobId}` : `scontrol ${action} ${jobId}`;
}

/** The reason as a shell would pass it to scontrol: in double quotes (which it may not hold). */
export function quoteReason(reason: string): string {
  return `"${reason.trim()}"`;
}

/**
 * What is wrong with a drain reason, or null. scontrol mangles double quotes inside a reason
 * (`fan "noise"` is stored as `fan "noise`), so they are refused before anything runs.
 */
export function reasonProblem(reason: string): string | null {
  if (!reason.trim()) return "Say why the node is drained.";
  if (reason.includes('"')) return "Slurm mangles double quotes in a reason: use ' instead.";
  return null;
}

export function nodeCommand(action: NodeAction, node: string, reason = ""): string {
  return action === "drain"
    ? `scontrol update NodeName=${node} State=DRAIN Reason=${quoteReason(reason)}`
    : `scontrol update NodeName=${node} State=RESUME`;
}

/** Drained, draining or down: a node an operator would resume rather than drain. */
export function nodeNeedsResume(node: { state: string; flags?: readonly string[] }): boolean {
  const all = [node.state, ...(node.flags ?? [])].join("+").toLowerCase();
  return /drain|down|fail/.test(all);
}

export function nodeAction(node: { state: string; flags?: readonly string[] }): NodeAction {
  return nodeNeedsResume(node) ? "resume" : "drain";
}

/** The silence an alert's "Silence…" button proposes: this rule on this subject. */
export interface SilenceDraft {
  rule: string;
  subject: string;
  duration: string;
  comment: string;
}

export function silenceDraft(alert: { rule: string; subject: string }): SilenceDraft {
  return { rule: alert.rule, subject: alert.subject || "*", duration: "2h", comment: "" };
}

const DURATION = /^\s*\d+(\.\d+)?\s*(s|m|h|d)\s*$/;
/** The API's duration syntax (30s, 10m, 2h, 1d); a message naming the fix, or null if fine. */
export function durationProblem(d: string): string | null {
  return DURATION.test(d) ? null : "write a duration such as 30m, 2h or 1d";
}

export function silenceSummary(s: SilenceDraft): string {
  return `silence rule ${s.rule || "* (every rule)"} on ${s.subject || "*"} for ${s.duration.trim()}`;
}
