"""The GPU rules written once (gpu.model): a GPU is up when it and its node answer, its
error falls back to its node's, its $/hr is its node's share, and its state follows the idle
threshold and its jobs.  The API's views and the watchdog's facts both come from these."""

from __future__ import annotations

from gpuwarden.gpu.model import GpuJob, gpu_state, live_gpus
from gpuwarden.gpu.wire import snapshot_document

T = 1_800_000_000.0


def _snapshot(*gpus: tuple[bool, float | None, bool]):
    return snapshot_document({"node": {"hostname": "h1"}, "timestamp": T, "gpus": [
        {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA H100", "up": up,
         "error": None if up else "fell off the bus",
         "fields": {} if util is None else {"DCGM_FI_DEV_GPU_UTIL": util},
         "jobs": [{"job_id": "7", "user": "ana"}] if job else []}
        for i, (up, util, job) in enumerate(gpus)]})


def test_a_gpu_is_up_when_it_and_its_node_answer_and_shares_its_nodes_price() -> None:
    snap = _snapshot((True, 90.0, False), (True, 1.0, True), (False, None, False),
                     (True, None, False))
    gpus = live_gpus("n1", snap, True, None, 8.0)
    assert [g.up for g in gpus] == [True, True, False, True]
    assert [g.cost_per_hour for g in gpus] == [2.0] * 4
    assert [g.error for g in gpus] == [None, None, "fell off the bus", None]
    assert [g.state(5.0) for g in gpus] == ["busy", "allocated_idle", "down", "idle"]
    assert gpus[1].jobs == (GpuJob("7", "ana", "", True),) and gpus[1].subject == "n1/gpu1"
    assert gpus[0].utilization == 90.0 and gpus[3].utilization is None

    down = live_gpus("n1", snap, False, "timeout after 5 s", 8.0)  # the node stopped answering
    assert [g.up for g in down] == [False] * 4
    assert [g.error for g in down] == ["timeout after 5 s", "timeout after 5 s",
                                       "fell off the bus", "timeout after 5 s"]
    assert {g.state(5.0) for g in down} == {"down"}
    assert live_gpus("n1", None, True, None, 8.0) == ()


def test_the_state_rules() -> None:
    assert gpu_state(False, 99.0, True, 5.0) == "down"
    assert gpu_state(True, 5.0, False, 5.0) == "busy"  # at the threshold: busy
    assert gpu_state(True, 4.9, False, 5.0) == "idle"
    assert gpu_state(True, 4.9, True, 5.0) == "allocated_idle"
    assert gpu_state(True, None, True, 5.0) == "allocated_idle"  # no reading: not busy
