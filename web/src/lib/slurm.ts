// Slurm: plain words for pending reasons and node states (the API sends Slurm's codes).

const PENDING: Record<string, string> = {
  None: "no reason given yet (just submitted)",
  Resources: "waiting for resources: not enough free GPUs/CPUs/memory right now",
  Priority: "waiting behind higher-priority jobs",
  Dependency: "waiting for a job it depends on to finish",
  DependencyNeverSatisfied: "its dependency can never be met: cancel or fix it",
  BeginTime: "its requested start time has not come yet",
  JobHeldUser: "held by its owner (scontrol release to start it)",
  JobHeldAdmin: "held by an administrator",
  ReqNodeNotAvail: "a node it asked for is unavailable (down, drained or reserved)",
  PartitionNodeLimit: "asks for more nodes than the partition allows",
  PartitionTimeLimit: "asks for more time than the partition allows",
  PartitionDown: "its partition is down",
  PartitionInactive: "its partition is inactive",
  NodeDown: "a node it needs is down",
  BadConstraints: "its constraints cannot be satisfied by any node",
  InvalidAccount: "its account is invalid",
  InvalidQOS: "its QOS is invalid",
  QOSMaxGRESPerUser: "its user is at the QOS limit for GPUs",
  QOSMaxJobsPerUserLimit: "its user is at the QOS limit for running jobs",
  QOSMaxCpuPerUserLimit: "its user is at the QOS limit for CPUs",
  QOSGrpGRES: "the QOS group is at its GPU limit",
  AssocGrpGRES: "the account is at its GPU limit",
  AssocMaxJobsLimit: "the account is at its running-jobs limit",
  Reservation: "waiting for its reservation to start",
  Licenses: "waiting for a license",
  launch_failed_requeued_held: "its launch failed; requeued and held",
};

export function pendingReasonWords(code: string | null | undefined): string {
  if (!code) return "–";
  const key = code.replace(/^\(|\)$/g, "");
  if (PENDING[key]) return PENDING[key];
  if (key.startsWith("QOS")) return `a QOS limit (${key})`;
  if (key.startsWith("Assoc")) return `an account limit (${key})`;
  return key;
}

/** Slurm node state → tone, for colouring (base state; flags after '+' are ignored). */
export function nodeStateTone(state: string): "ok" | "busy" | "warn" | "bad" {
  const s = state.toLowerCase().split("+")[0].replace(/[*~#!%$@^-]+$/, "");
  if (s.startsWith("down") || s === "fail" || s === "failing" || s === "not_responding") return "bad";
  if (s.startsWith("drain") || s === "maint" || s === "reserved" || s === "completing") return "warn";
  if (s === "allocated" || s === "alloc" || s === "mixed" || s === "mix") return "busy";
  return "ok";
}
