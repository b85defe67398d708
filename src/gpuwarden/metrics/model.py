"""The query model shared by every metrics store, the :class:`MetricsStore` protocol (the
reading side, which every store has) and the :class:`MetricsWriter` protocol (the ingest
side, which only the embedded store has: with Prometheus or VictoriaMetrics they scrape
the nodes themselves, and the control plane's scraper writes nothing).

A series is a metric name plus labels, as in Prometheus.  Selectors use PromQL's syntax for
one vector selector (``DCGM_FI_DEV_GPU_UTIL{node="node1",gpu=~"0|1"}``) so a query means
the same thing on the embedded store and on Prometheus/VictoriaMetrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gpuwarden.gpu.series import SeriesGroup

Aggregation = Literal["avg", "min", "max", "sum", "last", "count"]
AGGREGATIONS: tuple[str, ...] = ("avg", "min", "max", "sum", "last", "count")
MatchOp = Literal["=", "!=", "=~", "!~"]


class SelectorError(ValueError):
    """A selector that does not parse; the message says where and how to write it."""


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str
    labels: Mapping[str, str]
    value: float
    timestamp: float  # unix seconds


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: MatchOp
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...] = ()

    def matches(self, metric: str, labels: Mapping[str, str]) -> bool:
        return metric == self.metric and all(m.matches(labels) for m in self.matchers)

    def __str__(self) -> str:
        if not self.matchers:
            return self.metric
        inner = ",".join(f'{m.label}{m.op}"{_quote(m.value)}"' for m in self.matchers)
        return f"{self.metric}{{{inner}}}"


@dataclass(frozen=True, slots=True)
class Series:
    metric: str
    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]] = field(default_factory=list)  # (timestamp, value)


class ScrapeTarget(Protocol):
    """A node as the scraper and the Prometheus scrape configuration see it: its name, its
    daemon's base URL, the file holding its token, its role and its $/hr.  The inventory's
    :class:`~gpuwarden.state.inventory.Node` is one, as is :class:`Target`."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def token_file(self) -> Path | None: ...
    @property
    def role(self) -> str: ...
    @property
    def cost_per_hour(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Target:
    """A :class:`ScrapeTarget` for callers with no inventory (the export of a configuration's
    nodes, tests, benchmarks)."""

    name: str
    url: str
    token_file: Path | None = None
    role: str = "worker"
    cost_per_hour: float = 0.0


class MetricsStore(Protocol):
    """Where time series are read from.  Implementations: ``sqlite`` (embedded),
    ``prometheus`` (any Prometheus-compatible query API)."""

    def latest(self, selector: Selector, *, max_age: float | None = None,
               now: float | None = None) -> list[Series]:
        """The newest point of every matching series (one point each)."""
        ...

    def range(self, selector: Selector, start: float, end: float, step: float,
              aggregation: Aggregation = "avg") -> list[Series]:
        """Points every ``step`` seconds from ``start`` to ``end``, each aggregating the
        samples of its step window (ending at the point's timestamp)."""
        ...

    def series(self, selector: Selector) -> list[Mapping[str, str]]:
        """Label sets of the matching series."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class MetricsWriter(Protocol):
    """Where the scraper stores what it scraped: the embedded store only."""

    def append_groups(self, groups: Iterable[SeriesGroup]) -> None:
        """Store one batch of columnar sample groups atomically: after a crash, a batch is
        all there or not at all."""
        ...

    def interrupt(self) -> None:
        """Abandon the batch being stored (nothing of it is kept), so a stop never waits
        on a huge batch."""
        ...


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SELECTOR = re.compile(rf"\s*({_NAME})\s*(?:\{{(.*)\}})?\s*$", re.S)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_selector(text: str) -> Selector:
    """``metric`` or ``metric{label="v",other=~"re"}``."""
    match = _SELECTOR.match(text)
    if match is None:
        raise SelectorError(
            f"selector {text!r} does not parse: write METRIC or METRIC{{label=\"value\"}}, "
            'e.g. DCGM_FI_DEV_GPU_UTIL{node="node1",gpu=~"0|1"}'
        )
    metric, body = match.group(1), match.group(2) or ""
    matchers = []
    pos = 0
    body = body.strip()
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise SelectorError(
                f"selector {text!r}: cannot read the label matcher at {body[pos:]!r}; "
                'write label="value", label!="value", label=~"regex" or label!~"regex"'
            )
        label, op, raw = m.group(1), m.group(2), m.group(3)
        value = re.sub(r"\\(.)", r"\1", raw)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise SelectorError(f"selector {text!r}: {label}{op}: bad regex ({exc})") from None
        matchers.append(Matcher(label, op, value))  # type: ignore[arg-type]
        pos = m.end()
    return Selector(metric, tuple(matchers))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
