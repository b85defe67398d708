"""Node health checks as data: specs (:mod:`.spec`), results (:mod:`.model`), the passive
and active measurements, the run on a node (:mod:`.runner`), stored results
(:mod:`.store`) and what to do with a node after a run (:mod:`.react`)."""

from gpuwarden.checks.model import (
    BURN_IN_REASON,
    CHECK_REASON,
    CheckResult,
    Expectation,
    drain_reason,
    drained_by_checks,
)
from gpuwarden.checks.runner import run_checks
from gpuwarden.checks.spec import LEVELS, CheckSpec, check_level, load_checks, selected

__all__ = ["BURN_IN_REASON", "CHECK_REASON", "LEVELS", "CheckResult", "CheckSpec",
           "Expectation", "check_level", "drain_reason", "drained_by_checks", "load_checks",
           "run_checks", "selected"]
