"""A node that answers ``/api/v1/snapshot`` with something hostile: one asyncio HTTP/1.1
server in a thread, the behaviour chosen by the first path segment of the node's URL
(``http://127.0.0.1:PORT/<behaviour>``, so one server plays many nodes).

Snapshots start from what a real node daemon serves (``encode_snapshot`` of sim GPUs,
timestamped at the request) and are then broken one way each."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from gpuwarden.gpu.sim import SimSource
from gpuwarden.gpu.wire import encode_snapshot
from gpuwarden.node.poller import GpuPoller
from gpuwarden.slurm.model import SlurmJob, SlurmNode, SlurmPartition, SlurmSnapshot
from gpuwarden.slurm.wire import encode_summary

Snapshot = dict[str, Any]


@functools.cache
def _base_snapshot(gpus: int) -> bytes:
    poller = GpuPoller(SimSource(gpus, "h100", {0: "train"}, seed=3), hostname="base",
                       interval=5)
    poller.poll_once()
    return orjson.dumps(encode_snapshot(poller.latest(), time.time()))


def real_snapshot(hostname: str, gpus: int = 2) -> Snapshot:
    """A node daemon's snapshot of ``gpus`` sim GPUs, taken now, from ``hostname``."""
    snap: Snapshot = orjson.loads(_base_snapshot(gpus))  # a fresh copy to break
    snap["node"]["hostname"] = hostname
    snap["timestamp"] = time.time()
    snap["age_seconds"] = 0.0
    return snap


def _gpu0(change: Callable[[dict[str, Any]], None]) -> Callable[[Snapshot], None]:
    def mutate(snap: Snapshot) -> None:
        change(snap["gpus"][0])
    return mutate


def _field(name: str, value: Any) -> Callable[[Snapshot], None]:
    return _gpu0(lambda g: g["fields"].__setitem__(name, value))


def _indices(*indices: int) -> Callable[[Snapshot], None]:
    def mutate(snap: Snapshot) -> None:
        for gpu, index in zip(snap["gpus"], indices, strict=True):
            gpu["index"] = index
    return mutate


def _many_names(snap: Snapshot) -> None:
    snap["gpus"][0]["fields"].update({f"F{i}": 1.0 for i in range(20_000)})


def _ten_years_ahead(snap: Snapshot) -> None:
    snap["timestamp"] += 10 * 365 * 86400


# behaviour -> how the snapshot is broken (JSON-level breakage is in _respond)
MUTATIONS: dict[str, Callable[[Snapshot], None]] = {
    "processes": _gpu0(lambda g: g.__setitem__("processes", "lots")),
    "clock_events": _gpu0(lambda g: g.__setitem__("clock_events", ["hw_slowdown"])),
    "jobs": _gpu0(lambda g: g.__setitem__("jobs", {"job_id": 1})),
    "name": _gpu0(lambda g: g.__setitem__("name", 5)),
    "node": lambda s: s.__setitem__("node", "evil"),
    "fields": _gpu0(lambda g: g.__setitem__("fields", [1, 2, 3])),
    "util": _field("DCGM_FI_DEV_GPU_UTIL", 1e308),
    "negmem": _field("DCGM_FI_DEV_FB_USED", -1024.0),
    "minus_one": _indices(-1, -1),
    "duplicate": _indices(0, 0),
    "huge_index": _indices(0, 99999999999),
    "future": _ten_years_ahead,
    "names": _many_names,
}
RAW = ("truncated", "html", "utf8", "nan", "big", "drip", "endless", "bomb", "close")
BEHAVIOURS = (*MUTATIONS, *RAW)
BIG = 50 * 1024 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """100 MB of spaces, gzip-compressed to ~100 kB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1024 * 1024)
    return b"".join([*(packer.compress(block) for _ in range(100)), packer.flush()])


class HostileServer:
    def __init__(self) -> None:
        gzip_bomb()  # made now: making it in the loop would stall every other node ~0.5 s
        _base_snapshot(2)
        self.loop = asyncio.new_event_loop()
        self.requests: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        started.set()
        self.loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while True:  # keep-alive: the scraper reuses its connections
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                behaviour = path.strip("/").split("/", 1)[0]
                self.requests[behaviour] = self.requests.get(behaviour, 0) + 1
                if path.endswith("/api/v1/slurm"):
                    self._slurm(behaviour, writer)
                elif not await self._respond(behaviour, writer):
                    break
        writer.close()

    def _slurm(self, behaviour: str, writer: asyncio.StreamWriter) -> None:
        """A controller's Slurm summary (what its daemon serves), or (``slurm_*``) not."""
        doc: Any = encode_summary(SlurmSnapshot(
            collected_at=time.time(), duration_s=0.1, up=True,
            jobs=(SlurmJob(7, "train", "ana", "gpu", "RUNNING", nodes=("n1",), num_cpus=4),),
            nodes=(SlurmNode("n1", "mixed", cpus_alloc=4, cpus_total=8),),
            partitions=(SlurmPartition("gpu", nodes=("n1",)),)))
        if behaviour == "slurm_queue":
            doc["queue"] = {"running": "many"}
        elif behaviour == "slurm_job":  # the right shape, a field of the wrong type
            doc["jobs"][0]["num_cpus"] = "four"
        elif behaviour == "slurm_list":
            doc = [doc]
        body = orjson.dumps(doc)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    async def _respond(self, behaviour: str, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False: the connection is done."""
        if behaviour == "drip":  # a valid head, then a byte every 0.2 s, forever
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n")
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        if behaviour == "endless":  # chunked, chunks of a JSON list that never closes
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n5\r\n[1, 2\r\n")
            piece = b", 1" * 20_000
            chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            while True:
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0)  # drain() need not yield: let the other nodes answer
        if behaviour == "close":  # no length: the body ends when the connection does (never)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\n\r\n[")
            block = b"1, " * 100_000
            while True:
                writer.write(block)
                await writer.drain()
                await asyncio.sleep(0)
        if behaviour == "bomb":
            body = gzip_bomb()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Encoding: gzip\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            return True
        if behaviour == "big":  # 50 MB announced and sent (if anyone reads it)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {BIG}\r\n\r\n".encode())
            block = b" " * (1024 * 1024)
            for _ in range(BIG // len(block)):
                writer.write(block)
                await writer.drain()
                await asyncio.sleep(0)
            return True
        snap = real_snapshot(behaviour)
        ctype = b"application/json"
        if behaviour in MUTATIONS:
            MUTATIONS[behaviour](snap)
            body = orjson.dumps(snap)
        elif behaviour == "truncated":
            body = orjson.dumps(snap)[:2000]
        elif behaviour == "html":
            body, ctype = b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"text/html"
        elif behaviour == "utf8":
            body = orjson.dumps(snap).replace(b'"NVIDIA H100', b'"\xff\xfe H100', 1)
        elif behaviour == "nan":
            body = orjson.dumps(snap).replace(b'"DCGM_FI_DEV_GPU_UTIL":', b'"X":NaN,"Y":', 1)
        else:
            body = orjson.dumps(snap)  # a well-behaved node
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return True


@contextlib.contextmanager
def hostile_server() -> Iterator[HostileServer]:
    server = HostileServer()
    try:
        yield server
    finally:
        server.close()
