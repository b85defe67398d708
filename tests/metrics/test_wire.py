"""The snapshot wire check (gpu.wire): the node daemon's own snapshots pass unchanged, every
rule refuses what it is for with a reason that names the field, and the check is cheap."""

from __future__ import annotations

import copy
import timeit
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gpuwarden.gpu.fields import FIELDS
from gpuwarden.gpu.sim import SimSource
from gpuwarden.gpu.wire import (
    FIELD_RANGES,
    LIMITS,
    Limits,
    SnapshotRefused,
    decode_document,
    decode_snapshot,
    encode_snapshot,
    snapshot_of,
    validate_snapshot,
)
from gpuwarden.metrics.ingest import snapshot_groups
from gpuwarden.node.poller import GpuPoller

NOW = 1_800_000_000.0


def node_snapshot(gpus: int = 4, profiles: dict[int, str] | None = None) -> dict[str, Any]:
    """What a real node daemon serves (sim GPUs), taken at NOW, with a job on GPU 0."""
    source = SimSource(gpus, "h100", profiles or {0: "train", 1: "xid-storm", 3: "lost"},
                       seed=1, clock=lambda: NOW)
    poller = GpuPoller(source, hostname="n1", interval=5, clock=lambda: NOW)
    poller.poll_once()
    snap = encode_snapshot(poller.latest(), NOW)
    snap["gpus"][0]["jobs"] = [{"job_id": "42", "user": "ana", "partition": "gpu",
                                "has_process": True}]
    snap["gpus"][0]["processes"] = [{"pid": 4242, "used_memory_mib": 1024.0,
                                     "kind": "compute"}]
    return snap


@pytest.fixture
def snap() -> dict[str, Any]:
    return node_snapshot()


def refused(doc: Any, now: float = NOW, limits: Limits = LIMITS) -> str:
    with pytest.raises(SnapshotRefused) as info:
        validate_snapshot(doc, now, limits)
    return info.value.reason


def test_the_node_daemons_own_snapshot_passes_unchanged(snap: dict[str, Any]) -> None:
    assert any(g["xids"] for g in snap["gpus"]) and not snap["gpus"][3]["up"]
    body = orjson.dumps(snap)
    assert decode_document(body, NOW) == snap
    clean = validate_snapshot(orjson.loads(body), NOW)
    assert snapshot_groups("n1", clean, checked=True) == snapshot_groups("n1", snap)


def test_the_typed_snapshot_holds_every_value_of_the_document(snap: dict[str, Any]) -> None:
    """decode_snapshot's typed values say what the document says, key for key, and cannot
    be changed (services and the watchdog read these, never the document)."""
    typed = decode_snapshot(orjson.dumps(snap), NOW)
    node = snap["node"]
    assert (typed.node.hostname, typed.node.hostname_label, typed.node.backend,
            typed.node.driver_version, typed.node.version, typed.node.started_at) == (
        node["hostname"], node["hostname_label"], node["backend"], node["driver_version"],
        node["version"], node["started_at"])
    assert (typed.timestamp, typed.age_seconds, typed.health, typed.health_reason) == (
        snap["timestamp"], snap["age_seconds"], snap["health"]["state"],
        snap["health"]["reason"])
    assert dict(typed.collector or {}) == snap["collector"]
    assert len(typed.gpus) == len(snap["gpus"])
    for g, d in zip(typed.gpus, snap["gpus"], strict=True):
        assert (g.index, g.uuid, g.name, g.pci_bus_id, g.device, g.simulated, g.up, g.error,
                dict(g.fields), dict(g.clock_events), g.last_xid) == (
            d["index"], d["uuid"], d["name"], d["pci_bus_id"], d["device"], d["simulated"],
            d["up"], d["error"], d["fields"], d["clock_events"], d["last_xid"])
        assert [(p.pid, p.used_memory_mib, p.kind) for p in g.processes] == [
            (p["pid"], p["used_memory_mib"], p["kind"]) for p in d["processes"]]
        assert [(x.xid, x.count, x.last_seen, x.kind) for x in g.xids] == [
            (x["xid"], x["count"], x["last_seen"], x["kind"]) for x in d["xids"]]
        assert [(j.job_id, j.user, j.partition, j.has_process) for j in g.jobs] == [
            (j["job_id"], j["user"], j["partition"], j["has_process"]) for j in d["jobs"]]
    assert typed.gpus[0].jobs and typed.gpus[0].processes and any(g.xids for g in typed.gpus)
    with pytest.raises(TypeError):
        typed.gpus[0].fields["DCGM_FI_DEV_GPU_UTIL"] = 1.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        typed.gpus[0].up = False  # type: ignore[misc]
    with pytest.raises(AttributeError):
        typed.node = typed.node  # type: ignore[misc]


def test_every_catalogue_field_has_a_range() -> None:
    assert set(FIELD_RANGES) == {f.name for f in FIELDS}
    assert FIELD_RANGES["DCGM_FI_DEV_GPU_UTIL"] == (0.0, 100.0)


def test_unknown_keys_are_dropped_and_optional_parts_get_defaults(
        snap: dict[str, Any]) -> None:
    snap["extra"] = {"anything": [1, 2]}
    gpu = snap["gpus"][0]
    gpu["surprise"] = "x"
    gpu["processes"][0]["cmdline"] = "secret"
    for key in ("pci_bus_id", "device", "simulated", "error", "clock_events", "xids",
                "last_xid"):
        del snap["gpus"][1][key]
    del snap["health"], snap["collector"], snap["age_seconds"]
    clean = validate_snapshot(snap, NOW)
    assert "extra" not in clean and "surprise" not in clean["gpus"][0]
    assert clean["gpus"][0]["processes"] == [{"pid": 4242, "used_memory_mib": 1024.0,
                                              "kind": "compute"}]
    bare = clean["gpus"][1]
    assert (bare["pci_bus_id"], bare["device"], bare["simulated"], bare["error"],
            bare["clock_events"], bare["xids"], bare["last_xid"]) == ("", "", False, None,
                                                                      {}, [], None)
    assert clean["health"] == {"state": None, "reason": None} and clean["collector"] is None


Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return mutate


def _drop(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]
    return mutate


UTIL = "gpus/2/fields/DCGM_FI_DEV_GPU_UTIL"
CASES: list[tuple[str, Mutation, str]] = [
    # types of every part anything reads
    ("node missing", _drop("node"), "node: missing or null, not an object"),
    ("node is text", _set("node", "n1"), "node: text, not an object"),
    ("hostname a number", _set("node/hostname", 7), "node.hostname: 7 is not a host name"),
    ("hostname empty", _set("node/hostname", ""), 'node.hostname: "" is not a host name'),
    ("backend a list", _set("node/backend", []), "node.backend: a list is not text"),
    ("timestamp text", _set("timestamp", "soon"), 'timestamp: "soon" is not a unix time'),
    ("timestamp bool", _set("timestamp", True), "timestamp: true is not a unix time"),
    ("gpus an object", _set("gpus", {}), "gpus: an object, not a list"),
    ("gpu a number", _set("gpus/1", 3), "gpus[1]: a number, not an object"),
    ("index text", _set("gpus/1/index", "1"), 'gpus[1].index: "1" is not an integer'),
    ("index a float", _set("gpus/1/index", 1.0), "gpus[1].index: 1 is not an integer"),
    ("index bool", _set("gpus/1/index", True), "gpus[1].index: true is not an integer"),
    ("uuid missing", _drop("gpus/1/uuid"), "gpus[1].uuid: missing"),
    ("name an object", _set("gpus/0/name", {"a": 1}), "gpus[0].name: an object is not text"),
    ("up a number", _set("gpus/0/up", 1), "gpus[0].up: 1 is not true or false"),
    ("error a list", _set("gpus/0/error", ["x"]), "gpus[0].error: a list is not text"),
    ("fields a list", _set("gpus/0/fields", [1]), "gpus[0].fields: a list, not an object"),
    ("field text", _set(UTIL, "high"), 'gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: "high" is not a '
                                       "number"),
    ("field bool", _set(UTIL, True), "gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: true is not a "
                                     "number"),
    ("field null", _set(UTIL, None), "gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: null is not a "
                                     "number"),
    ("field name", _set("gpus/0/fields/bad name{}", 1.0),
     'gpus[0].fields: "bad name{}" is not a metric name'),
    ("clock_events a list", _set("gpus/0/clock_events", ["sw_power_cap"]),
     "gpus[0].clock_events: a list, not an object"),
    ("clock event a number", _set("gpus/0/clock_events/sw_power_cap", 1),
     "gpus[0].clock_events.sw_power_cap: 1 is not true or false"),
    ("clock event name", _set("gpus/0/clock_events/a b", True),
     'gpus[0].clock_events: "a b" is not a clock event reason'),
    ("processes an object", _set("gpus/0/processes", {"pid": 1}),
     "gpus[0].processes: an object, not a list"),
    ("process text", _set("gpus/0/processes/0", "4242"),
     "gpus[0].processes[0]: text, not an object"),
    ("pid negative", _set("gpus/0/processes/0/pid", -1),
     "gpus[0].processes[0].pid: -1 is not a process id"),
    ("process memory", _set("gpus/0/processes/0/used_memory_mib", -5.0),
     "gpus[0].processes[0].used_memory_mib: -5 is outside 0..1.67772e+07"),
    ("xids an object", _set("gpus/1/xids", {}), "gpus[1].xids: an object, not a list"),
    ("xid text", _set("gpus/1/xids/0/xid", "79"), 'gpus[1].xids[0].xid: "79" is not an XID'),
    ("xid kind", _set("gpus/1/xids/0/kind", "cosmic"),
     'gpus[1].xids[0].kind: "cosmic" is not one of application, hardware'),
    ("jobs text", _set("gpus/0/jobs", "42"), "gpus[0].jobs: text, not a list"),
    ("job id a number", _set("gpus/0/jobs/0/job_id", 42),
     "gpus[0].jobs[0].job_id: 42 is not a job id"),
    ("job user", _set("gpus/0/jobs/0/user", 5), "gpus[0].jobs[0].user: 5 is not text"),
    ("last_xid text", _set("gpus/0/last_xid", "79"), 'gpus[0].last_xid: "79" is not an XID'),
    ("health text", _set("health", "ok"), "health: text, not an object"),
    ("collector text", _set("collector", "x"), "collector: text, not an object"),
    ("collector errors", _set("collector/errors_total", {"E": "many"}),
     "collector.errors_total: not an object of at most 64 counts"),
    # physical ranges
    ("utilization 1e308", _set(UTIL, 1e308),
     "gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: 1e+308 is outside 0..100"),
    ("utilization 101", _set(UTIL, 101), "gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: 101 is outside "
                                         "0..100"),
    ("utilization -1", _set(UTIL, -1), "gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: -1 is outside "
                                       "0..100"),
    ("negative memory", _set("gpus/0/fields/DCGM_FI_DEV_FB_USED", -1024.0),
     "gpus[0].fields.DCGM_FI_DEV_FB_USED: -1024 is outside 0..1.67772e+07"),
    ("temperature", _set("gpus/0/fields/DCGM_FI_DEV_GPU_TEMP", 4000),
     "gpus[0].fields.DCGM_FI_DEV_GPU_TEMP: 4000 is outside -50..200"),
    ("power", _set("gpus/0/fields/DCGM_FI_DEV_POWER_USAGE", -3.5),
     "gpus[0].fields.DCGM_FI_DEV_POWER_USAGE: -3.5 is outside 0..10000"),
    ("clock", _set("gpus/0/fields/DCGM_FI_DEV_SM_CLOCK", -1),
     "gpus[0].fields.DCGM_FI_DEV_SM_CLOCK: -1 is outside 0..100000"),
    ("ratio", _set("gpus/0/fields/DCGM_FI_PROF_SM_ACTIVE", 7.0),
     "gpus[0].fields.DCGM_FI_PROF_SM_ACTIVE: 7 is outside 0..1.1"),
    ("counter negative", _set("gpus/0/fields/DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", -1),
     "gpus[0].fields.DCGM_FI_DEV_ECC_DBE_VOL_TOTAL: -1 is outside 0..1.84467e+19"),
    ("unknown field huge", _set("gpus/0/fields/VENDOR_X", 1e300),
     "gpus[0].fields.VENDOR_X: 1e+300 is outside -9.22337e+18..1.84467e+19"),
    ("NaN (a Python caller)", _set(UTIL, float("nan")),
     "gpus[2].fields.DCGM_FI_DEV_GPU_UTIL: nan is outside 0..100"),
    ("inf in an unknown field", _set("gpus/0/fields/VENDOR_X", float("inf")),
     "gpus[0].fields.VENDOR_X: inf is outside"),
    # indices
    ("duplicate index", _set("gpus/2/index", 0), "gpus[2].index: 0 is also the index of "
                                                 "gpus[0]"),
    ("index -1", _set("gpus/1/index", -1), "gpus[1].index: -1 is outside 0..1023"),
    ("index huge", _set("gpus/1/index", 99999999999),
     "gpus[1].index: 99999999999 is outside 0..1023"),
    # time
    ("ten years ahead", _set("timestamp", NOW + 10 * 365 * 86400),
     "timestamp: 2115360000 is 315360000 s ahead of this control plane's clock"),
    ("ten years behind", _set("timestamp", NOW - 10 * 365 * 86400),
     "timestamp: 1484640000 is 315360000 s behind this control plane's clock"),
    ("started_at negative", _set("node/started_at", -5), "node.started_at: -5 is outside"),
]


@pytest.mark.parametrize(("mutation", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_rule_refuses_with_a_reason_naming_the_field(snap: dict[str, Any],
                                                         mutation: Mutation,
                                                         reason: str) -> None:
    mutation(snap)
    assert refused(snap).startswith(reason)


def test_a_cold_gpu_and_a_clock_a_minute_off_are_fine(snap: dict[str, Any]) -> None:
    snap["gpus"][0]["fields"]["DCGM_FI_DEV_GPU_TEMP"] = -20  # a GPU in a cold lab
    snap["gpus"][0]["fields"]["VENDOR_DELTA"] = -3.5  # unknown fields may be negative
    snap["timestamp"] = NOW + 60
    assert validate_snapshot(snap, NOW)["gpus"][0]["fields"]["DCGM_FI_DEV_GPU_TEMP"] == -20


def test_caps(snap: dict[str, Any]) -> None:
    assert refused(snap, limits=Limits(max_gpus=3)) == \
        "gpus: 4 GPUs, more than the 3 accepted per node"
    assert refused({**snap, "gpus": snap["gpus"][:3]}, limits=Limits(max_fields=10)) \
        .startswith("gpus[0].fields: 35 fields, more than the 10 accepted per GPU")
    assert refused(snap, limits=Limits(max_series=60)).startswith(
        "gpus: more than 60 series from one node (at gpus[1])")
    many = copy.deepcopy(snap)
    many["gpus"][0]["processes"] *= 2
    assert refused(many, limits=Limits(max_processes=1)) == \
        "gpus[0].processes: 2 processes, more than the 1 accepted"
    assert refused(snap, limits=Limits(max_text=5)) == \
        "node.driver_version: 13 characters, more than the 5 accepted"
    names = {f"F{i}": 1.0 for i in range(20_000)}
    snap["gpus"][0]["fields"] = names
    assert refused(snap) == "gpus[0].fields: 20000 fields, more than the 128 accepted per GPU"


def test_body_size_and_what_is_not_json() -> None:
    body = orjson.dumps(node_snapshot())
    with pytest.raises(SnapshotRefused, match=r"the snapshot is \d+ bytes, more than the 1000"):
        decode_snapshot(body, NOW, Limits(max_bytes=1000))
    for junk, why in [(body[:-10], "not JSON: "), (b"<html><body>hi</body></html>",
                                                   "(it starts '<html><body>hi</body></html>')"),
                      (b'{"a": "\xff"}', "not valid UTF-8"), (b'{"a": NaN}', "not JSON: "),
                      (b'{"a": 1e999}', "infinity"), (b"[1, 2]", "the document is a list")]:
        with pytest.raises(SnapshotRefused) as info:
            decode_snapshot(junk, NOW)
        assert why in info.value.reason


def test_a_hostile_name_is_shown_cut_short(snap: dict[str, Any]) -> None:
    snap["gpus"][0]["fields"]["x" * 5000] = 1.0
    reason = refused(snap)
    assert reason.startswith('gpus[0].fields: "xxxx') and len(reason) < 120


def test_the_check_costs_about_what_parsing_does() -> None:
    """Reports the figure (pytest -s) and holds it to a loose bound: the checks of an 8-GPU
    snapshot must not cost more than parse + groups of the unchecked path many times over."""
    snap = node_snapshot(8, {i: "train" for i in range(8)})
    body = orjson.dumps(snap)

    def best(fn: Callable[[], object], n: int = 300) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n

    parse = best(lambda: orjson.loads(body))
    old = best(lambda: snapshot_groups("n", orjson.loads(body), checked=True))  # trusted
    new = best(lambda: snapshot_groups("n", decode_document(body, NOW), checked=True))
    doc = decode_document(body, NOW)
    typed = best(lambda: snapshot_of(doc))
    print(f"\n8-GPU snapshot ({len(body)} B): parse {parse * 1e6:.0f} µs; parse+groups "
          f"{old * 1e6:.0f} µs; parse+check+groups {new * 1e6:.0f} µs "
          f"(check {(new - old) * 1e6:.0f} µs more); typed values {typed * 1e6:.0f} µs")
    assert new < 6 * old
    assert typed < old  # building the typed values costs less than the series do


def test_the_nvml_backends_snapshot_passes_unchanged() -> None:
    """The real NVML backend on the fake pynvml (tests/fakes): 8 H100s and a consumer GPU,
    a process whose memory the driver cannot tell."""
    from gpuwarden.gpu.nvml import NvmlSource
    from tests.fakes.fake_pynvml import FakeNvml, consumer_gpu, h100

    fake = FakeNvml([h100(i) for i in range(8)] + [consumer_gpu()])
    fake.gpus[0].processes = [(100, 2 * 1024**3), (101, None)]
    source = NvmlSource(fake, xid_wait_ms=50, backoff_initial=0.0)
    source.start()
    try:
        poller = GpuPoller(source, hostname="n1", interval=5, clock=lambda: NOW)
        poller.poll_once()
        snap = encode_snapshot(poller.latest(), NOW)
    finally:
        source.close()
    snap["timestamp"] = NOW
    assert len(snap["gpus"]) == 9 and snap["gpus"][0]["processes"][1]["used_memory_mib"] is None
    assert validate_snapshot(orjson.loads(orjson.dumps(snap)), NOW) == snap
