"""Appends numbered batches to a SqliteStore until killed (``python crash_writer.py DB N``).

Batch ``n`` holds value ``n`` for each of SERIES series at ``T0 + 10 n``; "ack n" is printed
once append() (odd n) or append_groups(), the scraper's path (even n), has returned.
Small chunks, blocks and maintenance slices make kills land in
the middle of flushes and rollups too.
"""

from __future__ import annotations

import sys

from gpuwarden.metrics.ingest import SampleGroup
from gpuwarden.metrics.model import Sample
from gpuwarden.metrics.sqlite_store import SqliteStore

T0 = 1_700_000_040.0
SERIES = 50
OPTIONS = {"raw_seconds": 10_000_000, "retention_seconds": 20_000_000, "chunk_seconds": 60,
           "rollup_block_seconds": 120, "maintenance_budget": 7}


def batch_time(n: int) -> float:
    return T0 + 10 * n


def main(path: str, first: int) -> None:
    current = [first]
    store = SqliteStore(path, clock=lambda: batch_time(current[0]), **OPTIONS)
    labels = [{"s": str(i)} for i in range(SERIES)]
    n = first
    while True:
        current[0] = n
        if n % 2:
            store.append([Sample("crash_m", lab, float(n), batch_time(n)) for lab in labels])
        else:
            store.append_groups([SampleGroup(lab, batch_time(n), ["crash_m"], [float(n)])
                                 for lab in labels])
        print(f"ack {n}", flush=True)
        n += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
