"""The state database: everything that is not a time series (inventory, API tokens, and
later alerts, audit log, agent runs), one SQLite file under ``$GPUWARDEN_HOME``."""

from gpuwarden.state.db import StateDB

__all__ = ["StateDB"]
