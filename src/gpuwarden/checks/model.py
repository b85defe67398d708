"""A check's result, as the node measures it and the control plane stores and shows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Verdict = Literal["pass", "warn", "fail", "skip"]
VERDICTS: tuple[str, ...] = ("pass", "warn", "fail", "skip")
BURN_IN_REASON = "gpuwarden: burn-in"  # Slurm reason of a node waiting for its burn-in
CHECK_REASON = "[gpuwarden-check]"  # prefix of the Slurm reason of a node a check drained
HOLDER_NAME = "gpuwarden-check"  # the Slurm job (root's) that holds nodes while checked


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the node was asked for (its cluster file); None: not checked."""

    gpus: int | None = None
    model: str | None = None
    # the XID checks judge XIDs seen after this unix time (the node's last check run, so
    # a hardware XID fails one run and a later run passes only if none came since); None:
    # every XID since the node daemon started
    xids_since: float | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    level: str
    verdict: Verdict
    figure: str  # what was measured ("GPU 1: x8 gen 3"), or why it was skipped
    expected: str  # what it should be ("x16 gen 5")
    description: str = ""
    value: float | None = None  # the figure as a number where it is one (for history)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any, where: str = "check") -> CheckResult:
        """A result a node sent; a malformed one raises ValueError naming the field."""
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: not an object")
        for key in ("name", "level", "verdict", "figure", "expected"):
            if not isinstance(doc.get(key), str):
                raise ValueError(f"{where}.{key}: missing or not text")
        if doc["verdict"] not in VERDICTS:
            raise ValueError(f"{where}.verdict: {doc['verdict']!r} is not one of "
                             f"{', '.join(VERDICTS)}")
        value = doc.get("value")
        if value is not None and not isinstance(value, int | float):
            raise ValueError(f"{where}.value: not a number")
        return cls(doc["name"][:100], doc["level"][:20], doc["verdict"], doc["figure"][:500],
                   doc["expected"][:500], str(doc.get("description", ""))[:500],
                   None if value is None else float(value))


def drain_reason(result: CheckResult) -> str:
    """The Slurm reason of a node drained for ``result``: ``[gpuwarden-check] NAME: FIGURE``."""
    return f"{CHECK_REASON} {result.name}: {result.figure}".replace('"', "'")[:200]


def drained_by_checks(reason: str) -> bool:
    """Whether a Slurm reason is one gpuwarden's burn-in or checks set (so a pass resumes)."""
    return reason.startswith((CHECK_REASON, BURN_IN_REASON))


def drained_for(reason: str) -> str | None:
    """The check a ``[gpuwarden-check] NAME: FIGURE`` reason names (None for another reason,
    the burn-in's included): a node stays drained until that check has run again."""
    if not reason.startswith(CHECK_REASON + " "):
        return None
    name, sep, _ = reason[len(CHECK_REASON) + 1:].partition(":")
    return name.strip() or None if sep else None
