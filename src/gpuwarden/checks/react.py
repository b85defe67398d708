"""What a run's results mean for the node's place in Slurm: drain it with the failed
check's reason, resume it (only when gpuwarden's burn-in or a check drained it), or leave
it.  One decision for the burn-in at ``up`` and the on-demand check alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gpuwarden.checks.model import CheckResult, drain_reason, drained_by_checks, drained_for


@dataclass(frozen=True, slots=True)
class Reaction:
    action: Literal["drain", "resume", "none"]
    reason: str = ""  # the Slurm reason of a drain
    why: str = ""


def react(results: Sequence[CheckResult], drained: bool, reason: str) -> Reaction:
    """``drained``/``reason``: the node's Slurm DRAIN flag and reason now."""
    failed = next((r for r in results if r.verdict == "fail"), None)
    if failed is not None:
        wanted = drain_reason(failed)
        if drained and not drained_by_checks(reason):
            return Reaction("none", why=f"already drained by someone else ({reason})")
        if drained and reason == wanted:
            return Reaction("none", why="already drained for this check")
        return Reaction("drain", wanted, f"{failed.name} failed")
    if drained and drained_by_checks(reason):
        held = drained_for(reason)
        if held is not None and not any(r.name == held and r.verdict in ("pass", "warn")
                                        for r in results):
            return Reaction("none", why=f"kept drained: {held}, which drained it, did not run "
                            "again (run the level that has it on this node)")
        return Reaction("resume", why="every check passes")
    return Reaction("none", why="every check passes" if not drained else
                    f"drained by someone else ({reason}): left drained")
