"""One series mapping: what a node's ``/metrics`` exports is what the embedded store holds
after the control plane's scraper ingests the node's snapshots, and what a real Prometheus
scraping the same nodes stores: the same names, label keys and label values, plus the
``node`` label (a series' own ``node``, as on ``slurm_node_state``, is kept, as Prometheus
keeps it with ``honor_labels``).

Three real node apps (``gpuwarden.node.app.create_app``) served over HTTP: simulated GPUs
with the XID and thermal fault profiles, a lost GPU and a Slurm job; NVML GPUs (the fake
pynvml of tests/fakes) with a lost GPU, NVML errors and a job found through a process; and
a Slurm controller whose Slurm snapshot is parsed from the outputs recorded from a real
cluster (tests/slurm/data).  Each node's poller is polled a few times, then frozen, so
``/metrics``, ``/api/v1/snapshot`` and ``/api/v1/slurm`` describe one state.  And a real
``gpuwarden node --slurm-controller`` on the session's real Slurm cluster, where there is
one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import httpx
import pytest
import uvicorn

from gpuwarden.gpu.nvml import NvmlSource
from gpuwarden.gpu.sim import SimSource
from gpuwarden.metrics.model import Target, parse_selector
from gpuwarden.metrics.prometheus import PrometheusStore, write_scrape_config
from gpuwarden.metrics.scraper import Scraper
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.node.app import create_app
from gpuwarden.node.jobs import JobRef
from gpuwarden.node.poller import GpuPoller
from gpuwarden.node.slurm import SlurmBridge
from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SubmitOptions
from gpuwarden.slurm.model import SlurmSnapshot
from gpuwarden.slurm.parsers import FieldFormatShape, parse_sdiag
from tests.conftest import Daemon, free_port
from tests.fakes.fake_pynvml import FakeNvml, h100
from tests.waiting import wait_until

DATA = Path(__file__).resolve().parent.parent / "slurm" / "data"
PROMETHEUS = shutil.which("prometheus")
SCRAPER_OWN = {"up", "scrape_duration_seconds"}  # the scraper's per-target series
PROMETHEUS_OWN = {"job", "instance"}  # labels Prometheus adds to every series

Series = frozenset[tuple[str, str]]  # a label set


class Frozen:
    """A poller's latest snapshot, fixed: the poller is polled by the test only."""

    def __init__(self, poller: GpuPoller, polls: int, clock: list[float]) -> None:
        for _ in range(polls):
            clock[0] += 5.0
            poller.poll_once()
        self.snapshot = poller.latest()
        assert self.snapshot is not None

    def __call__(self):  # -> NodeSnapshot
        return self.snapshot


class RecordedSlurm:
    """What SlurmBridge reads of a collector: its latest snapshot."""

    def __init__(self, snapshot: SlurmSnapshot) -> None:
        self.snapshot = snapshot

    def latest(self) -> SlurmSnapshot:
        return self.snapshot


class ProcessJobs:
    """The job mapper: pid 4242 belongs to Slurm job 77."""

    def job_for_pid(self, pid: int) -> JobRef | None:
        return JobRef("77", user="alice", partition="gpu") if pid == 4242 else None

    def forget_except(self, pids: object) -> None:
        pass


def recorded_slurm(now: float) -> SlurmSnapshot:
    shape = FieldFormatShape()
    info = shape.parse_nodes((DATA / "sinfo_format.txt").read_text())
    jobs = tuple(shape.parse_jobs((DATA / "squeue_format.txt").read_text()))
    return SlurmSnapshot(
        collected_at=now - 3, duration_s=0.2, up=True, jobs=jobs, nodes=info.nodes,
        partitions=info.partitions, stats=parse_sdiag((DATA / "sdiag.txt").read_text()),
        error_counts=MappingProxyType({"sinfo": 2}),
        command_durations=MappingProxyType({"squeue": 0.011, "sinfo": 0.02, "sdiag": 0.004}),
        last_success=now - 3, listed=frozenset(j.job_id for j in jobs))


@dataclass
class Node:
    name: str
    url: str
    role: str


@contextlib.contextmanager
def served(app: object) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the node app did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    now = time.time()
    clock = [now - 200.0]  # the GPU sources' clock: polls 5 s apart, ending before now

    def fake_clock() -> float:
        return clock[0]

    sim = SimSource(5, "h100", {0: "xid-storm", 1: "thermal-throttle", 2: "train", 3: "lost",
                                4: "idle"}, hostname="sim-a", seed=5, clock=fake_clock)
    sim_poller = GpuPoller(sim, hostname="sim-a", interval=5, clock=fake_clock,
                           allocations=lambda: {2: [JobRef("42", "ana", "gpu",
                                                           source="slurm")]})
    sim_node = Frozen(sim_poller, 20, clock)
    assert any(g.xids for g in sim_node.snapshot.poll.gpus), "no XID in 100 s of xid-storm"
    assert any(g.clock_events.get("hw_thermal_slowdown") for g in sim_node.snapshot.poll.gpus)

    fake = FakeNvml([h100(i) for i in range(3)])
    fake.gpus[0].processes = [(4242, 1024**3)]
    nvml = NvmlSource(fake, xid_wait_ms=50, backoff_initial=0.0)
    nvml.start()
    fake.gpus[1].lost = True
    fake.gpus[2].clock_reasons = 0x40
    fake.inject_xid(0, 48)
    time.sleep(0.3)  # the XID event thread
    nvml_node = Frozen(GpuPoller(nvml, hostname="nvml-b", interval=5, mapper=ProcessJobs(),
                                 clock=fake_clock), 2, clock)
    nvml.close()

    ctl_poller = GpuPoller(SimSource(2, "a100", {0: "train"}, hostname="ctl", seed=9,
                                     clock=fake_clock), hostname="ctl", interval=5,
                           clock=fake_clock)
    ctl_node = Frozen(ctl_poller, 2, clock)
    bridge = SlurmBridge(RecordedSlurm(recorded_slurm(now)), None, "ctl",  # type: ignore[arg-type]
                         controller=True)

    apps = [("sim-a", create_app(sim_node, token=None), "worker"),
            ("nvml-b", create_app(nvml_node, token=None), "worker"),
            ("ctl", create_app(ctl_node, token=None, extra_collectors=bridge.metric_collectors(),
                               extra_routes=bridge.routes()), "controller")]
    with contextlib.ExitStack() as stack:
        yield [Node(name, stack.enter_context(served(app)), role) for name, app, role in apps]


SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
ESCAPE = re.compile(r"\\(.)")


def exposed(node: Node) -> dict[tuple[str, Series], float]:
    """Every sample of the node's /metrics as Prometheus stores it: (name as exposed, labels
    with the target's node label unless the series has its own, empty ones dropped) ->
    value.  (prometheus_client's parser would rename counters that lack ``_total``.)"""
    text = httpx.get(node.url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.fullmatch(line)
        assert match, line
        name, label_text, value = match.groups()
        labels = {"node": node.name}
        for key, raw in LABEL.findall(label_text or ""):
            labels[key] = ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], raw)
        labels = {k: v for k, v in labels.items() if v}
        out[(name, frozenset(labels.items()))] = float(value)
    return out


@pytest.fixture(scope="module")
def exposition(nodes: list[Node]) -> dict[tuple[str, Series], float]:
    out: dict[tuple[str, Series], float] = {}
    for node in nodes:
        out.update(exposed(node))
    return out


def scrape_into(store: SqliteStore, nodes: list[Node]) -> None:
    """What the control plane's scraper does, once per node."""
    targets = [Target(n.name, n.url, role=n.role) for n in nodes]

    async def scrape() -> None:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(targets=lambda: targets, client=client, store=store)
            for target in targets:
                state = await scraper.scrape_once(target)
                assert state.up and state.error is None, (target.name, state.error)
                if target.role == "controller":
                    assert state.slurm is not None, state.slurm_error
            await scraper.flush()
            assert scraper.ingest.failed_batches == 0

    asyncio.run(scrape())


@pytest.fixture(scope="module")
def embedded(nodes: list[Node], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded store after the control plane's scraper scraped every node once."""
    path = tmp_path_factory.mktemp("embedded") / "metrics.db"
    with SqliteStore(path) as store:
        scrape_into(store, nodes)
    return path


def stored_series(path: Path) -> set[tuple[str, Series]]:
    """Every series the embedded store registered (its series table)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT metric, labels FROM series").fetchall()
    return {(metric, frozenset(json.loads(labels).items())) for metric, labels in rows
            if metric not in SCRAPER_OWN}


def keys(series: Series) -> frozenset[str]:
    return frozenset(k for k, _ in series)


def test_the_exposition_has_what_the_embedded_store_used_to_miss(
        exposition: dict[tuple[str, Series], float]) -> None:
    names = {name for name, _ in exposition}
    assert {"gpuwarden_xid_errors_total", "gpuwarden_clock_event_active",
            "DCGM_FI_DEV_XID_ERRORS", "gpuwarden_gpu_info", "gpuwarden_build_info",
            "gpuwarden_collector_polls_total", "gpuwarden_collector_errors_total",
            "gpuwarden_collector_healthy", "gpuwarden_gpu_job_info", "slurm_up",
            "slurm_node_state", "slurm_collector_errors_total", "slurm_jobs",
            "slurm_scheduler_backfill_last_cycle"} <= names
    util = [dict(labels) for name, labels in exposition if name == "DCGM_FI_DEV_GPU_UTIL"]
    assert {"modelName", "pci_bus_id", "device", "DCGM_FI_DRIVER_VERSION"} <= set(util[0])


def test_the_embedded_store_holds_exactly_the_exported_series(
        exposition: dict[tuple[str, Series], float], embedded: Path) -> None:
    stored = stored_series(embedded)
    exported = set(exposition)
    assert stored - exported == set(), "stored, not exported"
    assert exported - stored == set(), "exported, not stored"


def test_the_store_answers_each_exported_name_with_its_series_and_values(
        exposition: dict[tuple[str, Series], float], embedded: Path) -> None:
    by_name: dict[str, dict[Series, float]] = {}
    for (name, labels), value in exposition.items():
        by_name.setdefault(name, {})[labels] = value
    with SqliteStore(embedded) as store:
        for name, want in by_name.items():
            got = {frozenset(s.labels.items()): s.points[-1][1]
                   for s in store.latest(parse_selector(name))}
            assert got == want, name
        # the example: 0 series on the embedded store before, all of them now
        sel = parse_selector('DCGM_FI_DEV_GPU_UTIL{modelName="NVIDIA H100 80GB HBM3"}')
        h100_util = [labels for (name, labels) in exposition
                     if name == "DCGM_FI_DEV_GPU_UTIL"
                     and ("modelName", "NVIDIA H100 80GB HBM3") in labels]
        assert len(store.series(sel)) == len(h100_util) >= 5
        # a series' own node label is the Slurm node's; the others get the target's
        states = {s["node"] for s in store.series(parse_selector("slurm_node_state"))}
        assert states == {"node1", "node2", "node3", "node4"}
        assert {s["node"] for s in store.series(parse_selector("slurm_up"))} == {"ctl"}


@pytest.mark.slow
def test_a_live_slurm_controller_too(daemon_factory: Callable[..., Daemon],
                                     slurm_cluster: LocalSlurmCluster, tmp_path: Path) -> None:
    """A real controller daemon on the session's real cluster (a held job in the queue),
    polled once (long intervals), so its /metrics and its snapshots stay one state."""
    actions = SlurmActions(slurm_cluster.adapter())
    job = actions.submit("#!/bin/sh\nsleep 300\n", SubmitOptions(name="parity", hold=True))
    try:
        daemon = daemon_factory(
            ["--gpu-backend", "sim", "--sim-gpus", "2", "--sim-profile", "0=thermal-throttle",
             "--interval", "3600", "--slurm-controller", "--slurm-node", "node1",
             "--hostname", "ctl", "--slurm-interval", "3600", "--no-auth"],
            env=slurm_cluster.env())
        node = Node("ctl", daemon.url, "controller")
        exported = exposed(node)
        names = {name for name, _ in exported}
        assert {"slurm_up", "slurm_node_state", "slurm_jobs", "slurm_queue_pending",
                "gpuwarden_clock_event_active", "gpuwarden_gpu_info"} <= names
        with SqliteStore(tmp_path / "metrics.db") as store:
            scrape_into(store, [node])
        assert stored_series(tmp_path / "metrics.db") == set(exported)
    finally:
        actions.cancel(job)


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed "
                    "(apt-get install prometheus; `make test` installs it)")
def test_prometheus_stores_the_same_series_as_the_embedded_store(
        nodes: list[Node], exposition: dict[tuple[str, Series], float], embedded: Path,
        tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    config = write_scrape_config(tmp_path / "prometheus.yml",
                                 [Target(n.name, n.url) for n in nodes],
                                 scrape_interval=1)
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            def ready() -> bool:
                assert proc.poll() is None, f"prometheus exited: {proc.stderr.read()}"
                try:
                    return client.get("/-/ready").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until("prometheus to be ready", ready, interval=0.3)
            prometheus = PrometheusStore(client)
            names = sorted({name for name, _ in exposition})

            def scraped() -> bool:
                up = prometheus.latest(parse_selector("up"))
                return len(up) == len(nodes) and all(s.points[-1][1] == 1 for s in up) and \
                    bool(prometheus.series(parse_selector("slurm_node_state")))

            wait_until("prometheus to scrape every node", scraped, interval=0.3)
            held: set[tuple[str, Series]] = set()
            for name in names:
                for labels in prometheus.series(parse_selector(name)):
                    held.add((name, frozenset((k, v) for k, v in labels.items()
                                              if k not in PROMETHEUS_OWN)))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stored = stored_series(embedded)
    assert held - stored == set(), "held by Prometheus only"
    assert stored - held == set(), "held by the embedded store only"
    assert {(name, keys(labels)) for name, labels in held} == \
        {(name, keys(labels)) for name, labels in stored}
