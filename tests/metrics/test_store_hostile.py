"""The embedded store against what a hostile node could make the scraper hand it: one label
set with tens of thousands of names, several scrapes of it in one batch (linear, not
quadratic), and a stop that cannot wait for such a batch (interrupt)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gpuwarden.metrics.ingest import SampleGroup
from gpuwarden.metrics.model import parse_selector
from gpuwarden.metrics.sqlite_store import Interrupted, SqliteStore

T0 = 1_700_000_040.0


def open_store(path: Path) -> SqliteStore:
    return SqliteStore(path, clock=lambda: T0 + 30, synchronous="NORMAL")


def wide_groups(names: int, scrapes: int, node: str = "evil") -> list[SampleGroup]:
    labels = {"node": node, "gpu": "0"}
    fields = [f"F{i}" for i in range(names)]
    return [SampleGroup(labels, T0 + k, fields, [float(k)] * names) for k in range(scrapes)]


def many_nodes(nodes: int, names: int, ts: float = T0) -> list[SampleGroup]:
    """One scrape each of ``nodes`` label sets of ``names`` names (lists shared)."""
    fields = [f"F{i}" for i in range(names)]
    values = [1.0] * names
    return [SampleGroup({"node": f"evil{n}", "gpu": "0"}, ts, fields, values)
            for n in range(nodes)]


def test_many_names_in_one_label_set_many_times_in_a_batch_is_linear(tmp_path: Path) -> None:
    """40,000 names scraped 4 times in one batch: the second to fourth groups go the
    per-sample way (their label set is already in the batch).  That step tested each sample
    against a list of the first group's series ids (~25 s here); it is a set now (~0.6 s)."""
    store = open_store(tmp_path / "m.db")
    groups = wide_groups(40_000, 4)
    began = time.perf_counter()
    store.append_groups(groups)
    took = time.perf_counter() - began
    assert took < 5.0, f"append_groups took {took:.1f} s"
    got = store.latest(parse_selector('F39999{node="evil"}'))
    assert [s.points[-1] for s in got] == [(T0 + 3, 3.0)]
    assert store.dropped == 0
    store.close()


def test_interrupt_abandons_the_append_and_stores_none_of_it(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    store.append_groups(wide_groups(10, 1, node="good"))
    # a batch that takes seconds: 200 label sets x 20,000 names
    huge = many_nodes(200, 20_000)
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            store.append_groups(huge)
            outcome.append(None)
        except BaseException as exc:  # the test reads it below
            outcome.append(exc)

    writer = threading.Thread(target=write)
    began = time.perf_counter()
    writer.start()
    store.interrupt()  # in flight, or (if the thread is not there yet) the next append
    writer.join(timeout=30)
    took = time.perf_counter() - began
    assert outcome and isinstance(outcome[0], Interrupted), outcome
    assert took < 3.0
    assert store.series(parse_selector('F0{node="evil0"}')) == []  # nothing of the batch
    # the store goes on: the next append is stored
    store.append_groups([SampleGroup({"node": "good", "gpu": "0"}, T0 + 1, ["F0"], [5.0])])
    assert store.latest(parse_selector('F0{node="good"}'))[0].points == [(T0 + 1, 5.0)]
    store.close()
    again = open_store(tmp_path / "m.db")  # and what it has survives a reopen
    assert again.latest(parse_selector('F0{node="good"}'))[0].points == [(T0 + 1, 5.0)]
    assert again.series(parse_selector('F0{node="evil0"}')) == []
    again.close()


def test_interrupt_of_append_too(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    store.interrupt()
    with pytest.raises(Interrupted):
        store.append(wide_groups(5, 1)[0].samples())
    store.append(wide_groups(5, 1)[0].samples())
    assert len(store.series(parse_selector("F0"))) == 1
    store.close()
