"""Node health checks benchmark: the passive checks on a node with 8 GPUs (fake NVML),
against one snapshot poll of the same GPUs measured in the same run; and the check
service's read of 1,000 nodes' stored results (each node's last results, as the Overview
and the node pages read them).

Targets (issue 18): passive checks on 8 GPUs < 50 ms; 1,000 nodes of stored results < 50 ms
(the stored-results figure is the time to read every node's last run).
Run with `make bench`; not part of `make test`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuwarden.checks import Expectation, load_checks, run_checks  # noqa: E402
from gpuwarden.checks.store import CheckStore  # noqa: E402
from gpuwarden.gpu.nvml import NvmlSource  # noqa: E402
from gpuwarden.state.db import StateDB  # noqa: E402
from tests.fakes.fake_pynvml import FakeNvml, h100  # noqa: E402

ROUNDS = 200


def timed(fn, rounds: int = ROUNDS) -> float:
    """The median seconds of ``fn``."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    source = NvmlSource(nvml=FakeNvml([h100(i) for i in range(8)]), xid_wait_ms=10)
    source.start()
    try:
        poll_s = timed(source.poll)
        poll = source.poll()
    finally:
        source.close()
    checks = load_checks()
    expect = Expectation(8, "H100")
    checks_s = timed(lambda: run_checks(poll, checks, "quick", expect=expect))
    load_s = timed(load_checks, 50)
    print(f"snapshot poll, 8 GPUs (fake NVML):  {poll_s * 1e3:8.3f} ms  (baseline)")
    print(f"passive quick checks, 8 GPUs:       {checks_s * 1e3:8.3f} ms  "
          f"({checks_s / poll_s:.2f}x a poll; target < 50 ms)")
    print(f"loading the check specs (per run):  {load_s * 1e3:8.3f} ms  "
          f"({load_s / poll_s:.2f}x a poll)")

    results = run_checks(poll, checks, "quick", expect=expect)
    with tempfile.TemporaryDirectory() as tmp:
        db = StateDB(Path(tmp) / "state.db")
        try:
            store = CheckStore(db)
            began = time.perf_counter()
            for i in range(1000):
                store.record(f"node{i:04d}", "quick", "on-demand", results)
            write_s = (time.perf_counter() - began) / 1000
            one_s = timed(lambda: store.latest("node0500"), 100)
            all_s = timed(store.last_runs, 20)
        finally:
            db.close()
    print(f"store one node's run:               {write_s * 1e3:8.3f} ms  "
          f"({write_s / poll_s:.2f}x a poll)")
    print(f"one node's last results:            {one_s * 1e3:8.3f} ms")
    print(f"1,000 nodes' last runs:             {all_s * 1e3:8.3f} ms  "
          f"({all_s / poll_s:.2f}x a poll; target < 50 ms)")


if __name__ == "__main__":
    main()
