"""``gpuwarden export prometheus --target victoriametrics`` against a real VictoriaMetrics
(Debian's ``victoria-metrics``, started on loopback) scraping a real sim node with the config
as exported, and the prometheus store reading through it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gpuwarden.metrics.model import parse_selector
from gpuwarden.metrics.prometheus import PrometheusStore
from tests.conftest import Daemon, free_port, stop
from tests.deploy.stack import run_cli
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

VM = shutil.which("victoria-metrics")
VMALERT = shutil.which("vmalert")
needs_vm = pytest.mark.skipif(VM is None or VMALERT is None, reason=(
    "victoria-metrics is not installed (apt-get install victoria-metrics; `make "
    "system-deps` installs it)"))


def export(tmp_path: Path, url: str, target: str) -> Path:
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({"cluster": "lab", "scrape": {"interval": 1},
                                      "nodes": [{"name": "n1", "url": url}]}))
    out = tmp_path / target
    run_cli("export", "prometheus", "--config", str(config), "--out", str(out),
            "--target", target, home=tmp_path / "home")
    return out


def dry_run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


@needs_vm
def test_victoriametrics_and_vmalert_accept_the_export_prometheus_does_not(
        tmp_path: Path) -> None:
    vm = export(tmp_path, "http://127.0.0.1:9400", "victoriametrics")
    prom = export(tmp_path, "http://127.0.0.1:9400", "prometheus")
    ok = dry_run(VM, f"-promscrape.config={vm / 'prometheus.yml'}",  # type: ignore[arg-type]
                 "-promscrape.config.dryRun")
    assert ok.returncode == 0, ok.stderr
    refused = dry_run(VM, f"-promscrape.config={prom / 'prometheus.yml'}",  # type: ignore[arg-type]
                      "-promscrape.config.dryRun")
    assert refused.returncode != 0 and "evaluation_interval" in refused.stderr
    rules = [f"-rule={vm / name}" for name in ("gpuwarden-rules.yml",
                                               "gpuwarden-recording-rules.yml")]
    checked = dry_run(VMALERT, "-dryRun", *rules)  # type: ignore[arg-type]
    assert checked.returncode == 0, checked.stderr
    # the same alerts as Prometheus gets, but for vmalert 1.79's unknown keep_firing_for
    alerts = yaml.safe_load((vm / "gpuwarden-rules.yml").read_text())["groups"][0]["rules"]
    theirs = yaml.safe_load((prom / "gpuwarden-rules.yml").read_text())["groups"][0]["rules"]
    assert [{k: v for k, v in r.items() if k != "keep_firing_for"} for r in theirs] == alerts
    assert any("keep_firing_for" in r for r in theirs)


@pytest.fixture
def victoriametrics(tmp_path: Path, daemon_factory: Callable[..., Daemon]
                    ) -> Iterator[tuple[str, Daemon]]:
    node = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--sim-profile", "train",
                           "--no-auth", "--interval", "1"])
    out = export(tmp_path, node.url, "victoriametrics")
    port = free_port()
    proc = subprocess.Popen(
        [VM, f"-httpListenAddr=127.0.0.1:{port}",  # type: ignore[list-item]
         f"-storageDataPath={tmp_path / 'vm-data'}",
         f"-promscrape.config={out / 'prometheus.yml'}",
         # what README says to run: 1.79 has no per-query latency_offset (newer releases
         # take the one the store sends)
         "-search.latencyOffset=0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"victoria-metrics exited {proc.returncode}: "
                                 f"{proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("victoria-metrics to answer /health", healthy, timeout=40)
        yield url, node
    finally:
        stop(proc)


@needs_vm
def test_the_store_reads_the_newest_points_through_victoriametrics(
        victoriametrics: tuple[str, Daemon]) -> None:
    url, _ = victoriametrics
    store = PrometheusStore(url)
    try:
        up = parse_selector('gpuwarden_gpu_up{node="n1"}')
        wait_until("VictoriaMetrics to scrape n1",
                   lambda: len(store.latest(up, max_age=10)) == 2, timeout=40)
        # its value is the time of the node's last poll (every second): the newest point of a
        # range must be the newest poll, not one 30 s old repeated
        polled = parse_selector('gpuwarden_collector_last_success_timestamp_seconds{node="n1"}')
        started = time.time()

        def fresh() -> list[tuple[float, float]] | None:
            now = time.time()
            series = store.range(polled, now - 8, now, 1.0, "last")
            points = series[0].points if series else []
            # VictoriaMetrics' default 30 s latency offset shows nothing this young
            return points if len(points) >= 6 and now - started > 8 else None

        points = wait_until("eight seconds of points", fresh, timeout=40, interval=0.2)
        now = time.time()
        assert now - points[-1][0] < 3 and now - points[-1][1] < 4, points
        assert [v for _, v in points] == sorted(v for _, v in points)
        assert len({v for _, v in points[-3:]}) > 1, points  # not one value repeated
        latest = store.latest(polled, max_age=5)
        assert latest and time.time() - latest[0].points[0][1] < 4
        util = parse_selector('DCGM_FI_DEV_GPU_UTIL{node="n1",gpu="0"}')
        assert {"node", "gpu", "UUID", "Hostname", "job"} <= set(store.series(util)[0])
    finally:
        store.close()
