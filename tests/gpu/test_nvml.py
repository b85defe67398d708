"""The real NVML backend driven by the fake pynvml module (tests/fakes/fake_pynvml.py)."""

from __future__ import annotations

import inspect

import pynvml
import pytest

from gpuwarden.gpu.model import NoGpuFound
from gpuwarden.gpu.nvml import NvmlSource
from tests.fakes.fake_pynvml import _FUNCTIONS, FakeNvml, consumer_gpu, h100
from tests.waiting import wait_until


@pytest.fixture
def box():
    fake = FakeNvml([h100(i) for i in range(8)])
    source = NvmlSource(fake, xid_wait_ms=50, backoff_initial=0.0)
    source.start()
    yield fake, source
    source.close()


def test_fake_only_defines_real_pynvml_functions():
    for name in _FUNCTIONS:
        real = getattr(pynvml, name, None)
        assert callable(real), f"the fake defines {name}, which nvidia-ml-py does not have"
        fake_params = list(inspect.signature(getattr(FakeNvml, "_" + name)).parameters)[1:]
        real_params = list(inspect.signature(real).parameters)
        assert len(fake_params) == len(real_params), (name, fake_params, real_params)


def test_fake_raises_what_nvml_raises():
    fake = FakeNvml([h100(0)])
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.gpus[0].lost = True
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetUtilizationRates(handle)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(5)


def test_healthy_h100_box_reads_every_field(box):
    fake, source = box
    poll = source.poll()
    assert poll.health.ok and poll.errors == {}
    assert len(poll.gpus) == 8
    gpu = poll.gpus[3]
    assert gpu.up and gpu.identity.name == "NVIDIA H100 80GB HBM3"
    assert gpu.identity.pci_bus_id == "00000000:48:00.0"
    assert gpu.identity.device == "nvidia3"
    f = gpu.fields
    assert f["DCGM_FI_DEV_GPU_UTIL"] == 93
    assert f["DCGM_FI_DEV_FB_USED"] == 40_003  # MiB, not bytes
    assert f["DCGM_FI_DEV_FB_TOTAL"] == 81559
    assert f["DCGM_FI_DEV_POWER_USAGE"] == pytest.approx(553.0)  # W, not mW
    assert f["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == 123_456_789  # mJ
    assert f["DCGM_FI_DEV_ECC_SBE_AGG_TOTAL"] == 3
    assert f["DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"] == 1
    assert f["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"] == pytest.approx(0.51)  # GPM %, as a ratio
    assert f["DCGM_FI_PROF_PCIE_TX_BYTES"] == pytest.approx(100 * 1024 * 1024)
    assert gpu.last_xid == 0
    # one batched field read per GPU per poll
    assert fake.calls["nvmlDeviceGetFieldValues"] == 8


def test_init_once_and_polls_never_reinit(box):
    fake, source = box
    for _ in range(3):
        source.poll()
    assert fake.calls["nvmlInit"] == 1


def test_consumer_gpu_omits_unsupported_fields_and_caches_the_answer():
    fake = FakeNvml([consumer_gpu()])
    source = NvmlSource(fake, xid_wait_ms=50)
    source.start()
    try:
        first = source.poll().gpus[0]
        for absent in ("DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_POWER_MGMT_LIMIT",
                       "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_MEMORY_TEMP",
                       "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_POWER_VIOLATION"):
            assert absent not in first.fields
        assert first.fields["DCGM_FI_DEV_GPU_UTIL"] == 7
        assert first.fields["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == 5_000_000
        assert first.last_xid is None  # XIDs cannot be watched on it: no fake "0"
        calls = dict(fake.calls)
        for _ in range(5):
            again = source.poll()
        assert again.errors == {}
        assert fake.calls["nvmlDeviceGetEncoderUtilization"] == calls[
            "nvmlDeviceGetEncoderUtilization"]
        assert fake.calls["nvmlDeviceGetEnforcedPowerLimit"] == calls[
            "nvmlDeviceGetEnforcedPowerLimit"]
        assert again.gpus[0].fields == pytest.approx(first.fields)
    finally:
        source.close()


def test_lost_gpu_is_down_while_the_others_keep_reporting(box):
    fake, source = box
    assert all(g.up for g in source.poll().gpus)
    fake.gpus[2].lost = True
    poll = source.poll()
    assert [g.up for g in poll.gpus] == [True, True, False, True, True, True, True, True]
    lost = poll.gpus[2]
    assert lost.fields == {} and "GPU_IS_LOST" in (lost.error or "")
    assert poll.health.state == "degraded" and "2" in (poll.health.reason or "")
    assert poll.errors.get("GPU_IS_LOST", 0) >= 1
    fake.gpus[2].lost = False
    assert source.poll().gpus[2].up


def test_driver_reload_reinitialises_with_backoff():
    fake = FakeNvml([h100(i) for i in range(2)])
    now = [1000.0]
    source = NvmlSource(fake, xid_wait_ms=50, backoff_initial=5.0, backoff_max=20.0,
                        monotonic=lambda: now[0])
    source.start()
    try:
        assert source.poll().health.ok
        fake.unload_driver()
        down = source.poll()
        assert not any(g.up for g in down.gpus)
        assert down.health.state == "degraded" and "DRIVER_NOT_LOADED" in down.health.reason
        inits = fake.calls["nvmlInit"]
        now[0] += 1  # before the backoff: no retry
        source.poll()
        assert fake.calls["nvmlInit"] == inits
        now[0] += 5  # retry fails (driver still out): backoff doubles
        assert not source.poll().health.ok
        assert fake.calls["nvmlInit"] == inits + 1
        now[0] += 6
        source.poll()
        assert fake.calls["nvmlInit"] == inits + 1
        fake.load_driver()
        now[0] += 5
        back = source.poll()
        assert back.health.ok and all(g.up for g in back.gpus)
        assert back.gpus[0].fields["DCGM_FI_DEV_GPU_UTIL"] == 90
    finally:
        source.close()


def test_no_driver_means_no_gpu_found_with_the_way_to_sim():
    fake = FakeNvml([])
    with pytest.raises(NoGpuFound, match="--gpu-backend sim"):
        NvmlSource(fake).start()
    fake.unload_driver()
    with pytest.raises(NoGpuFound, match="--gpu-backend sim"):
        NvmlSource(fake).start()


def test_old_driver_falls_back_to_older_calls(caplog):
    fake = FakeNvml([h100(0)], old_driver=True)
    fake.gpus[0].clock_reasons = pynvml.nvmlClocksEventReasonHwThermalSlowdown
    fake.gpus[0].processes = [(4242, 1024 * 1024 * 300)]
    source = NvmlSource(fake, xid_wait_ms=50)
    source.start()
    try:
        gpu = source.poll().gpus[0]
        source.poll()
        assert gpu.clock_events["hw_thermal_slowdown"] is True
        assert gpu.fields["DCGM_FI_DEV_FB_USED"] > 0
        assert "DCGM_FI_DEV_FB_RESERVED" not in gpu.fields  # v1 memory info has no reserved
        assert [(p.pid, p.used_memory_mib) for p in gpu.processes] == [(4242, 300)]
        # the newer call is tried once, then never again
        assert fake.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1
        assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 2
    finally:
        source.close()


def test_xid_events_are_counted_per_xid_and_told_apart(box):
    fake, source = box
    fake.inject_xid(1, 79)
    fake.inject_xid(1, 13)
    fake.inject_xid(1, 13)
    wait_until("3 XIDs counted", lambda: sum(x.count for x in source.poll().gpus[1].xids) == 3,
               timeout=5, interval=0.02)
    gpu = source.poll().gpus[1]
    counts = {x.xid: (x.count, x.application) for x in gpu.xids}
    assert counts == {13: (2, True), 79: (1, False)}
    assert gpu.last_xid == 13
    assert all(x.last_seen > 0 for x in gpu.xids)
    assert source.poll().gpus[0].xids == ()


def test_processes_report_memory_in_mib_and_unknown_as_none(box):
    fake, source = box
    fake.gpus[0].processes = [(100, 2 * 1024**3), (101, None)]
    procs = source.poll().gpus[0].processes
    assert [(p.pid, p.used_memory_mib) for p in procs] == [(100, 2048), (101, None)]
