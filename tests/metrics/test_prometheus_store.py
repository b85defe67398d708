"""The prometheus store and scrape config against a real Prometheus, and a real
VictoriaMetrics, scraping real sim nodes, compared with the embedded store fed the same
nodes' snapshots (latest values and ranges up to the newest points)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gpuwarden.metrics.ingest import snapshot_samples
from gpuwarden.metrics.model import Series, Target, parse_selector
from gpuwarden.metrics.prometheus import (
    PrometheusError,
    PrometheusStore,
    scrape_config,
    write_scrape_config,
)
from gpuwarden.metrics.sqlite_store import SqliteStore
from tests.conftest import Daemon, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed "
    "(apt-get install prometheus; `make test` installs it)")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")

NODES = {"nodeA": "idle", "nodeB": "train"}
# sim jitter between two reads up to a second apart: idle is exact, train wanders a little
TOLERANCE = {"DCGM_FI_DEV_GPU_UTIL": 8.0, "DCGM_FI_DEV_POWER_USAGE": 50.0}


@needs_promtool
def test_generated_config_passes_promtool(tmp_path: Path) -> None:
    shared, other = tmp_path / "cluster.token", tmp_path / "other.token"
    shared.write_text("s3cret-shared\n")
    other.write_text("s3cret-other\n")
    targets = [Target("node1", "http://10.0.0.1:9400", shared),
               Target("node2", "http://10.0.0.2:9400/", shared),
               Target("node3", "https://node3.example:9400", other),
               Target("node4", "http://127.0.0.1:9401", None)]
    path = write_scrape_config(tmp_path / "prometheus.yml", targets, scrape_interval=5,
                               global_config={"evaluation_interval": "15s"})
    run = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    text = path.read_text()
    assert "s3cret" not in text
    configs = yaml.safe_load(text)["scrape_configs"]
    assert len(configs) == 3  # auth is per scrape config: one per token file
    by_node = {}
    for config in configs:
        assert config["scrape_interval"] == "5s"
        for static in config["static_configs"]:
            assert static["labels"]["job"] == "gpuwarden-nodes"
            by_node[static["labels"]["node"]] = (static["targets"], config)
    assert by_node["node1"][0] == ["10.0.0.1:9400"]
    assert by_node["node1"][1] is by_node["node2"][1]
    assert by_node["node1"][1]["authorization"] == {"type": "Bearer",
                                                    "credentials_file": str(shared.resolve())}
    assert by_node["node3"][1]["scheme"] == "https"
    assert "authorization" not in by_node["node4"][1]


def test_scrape_config_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="twice"):
        scrape_config([Target("a", "http://h:1"), Target("a", "http://h:2")])
    with pytest.raises(ValueError, match="http"):
        scrape_config([Target("a", "h:1")])


def test_unreachable_server_is_a_clear_error() -> None:
    store = PrometheusStore(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(PrometheusError, match=r"127\.0\.0\.1"):
        store.latest(parse_selector("up"))
    # the reading side only: Prometheus scrapes for itself, the scraper writes nothing to it
    from gpuwarden.metrics import writer_of

    assert writer_of(store) is None and not hasattr(store, "append")
    store.close()


@pytest.fixture
def nodes(daemon_factory: Callable[..., Daemon]) -> dict[str, Daemon]:
    return {name: daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--sim-profile",
                                  profile, "--no-auth", "--interval", "1", "--hostname", name])
            for name, profile in NODES.items()}


VICTORIAMETRICS = shutil.which("victoria-metrics")


@pytest.fixture(params=["prometheus", "victoriametrics"])
def tsdb(request: pytest.FixtureRequest, tmp_path: Path, nodes: dict[str, Daemon]
         ) -> Iterator[PrometheusStore]:
    """A real Prometheus, or a real VictoriaMetrics (the path README gives for more than one
    machine), scraping the nodes every second with gpuwarden's scrape config."""
    binary = PROMETHEUS if request.param == "prometheus" else VICTORIAMETRICS
    if binary is None:
        pytest.skip(f"{request.param} is not installed (apt-get install {request.param}; "
                    "`make test` installs it)")
    config = write_scrape_config(tmp_path / "prometheus.yml",
                                 [Target(n, d.url) for n, d in nodes.items()],
                                 scrape_interval=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if request.param == "prometheus":
        argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
        health = "/-/ready"
    else:  # as README says to run it: no latency offset, so the newest points are read
        argv = [binary, f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={tmp_path / 'vm-data'}", f"-promscrape.config={config}",
                "-search.latencyOffset=0s", "-loggerLevel=WARN"]
        health = "/health"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"{request.param} exited: {proc.stderr.read()}"
            try:
                return httpx.get(url + health, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(f"{request.param} to be ready", ready)
        with httpx.Client(base_url=url, timeout=5) as client:
            yield PrometheusStore(client)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Ingester(threading.Thread):
    """What the control plane's scraper does: snapshots -> the embedded store, every second."""

    def __init__(self, store: SqliteStore, nodes: dict[str, Daemon]) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.nodes = nodes
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=5) as client:
                while not self.stop.is_set():
                    for name, node in self.nodes.items():
                        snap = client.get(node.url + "/api/v1/snapshot").json()
                        self.store.append(snapshot_samples(name, snap))
                    self.stop.wait(1.0)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def by_gpu(series: list[Series]) -> dict[tuple[str, str], Series]:
    return {(s.labels["node"], s.labels["gpu"]): s for s in series}


def test_same_numbers_through_both_stores(tmp_path: Path, nodes: dict[str, Daemon],
                                          tsdb: PrometheusStore) -> None:
    prometheus = tsdb  # or VictoriaMetrics: the same query API, the same numbers
    embedded = SqliteStore(tmp_path / "embedded.db")
    ingester = Ingester(embedded, nodes)
    ingester.start()
    try:
        util = parse_selector("DCGM_FI_DEV_GPU_UTIL")

        def enough() -> bool:
            assert ingester.error is None, ingester.error
            now = time.time()
            counts = [prometheus.range(util, now - 1, now, 8, "count"),
                      embedded.range(util, now - 1, now, 8, "count")]
            return all(len(c) == 4 and all(s.points and s.points[-1][1] >= 6 for s in c)
                       for c in counts)

        wait_until("6 samples per GPU in both stores", enough)
        ingester.stop.set()
        ingester.join(timeout=10)
        now = time.time()
        for metric, tol in TOLERANCE.items():
            sel = parse_selector(metric)
            names = {(x["node"], x["gpu"]) for x in prometheus.series(sel)}
            assert names == {(x["node"], x["gpu"]) for x in embedded.series(sel)}
            assert names == {(n, g) for n in NODES for g in ("0", "1")}
            prom, emb = by_gpu(prometheus.latest(sel)), by_gpu(embedded.latest(sel))
            assert prom.keys() == emb.keys() == names
            for key in names:
                (pt, pv), (et, ev) = prom[key].points[0], emb[key].points[0]
                assert abs(pt - et) <= 2.5, (metric, key)
                assert abs(pv - ev) <= tol, (metric, key, pv, ev)
                if key[0] == "nodeA":  # idle: no jitter at all
                    assert pv == ev
            end = now - 1.5
            for agg in ("avg", "max", "last"):
                prom = by_gpu(prometheus.range(sel, end - 4, end, 2, agg))
                emb = by_gpu(embedded.range(sel, end - 4, end, 2, agg))
                assert prom.keys() == emb.keys() == names
                for key in names:
                    p, e = dict(prom[key].points), dict(emb[key].points)
                    common = sorted(p.keys() & e.keys())
                    assert len(common) >= 2, (metric, key, p, e)
                    for t in common:
                        assert abs(p[t] - e[t]) <= tol, (metric, agg, key, t, p[t], e[t])
    finally:
        ingester.stop.set()
        ingester.join(timeout=10)
        embedded.close()
