"""A real `gpuwarden serve` scraping two real sim node daemons beside twenty hostile nodes
(tests/metrics/hostile_server.py): truncated JSON, HTML, invalid UTF-8, NaN, wrong types,
absurd values, duplicate and huge GPU indices, a clock ten years off, 20,000 field names, a
50 MB body, a slow drip and an endless chunked body.

While it runs, every API route is polled and must never answer 5xx; the event stream must
keep emitting; the good nodes must stay fresh; nothing absurd may be stored or shown; each
bad node shows its reason; and SIGTERM must stop serve within 5 s."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.metrics.hostile_server import HostileServer, hostile_server
from tests.metrics.test_scraper_hostile import EXPECTED, TIMEOUT

pytestmark = pytest.mark.slow

INTERVAL = 0.5


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    with hostile_server() as server:
        yield server


class Poller:
    """Hits every route in a loop from a thread; records any 5xx or failed request, and the
    good nodes' staleness as /api/v1/nodes reports it."""

    def __init__(self, base: str, token: str, good: list[str], names: list[str]) -> None:
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                   timeout=10)
        self.good, self.names = good, names
        self.bad: list[str] = []
        self.rounds = 0
        self.max_stale = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def routes(self) -> list[str]:
        out = ["/api/v1/overview", "/api/v1/nodes", "/api/v1/gpus", "/api/v1/status",
               "/api/v1/gpus?state=busy",
               "/api/v1/query?selector=DCGM_FI_DEV_GPU_UTIL",
               "/api/v1/query?selector=up",
               f"/api/v1/query?selector=DCGM_FI_DEV_GPU_UTIL&start={time.time() - 60:.0f}"
               f"&end={time.time():.0f}&step=1"]
        out += [f"/api/v1/nodes/{n}" for n in self.names]
        out += [f"/api/v1/gpus/{n}/{i}" for n in self.good for i in (0, 1)]
        out += [f"/api/v1/gpus/{self.good[0]}/0/history?range=1h",
                "/api/v1/gpus/bad-util/0", "/api/v1/gpus/bad-huge_index/99999999999",
                "/api/v1/gpus?node=bad-duplicate"]
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for route in self.routes():
                try:
                    r = self.client.get(route)
                except httpx.HTTPError as exc:
                    self.bad.append(f"{route}: {type(exc).__name__}: {exc}")
                    continue
                if r.status_code >= 500:
                    self.bad.append(f"{route}: HTTP {r.status_code} {r.text[:200]}")
                elif route == "/api/v1/nodes":
                    now = time.time()
                    for n in r.json():
                        if n["name"] in self.good and n["last_success"]:
                            self.max_stale = max(self.max_stale, now - n["last_success"])
            self.rounds += 1

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self.client.close()


class Stream:
    """Reads /api/v1/stream in a thread; keeps the arrival time of every event."""

    def __init__(self, base: str, token: str) -> None:
        self.url, self.token = base + "/api/v1/stream", token
        self.events: list[tuple[float, str]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers={"Authorization": f"Bearer {self.token}"},
                              timeout=httpx.Timeout(10, read=20)) as r:
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        self.events.append((time.monotonic(), line[7:]))
                    if self._stop.is_set():
                        return
        except httpx.HTTPError as exc:
            if not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(25)


def _absurd(gpu: dict[str, Any]) -> list[str]:
    out = []
    util = gpu.get("utilization")
    if util is not None and not 0 <= util <= 100:
        out.append(f"utilization {util}")
    for key in ("memory_used_mib", "memory_total_mib", "power_w", "sm_clock_mhz"):
        if gpu.get(key) is not None and gpu[key] < 0:
            out.append(f"{key} {gpu[key]}")
    if not 0 <= gpu["index"] <= 1023:
        out.append(f"index {gpu['index']}")
    return out


def test_hostile_nodes_never_hurt_the_cluster(daemon_factory, hostile, tmp_path,
                                              serve_factory) -> None:
    good = ["good1", "good2"]
    daemons = {name: daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--no-auth",
                                     "--interval", "0.5", "--hostname", name,
                                     "--sim-profile", "0=train"]) for name in good}
    nodes = [{"name": n, "url": d.url} for n, d in daemons.items()]
    nodes += [{"name": f"bad-{b}", "url": hostile.url(b)} for b in EXPECTED]
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "hostile", "scrape": {"interval": INTERVAL, "timeout": TIMEOUT},
        "watchdog": {"interval": 1.0}, "nodes": nodes}))
    serve = serve_factory(config, tmp_path / "home")
    names = [n["name"] for n in nodes]

    with Stream(serve.url, serve.admin) as stream, \
            Poller(serve.url, serve.admin, good, names) as poller:
        # every bad node shows its own reason, in /nodes, /nodes/{name} and /status
        def reasons() -> dict[str, str] | None:
            listed = {n["name"]: n for n in serve.get("/api/v1/nodes").json()}
            if not all(listed[f"bad-{b}"]["error"] for b in EXPECTED):
                return None
            return {name: n["error"] for name, n in listed.items()}

        shown = serve.wait(reasons, timeout=15, what="every bad node scraped")
        for behaviour, reason in EXPECTED.items():
            name = f"bad-{behaviour}"
            assert shown[name].startswith(reason), (name, shown[name])
            detail = serve.get(f"/api/v1/nodes/{name}").json()
            assert not detail["up"] and detail["error"].startswith(reason)
            assert detail["gpu_list"] == []  # no snapshot of it was ever accepted
            if behaviour != "drip":
                assert detail["bad_data"] == detail["error"].removeprefix("bad data: ")
        status = serve.get("/api/v1/status").json()["scrape"]
        assert set(status["bad_data"]) == {f"bad-{b}" for b in EXPECTED if b != "drip"}
        assert status["bad_data"]["bad-util"].startswith(
            "gpus[0].fields.DCGM_FI_DEV_GPU_UTIL: 1e+308 is outside 0..100")
        assert status["garbage_total"] >= len(EXPECTED) - 1
        assert status["up"] == 2 and status["targets"] == len(nodes)

        # the hostile nodes go on answering (their backoff lets a few more scrapes in) while
        # the good ones stay fresh and the stream keeps emitting
        seen = len(stream.events)
        watch_from = time.monotonic()
        serve.wait(lambda: len(stream.events) >= seen + 6 and poller.rounds >= 3,
                   timeout=20, what="more events and polling rounds")
        for name in good:
            node = serve.get(f"/api/v1/nodes/{name}").json()
            assert node["up"] and node["error"] is None and node["bad_data"] is None
            assert time.time() - node["last_success"] < INTERVAL * 1.05 + 1.0
        assert hostile.requests["util"] >= 2 and hostile.requests["big"] >= 1

        # nothing absurd is shown ...
        gpus = serve.get("/api/v1/gpus").json()
        assert {g["node"] for g in gpus} == set(good) and len(gpus) == 4
        assert [x for g in gpus for x in _absurd(g)] == []
        overview = serve.get("/api/v1/overview").json()
        assert overview["nodes"] == {"total": len(nodes), "up": 2, "down": len(nodes) - 2}
        assert overview["gpus"]["total"] == 4
        assert overview["utilization_mean"] is None or 0 <= overview["utilization_mean"] <= 100
        # ... or stored: only the good nodes' GPU series, in range; the bad nodes' up = 0
        def query(selector: str) -> list[dict[str, Any]]:
            return serve.get("/api/v1/query", params={"selector": selector}).json()["series"]

        for metric, lo, hi in (("DCGM_FI_DEV_GPU_UTIL", 0, 100),
                               ("DCGM_FI_DEV_FB_USED", 0, 1 << 24),
                               ("gpuwarden_gpu_up", 0, 1)):
            found = query(metric)
            assert {s["labels"]["node"] for s in found} == set(good), metric
            assert all(lo <= s["points"][-1][1] <= hi for s in found), metric
        assert {s["labels"]["gpu"] for s in query("gpuwarden_gpu_up")} == {"0", "1"}
        assert query("F0") == [] and query("X") == []
        ups = {s["labels"]["node"]: s["points"][-1][1] for s in query("up")}
        assert ups == {**{f"bad-{b}": 0.0 for b in EXPECTED}, "good1": 1.0, "good2": 1.0}
        history = serve.get("/api/v1/query", params={
            "selector": "DCGM_FI_DEV_GPU_UTIL", "start": int(time.time() - 60),
            "end": int(time.time()), "step": 1}).json()["series"]
        assert history and all(0 <= v <= 100 for s in history for _, v in s["points"])

        # the stream kept emitting all along: no gap much longer than a scrape interval
        times = [t for t, _ in stream.events if t >= watch_from]
        assert times and max(b - a for a, b in zip([watch_from, *times], times,
                                                   strict=False)) < 4.0
        assert stream.error is None

    assert poller.bad == [], poller.bad[:10]
    assert poller.rounds >= 3
    assert poller.max_stale < INTERVAL * 1.05 + 1.5, poller.max_stale
    assert not [line for line in serve.lines
                if "failed to evaluate" in line or "cycle failed" in line
                or "Traceback" in line], serve.lines[-40:]

    # a stop is quick, whatever the hostile nodes are doing at that moment
    began = time.monotonic()
    serve.proc.send_signal(signal.SIGTERM)
    serve.proc.wait(timeout=15)
    took = time.monotonic() - began
    assert took < 5.0, f"serve took {took:.1f} s to stop"
    assert serve.proc.returncode == 0, serve.lines[-20:]
