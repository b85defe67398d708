"""Every PromQL expression of gpuwarden's shipped Grafana dashboards, and of NVIDIA's
dcgm-exporter dashboard, against a real Prometheus (configured by `gpuwarden export
prometheus`) scraping sim node daemons and the Slurm collector of a real Slurm cluster: each
returns data.  And the cost recording rules agree with the control plane's own figures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Serve, reference_file
from tests.deploy.stack import (
    COSTS,
    Stack,
    check_queries,
    load_dashboards,
    start_stack,
    substitute,
    targets,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

SHIPPED = ("gpuwarden-cost.json", "gpuwarden-gpus.json", "gpuwarden-overview.json",
           "gpuwarden-slurm.json")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stoppers: list = []
    try:
        yield start_stack(tmp_path_factory.mktemp("deploy"), stoppers)
    finally:
        errors = []
        for stop in stoppers:
            try:
                stop()
            except Exception as exc:  # stop everything, then report
                errors.append(exc)
        assert not errors, errors


def test_every_shipped_dashboard_query_returns_data(stack: Stack) -> None:
    boards = load_dashboards(stack.grafana_dir / "dashboards" / "gpuwarden")
    assert sorted(boards) == list(SHIPPED)
    checked = {name: check_queries(stack, board) for name, board in boards.items()}
    assert all(n >= 10 for n in checked.values()), checked


def test_nvidia_dashboard_works_unchanged(stack: Stack) -> None:
    board = json.loads(reference_file("dcgm", "dcgm-exporter-dashboard.json").read_text())
    assert len(targets(board)) == 8
    assert check_queries(stack, board) == 8


def _value(stack: Stack, expr: str) -> float:
    result = stack.query(expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


def test_cost_and_waste_agree_with_the_control_plane(stack: Stack, serve_factory) -> None:
    # per GPU: a node's $/hr shared among its GPUs (node3's lost GPU still costs)
    per_gpu = {(r["metric"]["node"], r["metric"]["gpu"]): float(r["value"][1])
               for r in stack.query("gpuwarden:gpu_cost_per_hour")}
    assert per_gpu == {**{("node1", g): 4.0 for g in "01"}, **{("node2", g): 4.0 for g in "01"},
                       **{("node3", g): 2.0 for g in "012"}}
    wasted = {(r["metric"]["node"], r["metric"]["gpu"])
              for r in stack.query("gpuwarden:gpu_wasted_cost_per_hour")}
    assert wasted == {("node1", "0"), ("node1", "1")}  # the idle job's GPU and the free one
    jobs = {r["metric"]["job_id"]: float(r["value"][1])
            for r in stack.query("sum by (job_id) (gpuwarden:job_gpu_cost_per_hour)")}
    assert jobs == {stack.jobs["idle"]: 4.0, stack.jobs["train"]: 8.0}
    wasted_jobs = {r["metric"]["job_id"]: (r["metric"]["user"], float(r["value"][1]))
                   for r in stack.query("gpuwarden:job_gpu_wasted_cost_per_hour")}
    assert wasted_jobs == {stack.jobs["idle"]: ("root", 4.0)}

    # the same inventory through `gpuwarden serve`: the same $/hr and waste
    serve: Serve = serve_factory(stack.config, stack.tmp / "serve-home")
    overview = serve.wait(lambda: (lambda o: o if o["nodes"]["up"] == 3 and o["gpus"][
        "total"] == 7 else None)(serve.get("/api/v1/overview").json()), timeout=30,
        what="serve to see the nodes")
    boards = load_dashboards(Path(stack.grafana_dir) / "dashboards" / "gpuwarden")
    overview_exprs = dict((w, e) for w, e in targets(boards["gpuwarden-overview.json"]))
    every = {"node": ".*"}
    cost_expr = substitute(overview_exprs["panel 'Cost ($/hr)' A"], every)
    waste_expr = substitute(overview_exprs["panel 'Wasted ($/hr)' A"], every)
    assert overview["cost_per_hour"] == sum(v for k, v in COSTS.items() if k != "node4") == 22
    assert _value(stack, cost_expr) == pytest.approx(overview["cost_per_hour"])
    assert overview["waste_per_hour"] == 8.0
    assert _value(stack, waste_expr) == pytest.approx(overview["waste_per_hour"])
    gpus = overview["gpus"]
    for title, state in (("GPUs busy", "busy"), ("GPUs idle, no job", "idle"),
                         ("GPUs allocated but idle", "allocated_idle"), ("GPUs lost", "down")):
        expr = substitute(overview_exprs[f"panel {title!r} A"], every)
        got = wait_until(f"{title} to settle", lambda expr=expr, state=state: (
            _value(stack, expr) == gpus[state]) or None, timeout=10, interval=0.5)
        assert got, (title, gpus)
