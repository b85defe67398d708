"""kill -9 a process in the middle of appending: the file stays sound and every
acknowledged batch is there, complete; any batch there is complete."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gpuwarden.metrics.model import parse_selector
from gpuwarden.metrics.sqlite_store import SqliteStore
from tests.metrics.crash_writer import OPTIONS, SERIES, batch_time

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = Path(__file__).resolve().parents[2]


def run_until_killed(db: Path, first: int, acks_wanted: int) -> int:
    """Start the writer at batch ``first``, SIGKILL it after ``acks_wanted`` acks; returns
    the last acknowledged batch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), str(first)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    last = first - 1
    deadline = time.monotonic() + 30
    try:
        assert proc.stdout is not None
        while last < first + acks_wanted - 1:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"writer exited early: {proc.wait()} {proc.stderr.read()}")
            last = int(line.split()[1])
            assert time.monotonic() < deadline, "writer too slow"
        time.sleep(random.uniform(0, 0.05))  # land anywhere in the next append
        proc.send_signal(signal.SIGKILL)
        for line in proc.stdout:  # acks printed before the kill landed
            last = int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return last


def stored_batches(db: Path, upto: int) -> list[set[int]]:
    store = SqliteStore(db, clock=lambda: batch_time(upto + 1), **OPTIONS)
    try:
        result = store.range(parse_selector("crash_m"), batch_time(0), batch_time(upto + 1),
                             10, "last")
        found = {s.labels["s"]: {int(v) for _, v in s.points} for s in result}
        assert sorted(found, key=int) == [str(i) for i in range(SERIES)]
        # a read of only the last minutes (which may skip SQL: all in the head) sees the same
        # points, however the kill left head, wal and chunks
        since = batch_time(max(0, upto - 12))
        recent = store.range(parse_selector("crash_m"), since, batch_time(upto + 1), 10, "last")
        full = {s.labels["s"]: [p for p in s.points if p[0] >= since] for s in result}
        assert {s.labels["s"]: list(s.points) for s in recent} == {
            k: v for k, v in full.items() if v}
        return list(found.values())
    finally:
        store.close()


def test_kill_minus_nine_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    first = 0
    for round_ in range(4):
        acked = run_until_killed(db, first, acks_wanted=random.randint(15, 40))
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), round_
        conn.close()
        per_series = stored_batches(db, acked + 1)
        present = per_series[0]
        assert all(s == present for s in per_series), "a batch is there only in part"
        assert present >= set(range(acked + 1)), f"acknowledged batches lost: round {round_}"
        assert present <= set(range(acked + 2))  # at most the one being appended
        first = max(present) + 1
    conn = sqlite3.connect(db)  # the kills also hit flushes and rollups, not only appends
    assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0
    assert conn.execute("SELECT count(*) FROM rollups").fetchone()[0] > 0
    conn.close()
