"""The embedded store's label sets: one record per label set, found by one lookup, its labels
stored once (``label_sets``, with ``series`` a view over it), the same results from the
columnar path and the one-sample path, nothing of a refused batch kept, and files of the
old layout (one ``series`` row with its labels per series) converted when opened."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from array import array
from pathlib import Path

import pytest

from gpuwarden.metrics import codec
from gpuwarden.metrics.ingest import SampleGroup, groups_to_samples
from gpuwarden.metrics.model import Sample, parse_selector
from gpuwarden.metrics.sqlite_store import SCHEMA_VERSION, SqliteStore

T0 = 1_700_000_000.0
CHUNK = 600  # the store's default chunk_seconds: samples more than this off "now" are dropped

Points = dict[tuple[str, frozenset[tuple[str, str]]], list[tuple[int, float]]]


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def contents(store: SqliteStore) -> Points:
    """Every series of the store with its head samples (ms, value)."""
    index = store._index
    out: Points = {}
    for sid, (metric, _) in index.info.items():
        ts, vs = index.head.get(sid, ((), ()))
        out[(metric, frozenset(index.labels(sid).items()))] = list(zip(ts, vs, strict=True))
    return out


def reference(batches: list[list[SampleGroup]], now: float) -> tuple[Points, int]:
    """The store's rules (module doc) applied to every sample alone, in order."""
    now_ms = math.floor(now * 1000)
    newest: dict[tuple[str, frozenset[tuple[str, str]]], int] = {}
    out: Points = {}
    dropped = 0
    for groups in batches:
        for s in groups_to_samples(groups):
            key = (s.metric, frozenset(s.labels.items()))
            ts = round(s.timestamp * 1000)
            if (not math.isfinite(s.value) or abs(ts - now_ms) > CHUNK * 1000
                    or ts <= newest.get(key, -1 << 62)):
                dropped += 1
                continue
            newest[key] = ts
            out.setdefault(key, []).append((ts, s.value))
    return out, dropped


POOL = [{"node": f"n{i % 3}", "gpu": str(i), **({"reason": "power"} if i == 4 else {})}
        for i in range(6)]
NAMES = ["util", "temp", "power", "clock", "mem"]


def random_batches(rng: random.Random) -> list[list[SampleGroup]]:
    """Label sets given again and again (some in another key order), the same label set
    twice in a batch with the same, older or newer timestamps, names twice in a group,
    NaN and infinities, timestamps out of the store's window."""
    batches = []
    base = T0 - 300
    for _ in range(40):
        base += rng.choice([0, 1, 15, 15, 15])
        groups = []
        for _ in range(rng.randint(1, 8)):
            labels = dict(rng.choice(POOL))
            if rng.random() < 0.3:
                labels = dict(reversed(labels.items()))
            ts = base + rng.choice([0, 0, 0, 0, -15, -1, 1, 0.0004, 2 * CHUNK])
            if rng.random() < 0.15:
                names = rng.choices(NAMES, k=rng.randint(2, 4))  # a name twice, perhaps
            else:
                names = rng.sample(NAMES, rng.randint(1, 4))
            values = [rng.choice([rng.uniform(0, 100), float(rng.randint(0, 9)), 3,
                                  math.nan, math.inf, -math.inf])
                      if rng.random() < 0.2 else round(rng.uniform(0, 500), 2)
                      for _ in names]
            groups.append(SampleGroup(labels, ts, names, values))
        batches.append(groups)
    return batches


@pytest.mark.parametrize("seed", range(6))
def test_batch_path_and_one_sample_path_store_the_same(tmp_path: Path, seed: int) -> None:
    batches = random_batches(random.Random(seed))
    clock = Clock()
    want, want_dropped = reference(batches, clock.t)
    assert want_dropped and want  # the draw has both kinds

    stores = {kind: SqliteStore(tmp_path / f"{kind}.db", clock=clock, synchronous="NORMAL")
              for kind in ("groups", "samples", "one_by_one")}
    for groups in batches:
        stores["groups"].append_groups(groups)
        stores["samples"].append(groups_to_samples(groups))
        for sample in groups_to_samples(groups):
            stores["one_by_one"].append([sample])
    for kind, store in stores.items():
        assert contents(store) == want, kind
        assert store.dropped == want_dropped, kind
        store.close()
        with SqliteStore(tmp_path / f"{kind}.db", clock=clock) as reopened:  # wal replayed
            assert contents(reopened) == want, kind


def test_a_label_set_is_one_record_found_in_any_key_order(tmp_path: Path) -> None:
    clock = Clock()
    with SqliteStore(tmp_path / "m.db", clock=clock) as store:
        a = {"node": "n1", "gpu": "0"}
        store.append_groups([SampleGroup(a, T0, ["util", "temp"], [1.0, 2.0])])
        store.append_groups([SampleGroup(dict(reversed(a.items())), T0 + 15, ["util"], [3.0]),
                             SampleGroup({"node": "n1", "gpu": "1"}, T0 + 15, ["util"], [4.0])])
        conn = sqlite3.connect(tmp_path / "m.db")
        sets = conn.execute("SELECT labels FROM label_sets ORDER BY id").fetchall()
        assert [json.loads(r[0]) for r in sets] == [{"gpu": "0", "node": "n1"},
                                                    {"gpu": "1", "node": "n1"}]
        assert conn.execute("SELECT metric, labels FROM series ORDER BY id").fetchall() == [
            ("util", '{"gpu":"0","node":"n1"}'), ("temp", '{"gpu":"0","node":"n1"}'),
            ("util", '{"gpu":"1","node":"n1"}')]
        conn.close()
        got = store.range(parse_selector('util{gpu="0"}'), T0, T0 + 15, 15, "last")
        assert [s.points for s in got] == [[(T0, 1.0), (T0 + 15, 3.0)]]


def test_a_refused_batch_keeps_nothing(tmp_path: Path) -> None:
    """A value that is not a number refuses the whole batch, after groups of it were taken
    whole and a label set was made: none of it is kept, in memory or on disk, and the next
    batch is judged against the store as it was."""
    clock = Clock()
    with SqliteStore(tmp_path / "m.db", clock=clock) as store:
        a, b = {"node": "n1", "gpu": "0"}, {"node": "n2", "gpu": "0"}
        store.append_groups([SampleGroup(a, T0, ["util", "temp"], [1.0, 2.0])])
        before = contents(store)
        for bad in (SampleGroup(a, T0 + 15, ["util", "x"], [1.0, "7"]),  # taken whole
                    SampleGroup(a, T0 + 15, ["util", "util"], [1.0, "7"])):  # sample by sample
            with pytest.raises(TypeError):
                store.append_groups([SampleGroup(a, T0 + 15, ["util", "temp"], [5.0, 6.0]),
                                     SampleGroup(b, T0 + 15, ["util"], [9.0]), bad])
            assert contents(store) == before
            with pytest.raises(TypeError):
                store.append([Sample("util", b, 1.0, T0 + 15), Sample("temp", b, "x", T0 + 15)])
            assert contents(store) == before
        store.append_groups([SampleGroup(a, T0 + 15, ["util", "temp"], [5.0, 6.0]),
                             SampleGroup(b, T0 + 15, ["util"], [9.0])])
        assert store.dropped == 0
        assert contents(store)[("util", frozenset(a.items()))] == [(T0 * 1000, 1.0),
                                                                    ((T0 + 15) * 1000, 5.0)]
        rows = sqlite3.connect(tmp_path / "m.db").execute(
            "SELECT count(*) FROM label_sets").fetchone()
        assert rows == (2,)


def test_series_expire_with_their_label_set_and_the_live_ones_keep_their_buffers(
        tmp_path: Path) -> None:
    """Chunk flushes cut the head buffers a label set reuses scrape after scrape (and drop
    those a pause emptied); a label set whose series all expire leaves ``label_sets``, and
    comes back as a new one."""
    clock = Clock()
    store = SqliteStore(tmp_path / "m.db", clock=clock, raw_seconds=120,
                        retention_seconds=240, chunk_seconds=60, rollup_block_seconds=60)
    live, dead = {"node": "n1", "gpu": "0"}, {"node": "n2", "gpu": "0"}
    paused = {"node": "n3", "gpu": "0"}  # silent from 1 to 3 min: its head empties
    store.append_groups([SampleGroup(dead, T0, ["util"], [1.0])])
    for k in range(60):  # 15 min, every 15 s
        clock.t = T0 + 15 * k
        groups = [SampleGroup(live, clock.t, ["util", "temp"], [k, 2.0 * k])]
        if not 4 <= k < 12:
            groups.append(SampleGroup(paused, clock.t, ["util"], [k]))
        store.append_groups(groups)
        store.maintain()
        for node in ("n1", "n3"):
            got = store.latest(parse_selector(f'util{{node="{node}"}}'))
            assert [s.points for s in got] == [[(clock.t, float(k))]] or (
                node == "n3" and 4 <= k < 12)
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("SELECT labels FROM label_sets").fetchall() == [
        ('{"gpu":"0","node":"n1"}',), ('{"gpu":"0","node":"n3"}',)]
    assert store.series(parse_selector('util{node="n2"}')) == []
    got = store.range(parse_selector('temp{node="n1"}'), clock.t - 90, clock.t, 15, "last")
    assert [v for _, v in got[0].points] == [2.0 * k for k in range(53, 60)]
    store.append_groups([SampleGroup(dead, clock.t, ["util"], [3.0])])  # back again
    assert conn.execute("SELECT count(*) FROM label_sets").fetchone() == (3,)
    assert [s.points for s in store.latest(parse_selector('util{node="n2"}'))] == [
        [(clock.t, 3.0)]]
    conn.close()
    store.close()


OLD_LAYOUT = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE series (id INTEGER PRIMARY KEY, metric TEXT NOT NULL, labels TEXT NOT NULL);
CREATE TABLE wal (id INTEGER PRIMARY KEY, max_ts INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE chunks (
  series_id INTEGER NOT NULL, t_first INTEGER NOT NULL, t_last INTEGER NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (series_id, t_first)) WITHOUT ROWID;
CREATE INDEX chunks_t_last ON chunks (t_last);
CREATE TABLE rollups (
  series_id INTEGER NOT NULL, t_first INTEGER NOT NULL, t_last INTEGER NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (series_id, t_first)) WITHOUT ROWID;
CREATE INDEX rollups_t_last ON rollups (t_last);
"""


def old_store(path: Path) -> list[tuple[int, str, str]]:
    """A store file of the layout before label sets: a chunk of series 3, then a wal
    batch of all three series (what a store wrote before a crash)."""
    gpu0, gpu1 = '{"gpu":"0","node":"n1"}', '{"gpu":"1","node":"n1"}'
    rows = [(1, "util", gpu0), (2, "temp", gpu0), (3, "util", gpu1), (7, "temp", gpu1)]
    t0 = round(T0 * 1000)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(OLD_LAYOUT)
    conn.executemany("INSERT INTO series VALUES (?, ?, ?)", rows)
    conn.execute("INSERT INTO chunks VALUES (3, ?, ?, ?)",
                 (t0 - 30_000, t0 - 15_000, codec.encode_raw([t0 - 30_000, t0 - 15_000],
                                                             [10.0, 11.0])))
    blob = codec.encode_batch(array("q", [1, 2, 3, 7]), array("q", [t0] * 4),
                              array("d", [1.0, 2.0, 12.0, 3.0]))
    conn.execute("INSERT INTO wal (max_ts, data) VALUES (?, ?)", (t0, blob))
    conn.execute("INSERT INTO meta VALUES ('flushed_cut', ?)", (t0 - 10_000,))
    conn.close()
    return rows


def test_an_old_store_file_is_converted_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    rows = old_store(path)
    clock = Clock(T0 + 1)
    with SqliteStore(path, clock=clock) as store:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'series'"
                            ).fetchone() == ("view",)
        assert conn.execute("SELECT id, metric, labels FROM series ORDER BY id"
                            ).fetchall() == rows
        assert conn.execute("SELECT count(*) FROM label_sets").fetchone() == (2,)
        got = store.range(parse_selector('util{gpu="1"}'), T0 - 30, T0, 15, "last")
        assert [s.points for s in got] == [[(T0 - 30, 10.0), (T0 - 15, 11.0), (T0, 12.0)]]
        store.append_groups([SampleGroup({"node": "n1", "gpu": "0"}, T0 + 15,
                                         ["util", "temp", "power"], [4.0, 5.0, 6.0])])
        # the old series keep their ids; a new one takes the next free id
        assert conn.execute("SELECT id, metric FROM metric_series ORDER BY id").fetchall() == [
            (1, "util"), (2, "temp"), (3, "util"), (7, "temp"), (8, "power")]
        conn.close()
    with SqliteStore(path, clock=clock) as store:  # converted once; reopens as it is
        got = [s.points for m in ("util", "temp", "power")
               for s in store.latest(parse_selector(f'{m}{{gpu="0"}}'))]
        assert got == [[(T0 + 15, 4.0)], [(T0 + 15, 5.0)], [(T0 + 15, 6.0)]]


def test_a_store_file_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this gpuwarden reads"):
        SqliteStore(path)
