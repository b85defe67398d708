"""The scraper's fast path gives the same store as the one-Sample-per-value path: snapshot
groups, ``append_groups``, the label index and the columnar rollup reads."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from gpuwarden.metrics.ingest import (
    SampleGroup,
    SnapshotError,
    groups_to_samples,
    snapshot_groups,
    snapshot_samples,
)
from gpuwarden.metrics.model import AGGREGATIONS, Sample, parse_selector
from gpuwarden.metrics.rollup import (
    Bucket,
    BucketColumns,
    Windows,
    aggregate_bucket_columns,
    aggregate_buckets,
    merge_sorted,
)
from gpuwarden.metrics.sqlite_store import SqliteStore

T0 = 1_700_000_040.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def open_store(path: Path, clock: Clock) -> SqliteStore:
    return SqliteStore(path, clock=clock, raw_seconds=600, retention_seconds=7200,
                       chunk_seconds=60, rollup_block_seconds=120)


def snapshot(ts: float, gpus: int = 2, **extra_fields: object) -> dict:
    return {"timestamp": ts, "node": {"hostname": "h1"}, "gpus": [
        {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA H100 80GB HBM3",
         "up": i != 1 or gpus == 1, "processes": [{"pid": p} for p in range(i)],
         "fields": {"DCGM_FI_DEV_GPU_UTIL": 10 * i, "DCGM_FI_DEV_POWER_USAGE": 100.5 + i,
                    **extra_fields}}
        for i in range(gpus)]}


def test_snapshot_groups_hold_the_samples_snapshot_samples_made() -> None:
    snap = snapshot(T0, gpus=3)
    samples = snapshot_samples("n1", snap)

    def gpu(i: int) -> dict[str, str]:  # the snapshot's empty pci_bus_id etc.: no label
        return {"node": "n1", "gpu": str(i), "UUID": f"GPU-{i}",
                "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "h1"}

    def info(i: int) -> dict[str, str]:
        return {**gpu(i), "simulated": "false"}

    assert [(s.metric, dict(s.labels), s.value, s.timestamp) for s in samples] == [
        ("gpuwarden_build_info", {"node": "n1"}, 1.0, T0),
        ("gpuwarden_gpu_up", gpu(0), 1.0, T0),
        ("DCGM_FI_DEV_GPU_UTIL", gpu(0), 0.0, T0),
        ("DCGM_FI_DEV_POWER_USAGE", gpu(0), 100.5, T0),
        ("gpuwarden_gpu_processes", gpu(0), 0.0, T0),
        ("gpuwarden_gpu_info", info(0), 1.0, T0),
        ("gpuwarden_gpu_up", gpu(1), 0.0, T0),  # a GPU that is down: no readings
        ("gpuwarden_gpu_info", info(1), 1.0, T0),
        ("gpuwarden_gpu_up", gpu(2), 1.0, T0),
        ("DCGM_FI_DEV_GPU_UTIL", gpu(2), 20.0, T0),
        ("DCGM_FI_DEV_POWER_USAGE", gpu(2), 102.5, T0),
        ("gpuwarden_gpu_processes", gpu(2), 2.0, T0),
        ("gpuwarden_gpu_info", info(2), 1.0, T0),
    ]
    assert all(type(s.value) is float for s in samples)
    groups = snapshot_groups("n1", snap)
    assert len(groups) == 7 and groups[1].labels is not groups[5].labels
    assert groups_to_samples(groups) == samples


@pytest.mark.parametrize("bad", [
    {"timestamp": "soon", "gpus": 7},
    {"timestamp": T0, "node": {"hostname": "h"}, "gpus": 7},
    {"timestamp": T0, "node": {"hostname": "h"}, "gpus": [{"index": 0}]},
    {"timestamp": math.nan, "node": {"hostname": "h"}, "gpus": []},
    snapshot(T0, WORD="high"),
    snapshot(T0, FLAG=True),
    snapshot(T0, NONE=None),
    snapshot(T0, BAD=math.nan),  # what the scraper refuses is never stored either
    snapshot(T0, HOT=math.inf),
    snapshot(T0, DCGM_FI_DEV_GPU_UTIL=1e308),
])
def test_garbage_snapshots_raise(bad: dict) -> None:
    with pytest.raises(SnapshotError):
        snapshot_groups("n1", bad)


def _dump(store: SqliteStore) -> dict:
    out = {}
    for metric in ("m", "other", "up"):
        for s in store.range(parse_selector(metric), T0 - 120, T0 + 600, 1, "last"):
            out[(s.metric, tuple(sorted(s.labels.items())))] = s.points
    return out


def _batches(rng: random.Random) -> list[list[SampleGroup]]:
    """Batches with everything the store must judge: new series mid-stream, NaN and inf,
    groups older than their series' newest sample, a name twice in one group, the same label
    set twice in one batch, timestamps outside the store's window."""
    labels = [{"node": f"n{i}", "gpu": str(i % 2)} for i in range(4)]
    batches = []
    for step in range(40):
        ts = T0 + 5 * step
        batch = []
        for i, lab in enumerate(labels):
            names = ["m", "other"] + (["late"] if step > 20 and i == 0 else [])
            values: list[float] = [rng.choice([rng.uniform(0, 9), float(rng.randrange(5))])
                                   for _ in names]
            if rng.random() < 0.1:
                values[0] = rng.choice([math.nan, math.inf, -math.inf])
            batch.append(SampleGroup(lab, ts, names, values))
        batch.append(SampleGroup({"node": "x"}, ts, ("up",), (1,)))
        if step % 7 == 3:  # older than what the series hold
            batch.append(SampleGroup(labels[1], ts - 5, ["m"], [99.0]))
        if step % 9 == 4:  # the same label set again, newer, in the same batch
            batch.append(SampleGroup(labels[2], ts + 1, ["m", "other"], [7.0, 8.0]))
        if step % 11 == 5:  # a name twice
            batch.append(SampleGroup(labels[3], ts + 2, ["m", "m"], [1.0, 2.0]))
        if step % 13 == 6:  # far outside the window
            batch.append(SampleGroup(labels[0], ts + 3600, ["m"], [1.0]))
        batches.append(batch)
    return batches


def test_append_groups_stores_what_append_stores(tmp_path: Path) -> None:
    batches = _batches(random.Random(7))
    clocks = Clock(), Clock()
    a, b = open_store(tmp_path / "a.db", clocks[0]), open_store(tmp_path / "b.db", clocks[1])
    for step, batch in enumerate(batches):
        clocks[0].t = clocks[1].t = T0 + 5 * step
        a.append(groups_to_samples(batch))
        b.append_groups(batch)
    assert a.dropped == b.dropped > 0
    assert _dump(a) == _dump(b)
    sel = parse_selector('m{node="n2"}')
    assert a.latest(sel) == b.latest(sel)
    a.close()
    b.close()
    with open_store(tmp_path / "b.db", clocks[1]) as reopened:  # and the same after replay
        assert _dump(reopened) == _dump(open_store(tmp_path / "a.db", clocks[0]))


def test_append_groups_rejects_a_value_that_is_not_a_number(tmp_path: Path) -> None:
    clock = Clock()
    with open_store(tmp_path / "m.db", clock) as store:
        store.append_groups([SampleGroup({"g": "0"}, T0, ["m"], [1.0])])
        with pytest.raises(TypeError):
            store.append_groups([SampleGroup({"g": "0"}, T0 + 1, ["m"], [2.0]),
                                 SampleGroup({"g": "1"}, T0 + 1, ["m"], ["x"])])
        assert store.latest(parse_selector("m")) == store.latest(parse_selector('m{g="0"}'))
        assert store.latest(parse_selector("m"))[0].points == [(T0, 1.0)]


def test_label_index_matches_what_a_scan_matches(tmp_path: Path) -> None:
    clock = Clock()
    rng = random.Random(3)
    with open_store(tmp_path / "m.db", clock) as store:
        every = []
        for i in range(60):
            lab = {"node": f"n{i % 7}", "gpu": str(i % 3)}
            if i % 5 == 0:
                lab["extra"] = "yes"
            every.append(lab)
            store.append([Sample(rng.choice(["m", "k"]), lab, 1.0, T0)])
        for text in ('m{node="n3"}', 'm{node="n3",gpu="1"}', 'm{gpu="2",extra="yes"}',
                     'm{extra=""}', 'm{node="n9"}', 'm{node="n1",gpu!="0"}',
                     'm{node=~"n[12]",gpu="0"}', 'k{gpu="1"}', 'm{nolabel="x"}'):
            sel = parse_selector(text)
            got = sorted(tuple(sorted(x.items())) for x in store.series(sel))
            want = sorted(tuple(sorted(x.items())) for x in (
                s.labels for s in store.latest(parse_selector(sel.metric)))
                if sel.matches(sel.metric, x))
            assert got == want, text


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_bucket_columns_aggregate_as_buckets_do(agg: str) -> None:
    rng = random.Random(agg)
    minutes = sorted(rng.sample(range(28_000_000, 28_000_600), 300))
    buckets = [Bucket(m, *sorted([rng.uniform(0, 9), rng.uniform(0, 9)]), rng.uniform(0, 90),
                      rng.randrange(1, 5), rng.uniform(0, 9)) for m in minutes]
    windows = Windows(28_000_000 * 60, 28_000_600 * 60, 360)
    keep = [rng.random() < 0.9 for _ in range(windows.count)]
    cols = BucketColumns()
    cols.extend_buckets(buckets)
    assert cols.ordered()
    want = aggregate_buckets(merge_sorted(buckets), windows, keep, agg)
    assert aggregate_bucket_columns(cols, windows, keep, agg) == want
    cols.extend_buckets(buckets[-3:])  # minutes again: folded as merge_sorted folds them
    assert not cols.ordered()
    assert aggregate_bucket_columns(cols, windows, keep, agg) == aggregate_buckets(
        merge_sorted(buckets + buckets[-3:]), windows, keep, agg)


def test_a_label_set_twice_in_one_batch_keeps_one_point_per_timestamp(tmp_path: Path):
    """The second group of a label set in a batch goes sample by sample; it must still see
    the timestamps the first group (taken whole) stored."""
    store = SqliteStore(tmp_path / "m.db", clock=Clock())
    labels = {"node": "n1", "gpu": "0"}
    group = SampleGroup(labels, T0, ["a", "b"], [1.0, 2.0])
    store.append_groups([group, SampleGroup(labels, T0, ["a", "b", "c"], [5.0, 6.0, 7.0])])
    points = {m: [tuple(p) for s in store.range(parse_selector(f'{m}{{node="n1"}}'),
                                                 T0 - 60, T0, 15, "count") for p in s.points]
              for m in "abc"}
    assert points == {"a": [(T0, 1.0)], "b": [(T0, 1.0)], "c": [(T0, 1.0)]}
    assert store.dropped == 2
    store.close()
