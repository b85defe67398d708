"""The ``prometheus`` metrics store: Prometheus or VictoriaMetrics scrapes the nodes itself and
gpuwarden reads through the HTTP query API (``/api/v1/query``, ``/api/v1/query_range``,
``/api/v1/series``), which both speak; only plain PromQL (``*_over_time``) is used.

Also :func:`scrape_config` / :func:`write_scrape_config`: the ``scrape_configs`` that make
Prometheus scrape the nodes the way the embedded store ingests them (a ``node`` label with
the inventory's node name; bearer tokens read from files, never written inline); and
:func:`recording_rules`: what only the inventory knows (each node's $/hr) and the GPU states
and costs the control plane computes, as Prometheus recording rules.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from gpuwarden.metrics.model import (
    AGGREGATIONS,
    Aggregation,
    ScrapeTarget,
    Selector,
    Series,
)

DEFAULT_LOOKBACK = 300.0  # seconds: PromQL's default lookback for an instant selector
# VictoriaMetrics hides the newest 30 s of samples from queries (its -search.latencyOffset:
# the last points of a range are missing or repeat an older value) and caches range results;
# gpuwarden's scrapes are complete when written, so it asks for every sample, uncached.
# VictoriaMetrics releases without the per-query latency_offset (Debian 12's 1.79) need
# -search.latencyOffset=0s on their command line. Prometheus ignores both args.
_QUERY_ARGS = {"latency_offset": "0s", "nocache": "1"}
_FUNCTIONS = {a: f"{a}_over_time" for a in AGGREGATIONS}


class PrometheusError(RuntimeError):
    """Prometheus/VictoriaMetrics could not be reached or refused the query."""


class PrometheusStore:
    """:class:`~gpuwarden.metrics.model.MetricsStore` over a Prometheus-compatible query API:
    the reading side only (no :class:`~gpuwarden.metrics.model.MetricsWriter`: Prometheus
    scrapes the nodes itself, see :func:`write_scrape_config`).

    ``client`` is an ``httpx.Client`` whose ``base_url`` is the server (e.g.
    ``http://127.0.0.1:9090``, or VictoriaMetrics' ``http://host:8428``), carrying whatever
    auth it needs; the store does not close a client it was given.  Calls block on HTTP:
    from asyncio, run them through ``asyncio.to_thread``.

    Series carry the labels Prometheus stores: those of the node's ``/metrics``, the
    ``node`` target label, and Prometheus' own ``job`` and ``instance``.
    """

    def __init__(self, client: httpx.Client | str, *, timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._owned = isinstance(client, str)
        self._client = httpx.Client(base_url=client, timeout=timeout) if isinstance(
            client, str) else client
        self._clock = clock

    def latest(self, selector: Selector, *, max_age: float | None = None,
               now: float | None = None) -> list[Series]:
        """The newest raw sample of each series within ``max_age`` (default: PromQL's 5 min
        lookback), with its own timestamp."""
        at = self._clock() if now is None else now
        window = max_age if max_age is not None else DEFAULT_LOOKBACK
        data = self._get("/api/v1/query", {"query": f"{selector}[{_duration(window)}]",
                                           "time": _ts(at), **_QUERY_ARGS})
        out = []
        for item in _result(data, "matrix"):
            values = item.get("values") or []
            if values:
                t, v = values[-1]
                out.append(Series(selector.metric, _labels(item),
                                  [(float(t), float(v))]))
        return out

    def range(self, selector: Selector, start: float, end: float, step: float,
              aggregation: Aggregation = "avg") -> list[Series]:
        """``<aggregation>_over_time(selector[step])`` evaluated every ``step``."""
        if aggregation not in _FUNCTIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        if step <= 0:
            raise ValueError("step must be a positive number of seconds")
        query = f"{_FUNCTIONS[aggregation]}({selector}[{_duration(step)}])"
        data = self._get("/api/v1/query_range", {"query": query, "start": _ts(start),
                                                 "end": _ts(end), "step": _ts(step),
                                                 **_QUERY_ARGS})
        return [Series(selector.metric, _labels(item),
                       [(float(t), float(v)) for t, v in item.get("values") or []])
                for item in _result(data, "matrix")]

    def series(self, selector: Selector) -> list[Mapping[str, str]]:
        data = self._get("/api/v1/series", {"match[]": str(selector)})
        if not isinstance(data, list):
            raise PrometheusError("/api/v1/series did not answer a list")
        return [{k: v for k, v in item.items() if k != "__name__"} for item in data]

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{self._client.base_url}{path}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            raise PrometheusError(
                f"{self._client.base_url}{path}: HTTP {response.status_code}, not JSON: "
                f"{response.text[:200]!r}") from None
        if response.status_code >= 400 or body.get("status") != "success":
            raise PrometheusError(
                f"{self._client.base_url}{path} refused {params}: HTTP {response.status_code} "
                f"{body.get('errorType', '')}: {body.get('error', '')}")
        return body.get("data")


def _result(data: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("resultType") != kind:
        got = data.get("resultType") if isinstance(data, dict) else type(data).__name__
        raise PrometheusError(f"expected a {kind} result, got {got}")
    return list(data.get("result") or [])


def _labels(item: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (item.get("metric") or {}).items() if k != "__name__"}


def _duration(seconds: float) -> str:
    """A PromQL duration both Prometheus and VictoriaMetrics read: whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


def _ts(seconds: float) -> str:
    return f"{seconds:.3f}"


# Scrape configuration -----------------------------------------------------------------------


def scrape_config(targets: Iterable[ScrapeTarget], *, job: str = "gpuwarden-nodes",
                  scrape_interval: float = 15.0, scrape_timeout: float | None = None,
                  ) -> dict[str, Any]:
    """``{"scrape_configs": [...]}`` for the nodes.

    Prometheus sets auth per scrape config, so nodes are grouped by (scheme, path, token
    file); with one shared token that is one scrape config.  Every group carries the same
    ``job`` label.  ``honor_labels`` is on so a node's own ``node`` label (Slurm metrics:
    ``slurm_node_state{node=...}``) keeps its name; GPU series get the target's ``node``.
    """
    if scrape_interval <= 0:
        raise ValueError("scrape_interval must be a positive number of seconds")
    timeout = scrape_timeout if scrape_timeout is not None else min(10.0, scrape_interval)
    if timeout > scrape_interval:
        raise ValueError("scrape_timeout must not exceed scrape_interval")
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ValueError(f"node {target.name!r} is listed twice")
        seen.add(target.name)
        parts = urlsplit(target.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"node {target.name!r}: url {target.url!r} is not "
                             "http(s)://host:port")
        token = str(Path(target.token_file).resolve()) if target.token_file else None
        path = parts.path.rstrip("/") + "/metrics"
        groups.setdefault((parts.scheme, path, token), []).append(
            {"targets": [parts.netloc], "labels": {"node": target.name, "job": job}})
    configs = []
    for i, ((scheme, path, token), static) in enumerate(sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))):
        config: dict[str, Any] = {
            "job_name": job if i == 0 else f"{job}-{i}",
            "scrape_interval": _duration_text(scrape_interval),
            "scrape_timeout": _duration_text(timeout),
            "scheme": scheme,
            "metrics_path": path,
            "honor_labels": True,
            "static_configs": static,
        }
        if token is not None:
            config["authorization"] = {"type": "Bearer", "credentials_file": token}
        configs.append(config)
    return {"scrape_configs": configs}


def write_scrape_config(path: Path | str, targets: Iterable[ScrapeTarget], *,
                        global_config: Mapping[str, Any] | None = None,
                        rule_files: Sequence[str] = (), **options: Any) -> Path:
    """Write a complete ``prometheus.yml`` (``global``, ``rule_files`` + ``scrape_configs``)
    atomically; ``rule_files`` are relative to the file's directory or absolute."""
    document: dict[str, Any] = {}
    if global_config:
        document["global"] = dict(global_config)
    if rule_files:
        document["rule_files"] = list(rule_files)
    document.update(scrape_config(targets, **options))
    return write_yaml(path, document)


def write_yaml(path: Path | str, document: Any, header: str = "") -> Path:
    """Write ``document`` as YAML atomically, readable by other users (Prometheus, Grafana)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o644)  # Prometheus may run as another user
        with os.fdopen(fd, "w") as fh:
            fh.write(header or "# generated by gpuwarden: edits are overwritten\n")
            yaml.safe_dump(document, fh, sort_keys=False, width=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# Recording rules -----------------------------------------------------------------------------

def recording_rules(targets: Iterable[ScrapeTarget], *, idle_percent: float = 5.0,
                    ) -> dict[str, Any]:
    """Recording rules that give Prometheus the control plane's view of cost and waste.

    * ``gpuwarden:node_cost_per_hour{node}``: each inventory node's $/hr, a constant written
      from the inventory at export time (re-export when prices or nodes change);
    * ``gpuwarden:gpu_idle``: 1 while a GPU is below ``idle_percent`` utilization, else 0;
    * ``gpuwarden:gpu_cost_per_hour``: each GPU's share of its node's $/hr (every GPU the node
      reports, a lost one too), while its node answers;
    * ``gpuwarden:gpu_wasted_cost_per_hour``: the same, for GPUs below the idle threshold
      (idle, or allocated to a job but idle);
    * ``gpuwarden:job_gpu_cost_per_hour`` / ``gpuwarden:job_gpu_wasted_cost_per_hour``:
      per GPU and job (``job_id``, ``user``, ``partition`` from ``gpuwarden_gpu_job_info``),
      a GPU shared by several jobs split evenly among them.

    The rules form one group and run in order, so each sees the ones above it.
    """
    rules: list[dict[str, Any]] = []
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ValueError(f"node {target.name!r} is listed twice")
        seen.add(target.name)
        if target.cost_per_hour < 0:
            raise ValueError(f"node {target.name!r}: cost_per_hour must not be negative")
        rules.append({"record": "gpuwarden:node_cost_per_hour",
                      "expr": f"vector({target.cost_per_hour:g})",
                      "labels": {"node": target.name}})
    if not 0 <= idle_percent <= 100:
        raise ValueError("idle_percent must be between 0 and 100")
    shared = "count by (node, gpu) (gpuwarden_gpu_job_info)"
    rules += [
        {"record": "gpuwarden:gpu_idle",
         "expr": f"DCGM_FI_DEV_GPU_UTIL < bool {idle_percent:g}"},
        {"record": "gpuwarden:gpu_cost_per_hour",
         "expr": "(gpuwarden_gpu_up * 0) + on(node) group_left() (gpuwarden:node_cost_per_hour"
                 " / on(node) count by (node) (gpuwarden_gpu_up))"},
        {"record": "gpuwarden:gpu_wasted_cost_per_hour",
         "expr": "gpuwarden:gpu_cost_per_hour and on(node, gpu) (gpuwarden:gpu_idle == 1)"},
        {"record": "gpuwarden:job_gpu_cost_per_hour",
         "expr": "gpuwarden_gpu_job_info * on(node, gpu) group_left() "
                 f"(gpuwarden:gpu_cost_per_hour / on(node, gpu) {shared})"},
        {"record": "gpuwarden:job_gpu_wasted_cost_per_hour",
         "expr": "gpuwarden:job_gpu_cost_per_hour and on(node, gpu) (gpuwarden:gpu_idle == 1)"},
    ]
    return {"groups": [{"name": "gpuwarden-recording", "rules": rules}]}


def _duration_text(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
