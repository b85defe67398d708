"""The watchdog: rules over the latest scrapes and the Slurm snapshot, alerts with a
persisted state machine, Apprise notifications, and actions under explicit policy."""

from gpuwarden.watchdog.engine import Watchdog
from gpuwarden.watchdog.rules import RuleSpec, load_rules

__all__ = ["RuleSpec", "Watchdog", "load_rules"]
