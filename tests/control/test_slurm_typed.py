"""The controller's Slurm document is decoded once, at the scraper, into the typed snapshot
the Slurm routes read: a hostile document (a job whose ``state`` is a number, ``nodes`` that
are not a list) makes those routes answer 503 naming the field, never 500, and leaves the
other nodes' data as it was.  A real scraper and the real API, against a small HTTP server
that plays a controller and a worker."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from gpuwarden.config import ServeConfig
from gpuwarden.metrics.scraper import Scraper
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.services.context import ControlPlane
from gpuwarden.slurm.model import SlurmJob, SlurmNode, SlurmPartition, SlurmSnapshot
from gpuwarden.slurm.wire import decode_summary, encode_summary
from gpuwarden.state.db import StateDB
from tests.metrics.hostile_server import real_snapshot

SLURM_ROUTES = ["/api/v1/slurm", "/api/v1/slurm/jobs", "/api/v1/slurm/jobs/7",
                "/api/v1/slurm/nodes", "/api/v1/slurm/partitions"]


def slurm_document() -> dict[str, Any]:
    """What a controller's daemon serves: one running job on one node of two GPUs."""
    return encode_summary(SlurmSnapshot(
        collected_at=time.time(), duration_s=0.1, up=True, interval_s=1.0,
        jobs=(SlurmJob(7, "train", "ana", "gpu", "RUNNING", nodes=("n1",), num_nodes=1,
                       num_cpus=4, tres_per_node="gres/gpu:1", start_time=time.time() - 60,
                       gpu_detail={"n1": (0,)}),
              SlurmJob(8, "eval", "bo", "gpu", "PENDING", reason="Resources")),
        nodes=(SlurmNode("n1", "mixed", cpus_alloc=4, cpus_total=8,
                         partitions=("gpu",)),),
        partitions=(SlurmPartition("gpu", nodes=("n1",)),)))


class Nodes:
    """A controller (``/ctl``) and a worker (``/w1``): GPU snapshots for both, and the
    controller's Slurm document as ``slurm`` makes it (a new cycle each time)."""

    def __init__(self) -> None:
        self.slurm: Callable[[], Any] = slurm_document
        nodes = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                name = self.path.strip("/").split("/", 1)[0]
                if self.path.endswith("/api/v1/slurm"):
                    body = orjson.dumps(nodes.slurm())
                else:
                    body = orjson.dumps(real_snapshot(name))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def nodes() -> Iterator[Nodes]:
    served = Nodes()
    yield served
    served.server.shutdown()
    served.server.server_close()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_hostile_slurm_document_is_a_503_naming_the_field_and_nothing_else_breaks(
        nodes: Nodes, tmp_path: Path) -> None:
    config = ServeConfig.model_validate({
        "cluster": "c", "scrape": {"interval": 0.2, "timeout": 2},
        "nodes": [{"name": "ctl", "url": f"{nodes.base}/ctl", "role": "controller"},
                  {"name": "w1", "url": f"{nodes.base}/w1"}]})
    store = SqliteStore(tmp_path / "metrics.db")
    cp = ControlPlane(config=config, db=StateDB(tmp_path / "state.db"), store=store)
    cp.inventory.sync_config(config.cluster, config.nodes)
    cp.scraper = Scraper(cp.targets, httpx.AsyncClient(), store, interval=0.2, timeout=2.0)
    token = cp.tokens.create("viewer", "v")
    from gpuwarden.api.app import create_app

    with TestClient(create_app(cp, run_scraper=True),
                    headers={"Authorization": f"Bearer {token}"}) as client:
        states = cp.scraper.states

        def decoded() -> bool:
            s = states.get("ctl")
            return s is not None and s.slurm is not None and states.get("w1") is not None \
                and states["w1"].up

        def refused_for(reason: str) -> bool:
            ctl = states["ctl"]
            return ctl.slurm is None and reason in (ctl.slurm_error or "")

        wait_for(decoded, "the first Slurm cycle")
        snap = states["ctl"].slurm
        assert isinstance(snap, SlurmSnapshot)  # decoded once, at the scraper
        assert snap.queue["running"] == 1 and snap.pending_reasons == {"Resources": 1}
        good = {route: client.get(route) for route in SLURM_ROUTES}
        assert all(r.status_code == 200 for r in good.values()), {
            k: r.text for k, r in good.items() if r.status_code != 200}
        summary = good["/api/v1/slurm"].json()
        assert summary["queue"]["running"] == 1 and summary["queue"]["pending"] == 1
        assert summary["pending_reasons"] == {"Resources": 1}
        jobs = {j["job_id"]: j for j in good["/api/v1/slurm/jobs"].json()}
        assert jobs[7]["gpus_allocated"] == 1 and jobs[7]["gpu_detail"] == {"n1": [0]}
        assert jobs[8]["reason_text"] and jobs[7]["reason_text"] is None
        assert client.get("/api/v1/overview").json()["slurm"]["running"] == 1
        worker_before = client.get("/api/v1/nodes/w1").json()

        hostile: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
            ("a job's state is a number", lambda d: d["jobs"][0].update(state=5),
             "jobs[0].state: 5 is not text"),
            ("a job's nodes are not a list", lambda d: d["jobs"][0].update(nodes="n1"),
             "jobs[0].nodes: not a list of text"),
            ("nodes are not a list", lambda d: d.update(nodes={"n1": {}}),
             "nodes: not a list"),
        ]
        for what, spoil, reason in hostile:
            def spoiled(spoil: Callable[[dict[str, Any]], None] = spoil) -> dict[str, Any]:
                doc = slurm_document()
                spoil(doc)
                return doc

            with pytest.raises(ValueError):
                decode_summary(spoiled())
            nodes.slurm = spoiled
            wait_for(functools.partial(refused_for, reason), f"{what}: the document refused")
            ctl = states["ctl"]
            assert ctl.slurm_error is not None and reason in ctl.slurm_error, (what, ctl)
            assert ctl.up  # the controller's GPUs are still scraped
            for route in SLURM_ROUTES:
                r = client.get(route)
                assert r.status_code == 503, (what, route, r.status_code, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert reason in r.json()["detail"], (what, route, r.json())
            overview = client.get("/api/v1/overview")
            assert overview.status_code == 200, overview.text
            assert overview.json()["slurm"] is None
            assert reason in overview.json()["slurm_error"]
            for route in ("/api/v1/nodes", "/api/v1/gpus", "/api/v1/nodes/ctl",
                          "/api/v1/nodes/w1", "/api/v1/status"):
                r = client.get(route)
                assert r.status_code == 200, (what, route, r.text)
            worker = client.get("/api/v1/nodes/w1").json()
            assert worker["up"] and worker["gpus"] == worker_before["gpus"] == 2
            assert [g["uuid"] for g in worker["gpu_list"]] == [
                g["uuid"] for g in worker_before["gpu_list"]]

        nodes.slurm = slurm_document  # a good cycle again: served again
        wait_for(lambda: states["ctl"].slurm is not None, "a good Slurm cycle")
        assert states["ctl"].slurm_error is None
        assert client.get("/api/v1/slurm/jobs/7").status_code == 200
    store.close()
