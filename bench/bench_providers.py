"""Lifecycle cost on RunPod: ``up`` and ``down`` of 16 nodes against the fake RunPod server
(spec-validated, rate limited).  Counts the API calls made against the minimum the
lifecycle needs, measured in the same run:

    up:   listPods + listGpuTypes + 16 x createPod + 1 listPods poll  = 19
    down: listPods + 16 x deletePod + 1 listPods to confirm          = 18

Target: no more than 2x the minimum, and no 429 (polling respects the RateLimit header).
Run: .venv/bin/python bench/bench_providers.py [--nodes 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuwarden.providers import Runtime, down, parse_description, up  # noqa: E402
from gpuwarden.state.db import StateDB  # noqa: E402
from tests.providers.fake_runpod import FakeRunPod  # noqa: E402

SPEC = ROOT / "tests" / "reference" / "runpod" / "openapi-v2.json"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--quota", type=int, default=30, help="requests per rate window")
    parser.add_argument("--window", type=int, default=5, help="rate window, seconds")
    args = parser.parse_args()
    n = args.nodes
    server = FakeRunPod(SPEC, provisioning_s=1.0, starting_s=1.0, bootstrap_s=0.5,
                        quota=args.quota, window_s=args.window).start()
    minimum_up, minimum_down = n + 3, n + 2
    try:
        with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=10) as http:
            db = StateDB(Path(tmp) / "state.db")
            rt = Runtime(http=http, env={"RUNPOD_API_KEY": server.api_key},
                         runpod_base_url=server.url, runpod_node_url=server.node_url(),
                         runpod_poll_s=1.0)
            spec = parse_description({"name": "bench", "provider": "runpod", "nodes": n,
                                      "gpus_per_node": 8, "gpu_type": "NVIDIA H100 80GB HBM3"})
            t0 = time.perf_counter()
            up(spec, db, runtime=rt)
            t_up = time.perf_counter() - t0
            calls_up = sum(server.calls.values())
            t0 = time.perf_counter()
            down("bench", db, runtime=rt)
            t_down = time.perf_counter() - t0
            calls_down = sum(server.calls.values()) - calls_up
            left = len(server.live_pods())
            db.close()
    finally:
        server.stop()
    total, minimum = calls_up + calls_down, minimum_up + minimum_down
    print(f"nodes: {n}; rate limit {args.quota} requests / {args.window} s")
    print(f"up:   {calls_up:3d} API calls (minimum {minimum_up}), {t_up:6.2f} s")
    print(f"down: {calls_down:3d} API calls (minimum {minimum_down}), {t_down:6.2f} s")
    print(f"by operation: {dict(sorted(server.calls.items()))}")
    print(f"429 answers: {server.rate_limited}; pods left after down: {left}; "
          f"spec violations: {len(server.invalid_requests) + len(server.invalid_responses)}")
    print(f"ratio: {total / minimum:.2f}x the minimum API calls ({total} vs {minimum}); "
          f"target <= 2.00x")
    return 0 if total <= 2 * minimum and left == 0 and not server.rate_limited else 1


if __name__ == "__main__":
    raise SystemExit(main())
