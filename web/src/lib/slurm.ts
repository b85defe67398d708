// Slurm: node state tones. Pending reasons come in words from the API (`reason_text`, from
// the one table in gpuwarden.slurm.reasons).

/** Slurm node state → tone, for colouring (base state; flags after '+' are ignored). */
export function nodeStateTone(state: string): "ok" | "busy" | "warn" | "bad" {
  const s = state.toLowerCase().split("+")[0].replace(/[*~#!%$@^-]+$/, "");
  if (s.startsWith("down") || s === "fail" || s === "failing" || s === "not_responding") return "bad";
  if (s.startsWith("drain") || s === "maint" || s === "reserved" || s === "completing") return "warn";
  if (s === "allocated" || s === "alloc" || s === "mixed" || s === "mix") return "busy";
  return "ok";
}
