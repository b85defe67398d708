"""Time series: the query model, the stores (embedded SQLite, Prometheus/VictoriaMetrics),
ingest of node snapshots and the scraper."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.config import StoreConfig
from gpuwarden.metrics.model import (
    MetricsStore,
    MetricsWriter,
    Sample,
    Selector,
    Series,
    parse_selector,
)

__all__ = ["MetricsStore", "MetricsWriter", "Sample", "Selector", "Series", "open_store",
           "parse_selector", "writer_of"]


def open_store(config: StoreConfig, home: Path) -> MetricsStore:
    """The store the configuration names; the embedded one lives in ``home/metrics.db``."""
    if config.kind == "prometheus":
        from gpuwarden.metrics.prometheus import PrometheusStore

        assert config.url is not None  # the config validator insists
        return PrometheusStore(config.url)
    from gpuwarden.metrics.sqlite_store import SqliteStore

    return SqliteStore(home / "metrics.db", raw_seconds=config.raw_retention_hours * 3600,
                       retention_seconds=config.retention_days * 86400)


def writer_of(store: MetricsStore) -> MetricsWriter | None:
    """The store's ingest side, or None for one that fills itself (Prometheus)."""
    return store if isinstance(store, MetricsWriter) else None
