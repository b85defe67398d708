"""/metrics against dcgm-exporter's contract (its counters CSV) and NVIDIA's dashboard."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuwarden.gpu.nvml import NvmlSource
from gpuwarden.gpu.sim import SimSource
from gpuwarden.node.exposition import GPU_LABELS, GpuCollector, render
from gpuwarden.node.jobs import JobRef
from gpuwarden.node.poller import GpuPoller
from tests.conftest import reference_file
from tests.fakes.fake_pynvml import FakeNvml, consumer_gpu, h100


class NoProcs:
    def job_for_pid(self, pid):
        return JobRef("77", user="alice", partition="gpu") if pid == 4242 else None

    def forget_except(self, pids):
        pass


def scrape(source, allocations=None) -> dict:
    poller = GpuPoller(source, hostname="node1", interval=5, mapper=NoProcs(),
                       allocations=allocations)
    poller.poll_once()
    poller.poll_once()
    text = render([GpuCollector(poller.latest)]).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def dcgm_counters() -> dict[str, str]:
    """name -> type of every field in dcgm-exporter's default-counters.csv (commented-out
    ones included: they are dcgm-exporter's names too)."""
    out = {}
    for line in reference_file("dcgm", "default-counters.csv").read_text().splitlines():
        line = line.strip().lstrip("#").strip()
        row = next(csv.reader([line]), [])
        if len(row) >= 3 and row[0].strip().startswith("DCGM_"):
            out[row[0].strip()] = row[1].strip()
    return out


# DCGM field identifiers (dcgm_fields.h) that the counters CSV does not list; dcgm-exporter
# exports them under these names when a user adds them to the CSV.
DCGM_FIELDS_NOT_IN_CSV = {"DCGM_FI_DEV_POWER_MGMT_LIMIT": "gauge", "DCGM_FI_DEV_FB_TOTAL": "gauge"}


def default_counters() -> dict[str, str]:
    out = {}
    for line in reference_file("dcgm", "default-counters.csv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, type_, _ = (p.strip() for p in line.split(",", 2))
            out[name] = type_
    return out


@pytest.fixture
def fake_box():
    fake = FakeNvml([h100(i) for i in range(8)])
    fake.gpus[0].processes = [(4242, 1024**3)]
    source = NvmlSource(fake, xid_wait_ms=50)
    source.start()
    yield fake, source
    source.close()


def test_every_default_counter_the_h100_provides_is_exported_with_dcgm_types(fake_box):
    _, source = fake_box
    families, _ = scrape(source)
    expected = default_counters()
    provided_by_nvml_h100 = {n for n, t in expected.items() if t != "label"} - {
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS",  # vGPU guests only
    }
    for name in provided_by_nvml_h100:
        assert name in families, f"{name} missing from /metrics"
    known = dcgm_counters()
    for name, family in families.items():
        if name.startswith("DCGM_"):
            assert name in known or name in DCGM_FIELDS_NOT_IN_CSV, f"{name}: not a DCGM name"
            expected_type = known.get(name) or DCGM_FIELDS_NOT_IN_CSV[name]
            assert family.type == expected_type, (name, family.type, expected_type)


def test_gpu_series_carry_dcgm_exporter_labels(fake_box):
    _, source = fake_box
    families, text = scrape(source)
    sample = families["DCGM_FI_DEV_GPU_UTIL"].samples[0]
    assert tuple(sample.labels) == GPU_LABELS
    assert sample.labels["DCGM_FI_DRIVER_VERSION"] == "550.54.15"
    assert sample.labels["modelName"] == "NVIDIA H100 80GB HBM3"
    assert len(families["DCGM_FI_DEV_GPU_UTIL"].samples) == 8
    # counters keep dcgm-exporter's names: no "_total" added
    assert re.search(r"^DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION\{", text, re.M)
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter" in text


def test_no_sentinel_values_ever(fake_box):
    _, source = fake_box
    families, _ = scrape(source)
    for family in families.values():
        for s in family.samples:
            assert not math.isnan(s.value), s
            # NVML/DCGM blank sentinels are huge integers (0x7ffffff0, 0xFFFFFFFF, ...)
            assert abs(s.value) < 2**31 or family.name.endswith(
                ("ENERGY_CONSUMPTION", "_BYTES", "_timestamp_seconds", "VIOLATION")), s


def test_consumer_gpu_omits_what_it_cannot_measure():
    source = NvmlSource(FakeNvml([consumer_gpu()]), xid_wait_ms=50)
    source.start()
    try:
        families, _ = scrape(source)
    finally:
        source.close()
    for absent in ("DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
                   "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"):
        assert absent not in families
    assert families["gpuwarden_gpu_up"].samples[0].value == 1


def test_gpuwarden_series(fake_box):
    fake, source = fake_box
    fake.gpus[1].lost = True
    fake.gpus[2].clock_reasons = 0x40
    families, _ = scrape(source, allocations=lambda: {3: [JobRef("90", "bob", "gpu",
                                                                 source="slurm")]})
    up = {s.labels["gpu"]: s.value for s in families["gpuwarden_gpu_up"].samples}
    assert up["1"] == 0 and up["0"] == 1
    # a lost GPU exports no readings at all, rather than stale or blank ones
    assert "1" not in {s.labels["gpu"] for s in families["DCGM_FI_DEV_GPU_UTIL"].samples}
    events = {(s.labels["gpu"], s.labels["reason"]): s.value
              for s in families["gpuwarden_clock_event_active"].samples}
    assert events[("2", "hw_thermal_slowdown")] == 1 and events[("0", "hw_thermal_slowdown")] == 0
    jobs = {(s.labels["gpu"], s.labels["job_id"], s.labels["user"], s.labels["has_process"])
            for s in families["gpuwarden_gpu_job_info"].samples}
    assert jobs == {("0", "77", "alice", "true"), ("3", "90", "bob", "false")}
    info = families["gpuwarden_gpu_info"].samples[0].labels
    assert info["simulated"] == "false" and info["backend"] == "nvml"
    # prometheus_client's parser names counter families without their "_total"
    assert families["gpuwarden_collector_errors"].type == "counter"
    errors = {s.labels["code"]: s.value for s in families["gpuwarden_collector_errors"].samples}
    assert errors.get("GPU_IS_LOST", 0) >= 2
    assert families["gpuwarden_collector_healthy"].samples[0].value == 0


def test_xid_counter_by_xid(fake_box):
    fake, source = fake_box
    fake.inject_xid(4, 48)
    import time
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        families, _ = scrape(source)
        if "gpuwarden_xid_errors" in families:
            break
        time.sleep(0.05)
    samples = families["gpuwarden_xid_errors"].samples
    assert [(s.labels["gpu"], s.labels["xid"], s.labels["kind"], s.value) for s in samples] == [
        ("4", "48", "hardware", 1.0)]
    last = {s.labels["gpu"]: s.value for s in families["DCGM_FI_DEV_XID_ERRORS"].samples}
    assert last["4"] == 48 and last["0"] == 0
    # dcgm-exporter's labels since 3.3.6: the code and its name in NVIDIA's XID catalogue,
    # after the GPU's own labels
    labels = {s.labels["gpu"]: s.labels for s in families["DCGM_FI_DEV_XID_ERRORS"].samples}
    assert (labels["4"]["err_code"], labels["4"]["err_msg"]) == ("48", "Double Bit ECC Error")
    assert (labels["0"]["err_code"], labels["0"]["err_msg"]) == ("0", "No Error")
    assert list(labels["4"])[-3:] == ["DCGM_FI_DRIVER_VERSION", "err_code", "err_msg"]


def test_sim_is_labelled_simulated():
    families, _ = scrape(SimSource(2, "h100", {0: "train"}, seed=3))
    assert {s.labels["simulated"] for s in families["gpuwarden_gpu_info"].samples} == {"true"}


def _dashboard_selectors() -> list[tuple[str, set[str]]]:
    """(metric, labels it filters or groups on) for every query of NVIDIA's dashboard."""
    board = json.loads(reference_file("dcgm", "dcgm-exporter-dashboard.json").read_text())
    exprs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(board)
    found = []
    for expr in exprs:
        for m in re.finditer(r"(DCGM_\w+)(\{([^}]*)\})?", expr):
            labels = set(re.findall(r"(\w+)\s*=~?", m.group(3) or ""))
            found.append((m.group(1), labels))
        for m in re.finditer(r"label_values\((\w+),\s*(\w+)\)", expr):
            found.append((m.group(1), {m.group(2)}))
    assert found, "the dashboard has no DCGM queries?"
    return found


@pytest.mark.parametrize("backend", ["nvml", "sim"])
def test_nvidia_dashboard_queries_find_their_metrics_and_labels(fake_box, backend):
    source = fake_box[1] if backend == "nvml" else SimSource(4, "h100", {0: "train"}, seed=1)
    families, _ = scrape(source)
    for metric, labels in _dashboard_selectors():
        assert metric in families, f"NVIDIA's dashboard queries {metric}"
        sample = families[metric].samples[0]
        # "instance" is added by Prometheus at scrape time, not by exporters
        assert labels - {"instance"} <= set(sample.labels), (metric, labels)
