"""The scraper against hostile nodes, in process, on both HTTP paths (the fast client and
httpx): every refusal is "bad data" with its reason, stores nothing and keeps the last good
snapshot; a huge or endless body is cut off at the cap and a slow drip at the timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuwarden.metrics.model import Target, parse_selector
from gpuwarden.metrics.scraper import Scraper, check_slurm_summary
from gpuwarden.metrics.sqlite_store import SqliteStore
from tests.metrics.hostile_server import HostileServer, hostile_server
from tests.metrics.test_store_hostile import many_nodes

# The scrape deadline of the all-at-once test. Every node there shares one event loop (and
# the GIL with the hostile server's thread), so a node's answer waits on the others': the
# batch costs ~0.35 s of wall time on httpx on an idle 2-core machine and ~0.6 s beside two
# busy cores (each refusal itself costs milliseconds: 7 ms to parse and refuse the 20,035
# field names). A 1 s deadline let a loaded machine (a parallel test run) turn a refusal
# into a timeout; the drip still proves the deadline, whatever it is.
TIMEOUT = 3.0

EXPECTED = {
    "truncated": "bad data: not JSON: ",
    "html": "bad data: not JSON: unexpected character",
    "utf8": "bad data: not JSON: str is not valid UTF-8",
    "nan": "bad data: not JSON: ",
    "processes": "bad data: gpus[0].processes: text, not a list",
    "clock_events": "bad data: gpus[0].clock_events: a list, not an object",
    "jobs": "bad data: gpus[0].jobs: an object, not a list",
    "name": "bad data: gpus[0].name: 5 is not text",
    "node": "bad data: node: text, not an object",
    "fields": "bad data: gpus[0].fields: a list, not an object",
    "util": "bad data: gpus[0].fields.DCGM_FI_DEV_GPU_UTIL: 1e+308 is outside 0..100",
    "negmem": "bad data: gpus[0].fields.DCGM_FI_DEV_FB_USED: -1024 is outside 0..",
    "minus_one": "bad data: gpus[0].index: -1 is outside 0..1023",
    "duplicate": "bad data: gpus[1].index: 0 is also the index of gpus[0]",
    "huge_index": "bad data: gpus[1].index: 99999999999 is outside 0..1023",
    "future": "bad data: timestamp: ",
    "names": "bad data: gpus[0].fields: 20035 fields, more than the 128 accepted per GPU",
    "big": "bad data: the snapshot is over 4194304 bytes",
    "endless": "bad data: the snapshot is over 4194304 bytes",
    "close": "bad data: the snapshot is over 4194304 bytes",
    "bomb": "bad data: the snapshot is over 4194304 bytes",
    "drip": f"timeout after {TIMEOUT:g} s",
}


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with hostile_server() as s:
        yield s


@pytest.mark.parametrize("fast", [True, False], ids=["fast-client", "httpx"])
def test_every_hostile_node_is_refused_with_its_reason(server: HostileServer, tmp_path: Path,
                                                       fast: bool) -> None:
    store = SqliteStore(tmp_path / "m.db", synchronous="NORMAL")
    targets = [Target(b, server.url(b)) for b in EXPECTED] + [Target("good",
                                                                     server.url("good"))]

    async def main() -> tuple[Scraper, dict[str, float]]:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(lambda: targets, client, store, timeout=TIMEOUT, fast_http=fast)
            took: dict[str, float] = {}

            async def one(t: Target) -> None:
                began = time.monotonic()
                await scraper.scrape_once(t)
                took[t.name] = time.monotonic() - began

            await asyncio.gather(*(one(t) for t in targets))
            await scraper.flush()
            return scraper, took

    scraper, took = asyncio.run(main())
    states = scraper.states
    for name, reason in EXPECTED.items():
        state = states[name]
        assert not state.up and state.error is not None and state.error.startswith(reason), \
            (name, state.error)
        assert state.snapshot is None
        if name != "drip":
            assert state.bad_data == state.error.removeprefix("bad data: ")
            assert state.garbage_total == 1
        assert took[name] < TIMEOUT + 1.5, (name, took[name])  # the cap and the timeout hold
    assert states["good"].up and states["good"].bad_data is None
    assert states["good"].snapshot is not None
    assert store.series(parse_selector("DCGM_FI_DEV_GPU_UTIL")) != []
    nodes = {s["node"] for s in store.series(parse_selector("DCGM_FI_DEV_GPU_UTIL"))}
    assert nodes == {"good"}
    assert store.series(parse_selector("F0")) == []
    ups = {s.labels["node"]: s.points[-1][1] for s in store.latest(parse_selector("up"))}
    assert ups == {**dict.fromkeys(EXPECTED, 0.0), "good": 1.0}
    store.close()


def test_bad_data_keeps_the_last_good_snapshot_and_clears_on_recovery(
        server: HostileServer, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db", synchronous="NORMAL")
    target = Target("flaky", server.url("good"))

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(lambda: [target], client, store, timeout=1.0)
            good = await scraper.scrape_once(target)
            first = good.snapshot
            assert good.up and first is not None
            bad = await scraper.scrape_once(Target("flaky", server.url("util")))
            # each scrape publishes a new immutable state, swapped in whole
            assert bad is not good and scraper.states["flaky"] is bad
            assert good.up and good.bad_data is None  # what a reader held is unchanged
            assert not bad.up and bad.snapshot is first and bad.bad_data is not None
            again = await scraper.scrape_once(target)
            assert again.up and again.bad_data is None and again.error is None
            assert again.snapshot is not first and again.garbage_total == 1

    asyncio.run(main())
    store.close()


def test_a_token_file_that_cannot_be_used_is_the_nodes_error(server: HostileServer,
                                                              tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db", synchronous="NORMAL")
    short, gone = tmp_path / "short", tmp_path / "gone"
    short.write_text("abc\n")

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(list, client, store, timeout=1.0)
            one = await scraper.scrape_once(Target("short", server.url("good"), short))
            assert not one.up and "shorter than the 16" in one.error, one.error
            assert "openssl rand -hex 32" in one.error, one.error
            two = await scraper.scrape_once(Target("gone", server.url("good"), gone))
            assert not two.up and two.error == "token_file: No such file or directory"
            short.write_text("a-long-enough-token-1234\n")  # fixed: the next scrape uses it
            three = await scraper.scrape_once(Target("short", server.url("good"), short))
            assert three.up, three.error

    asyncio.run(main())
    store.close()


def test_a_stop_abandons_a_huge_batch_in_flight_within_seconds(tmp_path: Path) -> None:
    """What a node with 20,000 field names did before the checks: a batch that takes the
    writer tens of seconds.  A stop waits ``stop_timeout`` for it, then abandons it."""
    store = SqliteStore(tmp_path / "m.db", synchronous="NORMAL")

    async def main() -> float:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(list, client, store, stop_timeout=1.0, flush_every=0.05)
            # ~6 million samples, straight into the writer's queue (no snapshot holds that)
            scraper._queue.append((time.time(), many_nodes(300, 20_000, time.time())))
            task = asyncio.create_task(scraper.run())
            while scraper._queue:  # the writer has taken the batch
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)
            began = time.monotonic()
            scraper.stop()
            await asyncio.wait_for(task, 10)
            assert scraper.ingest.failed_batches == 1 and scraper.ingest.batches == 0
            return time.monotonic() - began

    took = asyncio.run(main())
    assert took < 1.0 + 1.5, took
    assert store.series(parse_selector("F0")) == []
    store.close()


@pytest.mark.parametrize("fast", [True, False], ids=["fast-client", "httpx"])
def test_a_controllers_slurm_summary_is_checked_too(server: HostileServer, tmp_path: Path,
                                                    fast: bool) -> None:
    store = SqliteStore(tmp_path / "m.db", synchronous="NORMAL")
    targets = [Target(name, server.url(name), role="controller")
               for name in ("good", "slurm_queue", "slurm_job", "slurm_list")]

    async def main() -> dict[str, tuple[bool, Any, str | None]]:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(lambda: targets, client, store, timeout=1.0, fast_http=fast)
            out = {}
            for t in targets:
                state = await scraper.scrape_once(t)
                out[t.name] = (state.up, state.slurm, state.slurm_error)
            await scraper.flush()
            return out

    got = asyncio.run(main())
    assert got["good"][0] and got["good"][1].queue["running"] == 1
    assert got["good"][2] is None
    # the summary decodes into the controller's Slurm snapshot: its slurm_* series stored
    assert [s.labels for s in store.latest(parse_selector("slurm_node_cpu_alloc"))] == [
        {"node": "n1", "status": "mixed"}]
    assert store.latest(parse_selector("slurm_up"))[0].labels == {"node": "good"}
    assert got["slurm_queue"] == (True, None, "bad data: queue: not an object of counts")
    assert got["slurm_job"] == (True, None,
                                'bad data: jobs[0].num_cpus: "four" is not an integer')
    assert got["slurm_list"] == (True, None, "bad data: the Slurm summary is not an object")
    store.close()


def test_the_slurm_summary_is_held_to_the_shape_its_readers_index() -> None:
    good = {"queue": {"running": 1, "pending": 0}, "jobs": [{"job_id": "7"}],
            "nodes": [{"name": "n1"}], "partitions": []}
    assert check_slurm_summary(good) is good
    for bad, why in [([], "not an object"), ({"queue": []}, "queue"),
                     ({"queue": {"running": "1"}}, "queue"), ({"jobs": {}}, "jobs: not a list"),
                     ({"jobs": [{"id": 1}]}, "jobs[0]: not an object with a job_id"),
                     ({"nodes": ["n1"]}, "nodes[0]")]:
        with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
            check_slurm_summary(bad)


def test_with_prometheus_as_the_store_nothing_is_queued_and_nodes_still_show(
        server: HostileServer) -> None:
    """Prometheus or VictoriaMetrics scrape the nodes themselves: the scraper has no writer
    (``writer_of`` a PrometheusStore is None), publishes each node's state for the live
    views all the same, and builds, queues and stores no samples."""
    from gpuwarden.metrics import writer_of
    from gpuwarden.metrics.prometheus import PrometheusStore

    prometheus = PrometheusStore("http://127.0.0.1:9")
    target = Target("via-prometheus", server.url("good"))

    async def main() -> Scraper:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(lambda: [target], client, writer_of(prometheus), timeout=TIMEOUT)
            state = await scraper.scrape_once(target)
            assert state.up and state.snapshot is not None and state.error is None
            assert scraper.states["via-prometheus"] is state
            assert not scraper._queue  # no samples built or queued for a store with no writer
            await scraper.flush()
            return scraper

    scraper = asyncio.run(main())
    assert (scraper.ingest.batches, scraper.ingest.samples, scraper.ingest.queued) == (0, 0, 0)
    prometheus.close()


def test_a_new_price_keeps_the_nodes_loop_and_what_it_found(server: HostileServer) -> None:
    """Targets are the inventory's nodes: a price (or any field the scrape does not use)
    changing keeps the node's loop and state; a new URL starts over."""
    targets = [Target("n", server.url("good"), cost_per_hour=1.0)]

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            scraper = Scraper(lambda: targets, client, None, timeout=TIMEOUT)
            found = await scraper.scrape_once(targets[0])
            scraper._reconcile()
            loop = scraper._tasks["n"]
            targets[0] = Target("n", server.url("good"), cost_per_hour=2.5)
            scraper._reconcile()
            assert scraper._tasks["n"] is loop and scraper.states["n"] is found
            targets[0] = Target("n", server.url("util"), cost_per_hour=2.5)
            scraper._reconcile()
            assert scraper._tasks["n"] is not loop and scraper.states["n"].scrapes_total == 0
            for task in scraper._tasks.values():
                task.cancel()
            await asyncio.gather(*scraper._tasks.values(), return_exceptions=True)

    asyncio.run(main())
