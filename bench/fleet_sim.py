"""A fleet of simulated gpuwarden nodes in one process, on one port.

Node ``nXXXX`` answers under its own path prefix, exactly as a ``gpuwarden node`` would at
its root::

    GET /n0042/api/v1/snapshot   the node daemon's snapshot JSON (8 simulated GPUs)
    GET /n0042/metrics           the node daemon's Prometheus text exposition
    GET /stats                   this process's own CPU time and request counts (JSON)

Each node owns a real :class:`gpuwarden.gpu.sim.SimSource` behind a real
:class:`gpuwarden.node.poller.GpuPoller`; it is polled lazily, at most once per
``--poll-interval`` seconds (the node daemon's default, 5 s), when a request finds its last
poll older than that.  The JSON is the node daemon's own ``gpu.wire.encode_snapshot``.  The text
exposition is rendered once per node by gpuwarden's own renderer and kept as a template
whose numbers are refilled from each new poll (gpuwarden's renderer costs ~3 ms per node;
refilling costs a tenth of that), and ``--self-check`` proves the template's output is
byte-identical to a fresh render.

The HTTP server is a small asyncio protocol (GET only, keep-alive), several times cheaper
per request than uvicorn with h11, so the simulator is not what a benchmark measures.

Run: ``python bench/fleet_sim.py --nodes 1000 --port 9500``.  It prints ``ready`` and the
base URL once every node is built.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from gpuwarden.gpu.fields import FIELDS
from gpuwarden.gpu.sim import SimSource
from gpuwarden.gpu.wire import encode_snapshot
from gpuwarden.node.exposition import CONTENT_TYPE, GpuCollector, render
from gpuwarden.node.poller import GpuPoller, NodeSnapshot

# GPU g of node i runs PROFILE_MIX[(i + g) % len]: mostly busy, some half-busy, some idle.
PROFILE_MIX = ("train", "train", "train", "inference", "inference", "idle", "train", "idle")
FIELD_NAMES = frozenset(spec.name for spec in FIELDS)
_GPU_LABEL = re.compile(r'[{,]gpu="(\d+)"')
_REASON_LABEL = re.compile(r'[{,]reason="([^"]*)"')

ValueOf = Callable[[NodeSnapshot], float | None]


def node_name(index: int, nodes: int) -> str:
    return f"n{index:0{max(4, len(str(nodes - 1)))}d}"


# -- the /metrics template ---------------------------------------------------------------------


def _field_value(gpu: int, name: str) -> ValueOf:
    def value(snap: NodeSnapshot) -> float | None:
        sample = snap.poll.gpus[gpu]
        if name == "DCGM_FI_DEV_XID_ERRORS":
            return None if sample.last_xid is None else float(sample.last_xid)
        return sample.fields.get(name)

    return value


def _clock_event_value(gpu: int, reason: str) -> ValueOf:
    def value(snap: NodeSnapshot) -> float | None:
        active = snap.poll.gpus[gpu].clock_events.get(reason)
        return None if active is None else (1.0 if active else 0.0)

    return value


_STATS_VALUES: dict[str, ValueOf] = {
    "gpuwarden_collector_poll_duration_seconds": lambda s: s.stats.last_duration_seconds,
    "gpuwarden_collector_last_success_timestamp_seconds":
        lambda s: s.stats.last_success_timestamp,
    "gpuwarden_collector_polls_total": lambda s: float(s.stats.polls_total),
}


def _value_of(series: str) -> ValueOf | None:
    """What a sample line's value follows from poll to poll; None: it stays as rendered."""
    name = series.split("{", 1)[0]
    if name in _STATS_VALUES:
        return _STATS_VALUES[name]
    gpu = _GPU_LABEL.search(series)
    if gpu is None:
        return None
    if name in FIELD_NAMES:
        return _field_value(int(gpu.group(1)), name)
    if name == "gpuwarden_clock_event_active":
        reason = _REASON_LABEL.search(series)
        return _clock_event_value(int(gpu.group(1)), reason.group(1)) if reason else None
    return None


@dataclass
class TextTemplate:
    """A rendered exposition split into fixed text and the values that change per poll."""

    chunks: list[str]  # chunks[k] precedes the value of slots[k]; chunks[-1] ends the text
    slots: list[ValueOf]
    rendered: list[str]  # the values as first rendered: the fallback when a value is absent

    @classmethod
    def from_render(cls, text: str) -> TextTemplate:
        chunks: list[str] = []
        slots: list[ValueOf] = []
        rendered: list[str] = []
        pending: list[str] = []
        for line in text.splitlines(keepends=True):
            value_of = None
            if not line.startswith("#"):
                series, _, value = line.rstrip("\n").rpartition(" ")
                value_of = _value_of(series)
            if value_of is None:
                pending.append(line)
                continue
            pending.append(series + " ")
            chunks.append("".join(pending))
            slots.append(value_of)
            rendered.append(value)
            pending = ["\n"]
        chunks.append("".join(pending))
        return cls(chunks, slots, rendered)

    def fill(self, snap: NodeSnapshot) -> bytes:
        parts: list[str] = []
        append = parts.append
        for chunk, value_of, fallback in zip(self.chunks, self.slots, self.rendered,
                                             strict=False):
            append(chunk)
            value = value_of(snap)
            append(fallback if value is None else floatToGoString(value))
        append(self.chunks[-1])
        return "".join(parts).encode()


# -- one simulated node ----------------------------------------------------------------------


@dataclass
class SimNode:
    name: str
    poller: GpuPoller
    poll_interval: float
    template: TextTemplate | None = None
    _json: tuple[int, bytes] = (-1, b"")
    _text: tuple[int, bytes] = (-1, b"")
    _polls: int = 0

    @classmethod
    def create(cls, index: int, nodes: int, gpus: int, poll_interval: float) -> SimNode:
        name = node_name(index, nodes)
        profiles = {g: PROFILE_MIX[(index + g) % len(PROFILE_MIX)] for g in range(gpus)}
        source = SimSource(gpus, "h100", profiles, hostname=name, seed=index * 1000)
        poller = GpuPoller(source, hostname=name, interval=poll_interval)
        node = cls(name, poller, poll_interval)
        snap = node.snapshot()
        node.template = TextTemplate.from_render(render([GpuCollector(lambda: snap)]).decode())
        return node

    def snapshot(self) -> NodeSnapshot:
        """The latest poll, polling first when it is older than the poll interval."""
        snap = self.poller.latest()
        if snap is None or time.time() - snap.poll.timestamp >= self.poll_interval:
            snap = self.poller.poll_once()
            assert snap is not None
            self._polls += 1
        return snap

    def snapshot_json(self) -> bytes:
        snap = self.snapshot()
        if self._json[0] != self._polls:
            body = json.dumps(encode_snapshot(snap, time.time())).encode()
            self._json = (self._polls, body)
        return self._json[1]

    def metrics_text(self) -> bytes:
        snap = self.snapshot()
        if self._text[0] != self._polls:
            assert self.template is not None
            self._text = (self._polls, self.template.fill(snap))
        return self._text[1]


def self_check(node: SimNode) -> str | None:
    """None when the template renders a new poll exactly as gpuwarden's renderer does."""
    snap = node.poller.poll_once()
    assert snap is not None and node.template is not None
    expected = render([GpuCollector(lambda: snap)])
    got = node.template.fill(snap)
    if got == expected:
        return None
    for a, b in zip(expected.decode().splitlines(), got.decode().splitlines(), strict=False):
        if a != b:
            return f"first differing line:\n  gpuwarden: {a}\n  template:  {b}"
    return f"lengths differ: gpuwarden {len(expected)} bytes, template {len(got)} bytes"


# -- HTTP ------------------------------------------------------------------------------------


@dataclass
class Fleet:
    nodes: dict[str, SimNode]
    started: float = field(default_factory=time.time)
    requests: dict[str, int] = field(default_factory=lambda: {"snapshot": 0, "metrics": 0,
                                                              "other": 0})

    def stats(self) -> bytes:
        t = os.times()
        return json.dumps({
            "nodes": len(self.nodes),
            "uptime_seconds": time.time() - self.started,
            "cpu_seconds": t.user + t.system,
            "requests": self.requests,
        }).encode()

    def route(self, path: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        prefix, _, rest = path[1:].partition("/")
        node = self.nodes.get(prefix)
        if node is not None:
            if rest == "api/v1/snapshot":
                self.requests["snapshot"] += 1
                return 200, "application/json", node.snapshot_json()
            if rest == "metrics":
                self.requests["metrics"] += 1
                return 200, CONTENT_TYPE, node.metrics_text()
            if rest == "healthz":
                return 200, "application/json", b'{"status":"ok"}'
        self.requests["other"] += 1
        if path == "/stats":
            return 200, "application/json", self.stats()
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        return 404, "text/plain", b"not found\n"


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 GET with keep-alive; enough for httpx and Prometheus, nothing more."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self._respond(400, "text/plain", b"request too large\n", close=True)
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self._respond(400, "text/plain", b"bad request line\n", close=True)
                return
            method, target, version = parts
            close = version == "HTTP/1.0" or any(
                h.lower().replace(" ", "") == "connection:close" for h in lines[1:])
            if method not in ("GET", "HEAD"):
                self._respond(405, "text/plain", b"GET only\n", close=close)
                continue
            status, ctype, body = self.fleet.route(target)
            self._respond(status, ctype, body if method == "GET" else b"", close=close,
                          length=len(body))

    def _respond(self, status: int, ctype: str, body: bytes, *, close: bool,
                 length: int | None = None) -> None:
        if self.transport is None:
            return
        size = len(body) if length is None else length
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {size}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
        self.transport.write(head.encode() + body)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(fleet: Fleet, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(fleet), host, port, backlog=4096,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    names = list(fleet.nodes)
    print(f"ready: {len(names)} nodes at http://{host}:{bound}/{names[0]} ... /{names[-1]}",
          flush=True)
    async with server:
        await stop.wait()


def build_fleet(nodes: int, gpus: int, poll_interval: float) -> Fleet:
    return Fleet({n.name: n for n in (SimNode.create(i, nodes, gpus, poll_interval)
                                      for i in range(nodes))})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per node")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9500, help="0: any free port")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="seconds between a node's GPU polls (the node daemon's default)")
    parser.add_argument("--self-check", action="store_true",
                        help="check the /metrics template against gpuwarden's renderer and exit")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus < 1:
        parser.error("--nodes and --gpus must be at least 1")
    began = time.perf_counter()
    fleet = build_fleet(args.nodes, args.gpus, args.poll_interval)
    print(f"built {args.nodes} nodes x {args.gpus} GPUs in {time.perf_counter() - began:.1f} s",
          flush=True)
    if args.self_check:
        failures = [(name, why) for name, node in fleet.nodes.items()
                    if (why := self_check(node)) is not None]
        for name, why in failures[:3]:
            print(f"{name}: template differs from gpuwarden's render: {why}")
        print(f"self-check: {len(fleet.nodes) - len(failures)}/{len(fleet.nodes)} nodes "
              "byte-identical to gpuwarden's renderer")
        return 1 if failures else 0
    asyncio.run(serve(fleet, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
