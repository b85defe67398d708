"""Rules, the alert state machine and silences, on a real state database with views built
from plain data (the evaluators' input is data, so no fake is needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpuwarden.errors import GpuwardenError
from gpuwarden.gpu.model import GpuJob, GpuProcess, LiveGpu, NodeGpu, XidCount
from gpuwarden.slurm.model import SlurmJob, SlurmNode, SlurmSnapshot
from gpuwarden.state.db import StateDB
from gpuwarden.watchdog.alerts import AlertBook
from gpuwarden.watchdog.evaluators import EVALUATORS
from gpuwarden.watchdog.rules import load_rules
from gpuwarden.watchdog.view import ClusterView, NodeFacts


def gpu(node="n1", index=0, util=50.0, jobs=(), up=True, temp=60.0, events=None, xids=(),
        fields=None, cost=2.0, processes=1, name="NVIDIA H100 80GB HBM3"):
    f = {"DCGM_FI_DEV_GPU_UTIL": util, "DCGM_FI_DEV_GPU_TEMP": temp,
         "DCGM_FI_DEV_FB_USED": 1000.0, "DCGM_FI_DEV_FB_TOTAL": 80000.0, **(fields or {})}
    g = NodeGpu(index, f"GPU-{node}-{index}", name, "", "", False, up, None if up else "lost",
                f, events or {}, (GpuProcess(1000, 10.0),) * processes,
                tuple(XidCount(x["xid"], x["count"], x["last_seen"]) for x in xids), None,
                tuple(GpuJob(**j) for j in jobs))
    return LiveGpu(node, g, up, g.error, cost)


def view(gpus, now=1000.0, nodes=None, slurm=None):
    nodes = nodes or [NodeFacts(n, True, None, now, 8.0, "static", "worker")
                      for n in sorted({g.node for g in gpus})]
    return ClusterView(now, "test", nodes, gpus, slurm)


def rules_by_id(**overrides):
    return {r.id: r for r in load_rules(overrides)}


class Cycle:
    """Drives the book like the watchdog does, one rule at a time."""

    def __init__(self, tmp_path, **overrides):
        self.book = AlertBook(StateDB(tmp_path / "state.db"))
        self.rules = rules_by_id(**overrides)

    def run(self, rule_id, v):
        rule = self.rules[rule_id]
        found = EVALUATORS[rule.kind](v, rule, self.book.open_subjects(rule.id))
        return self.book.apply([(rule, found)], v.now)


def test_idle_gpu_goes_pending_then_firing_then_resolved(tmp_path):
    c = Cycle(tmp_path, gpu_idle={"for": "10m"})
    assert c.run("gpu_idle", view([gpu(util=1)], now=0)) == []
    [alert] = c.book.list()
    assert alert.state == "pending" and alert.subject == "n1/gpu0"
    assert c.run("gpu_idle", view([gpu(util=1)], now=599)) == []
    [t] = c.run("gpu_idle", view([gpu(util=2)], now=600))
    assert t.event == "firing" and t.alert.state == "firing"
    assert "$2.00/hr" in t.alert.summary and "GPU 0 on n1" in t.alert.summary
    [t] = c.run("gpu_idle", view([gpu(util=80)], now=700))
    assert t.event == "resolved"
    assert c.book.list() == [] and c.book.list(state="resolved")[0].resolved_at == 700


def test_condition_gone_while_pending_leaves_no_alert(tmp_path):
    c = Cycle(tmp_path)
    c.run("gpu_idle", view([gpu(util=1)], now=0))
    assert c.run("gpu_idle", view([gpu(util=70)], now=10)) == []
    assert c.book.list(state="all") == []


def test_no_flapping_at_the_threshold(tmp_path):
    c = Cycle(tmp_path, gpu_idle={"for": "0s"})
    events = []
    for i, util in enumerate([4, 6, 4, 6, 4.9, 5.1, 9, 4, 11]):
        events += [t.event for t in c.run("gpu_idle", view([gpu(util=util)], now=i * 15))]
    # fires once at 4%, stays firing while under the 10% clear level, resolves at 11%
    assert events == ["firing", "resolved"]


def test_gpu_with_a_job_is_not_idle_but_allocated_idle(tmp_path):
    job = {"job_id": "42", "user": "alice", "partition": "gpu", "has_process": False}
    c = Cycle(tmp_path, gpu_idle={"for": "0s"}, gpu_allocated_idle={"for": "0s"})
    v = view([gpu(util=0, jobs=[job], processes=0), gpu(index=1, util=0)])
    assert [t.alert.subject for t in c.run("gpu_idle", v)] == ["n1/gpu1"]
    [t] = c.run("gpu_allocated_idle", v)
    assert t.alert.subject == "n1/gpu0" and t.alert.labels["job_id"] == "42"
    assert "job 42 (alice)" in t.alert.summary and "no process" in t.alert.summary


def test_free_gpus_are_not_idle_waste(tmp_path):
    c = Cycle(tmp_path, gpu_idle={"for": "0s"})
    assert c.run("gpu_idle", view([gpu(util=0, cost=0.0)])) == []


def test_thermal_xid_ecc_lost_memory(tmp_path):
    c = Cycle(tmp_path, thermal_throttle={"for": "0s"}, gpu_memory_full={"for": "0s"})
    now = 5000.0
    gpus = [
        gpu(index=0, events={"hw_thermal_slowdown": True}, temp=91),
        gpu(index=1, xids=[{"xid": 79, "count": 2, "last_seen": now - 60, "kind": "hardware"},
                           {"xid": 13, "count": 5, "last_seen": now - 5, "kind": "application"}],
            jobs=[{"job_id": "7", "user": "bob"}]),
        gpu(index=2, fields={"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 3.0,
                             "DCGM_FI_DEV_ROW_REMAP_FAILURE": 1.0}),
        gpu(index=3, up=False),
        gpu(index=4, fields={"DCGM_FI_DEV_FB_USED": 79000.0}),
        gpu(index=5, xids=[{"xid": 48, "count": 1, "last_seen": now - 3600, "kind": "hardware"}]),
    ]
    v = replace(view(gpus, now=now), checks_passed={"n1": now - 1800})  # a check passed
    subjects = {rid: [t.alert.subject for t in c.run(rid, v)] for rid in (
        "thermal_throttle", "xid_hardware", "xid_application", "ecc_uncorrectable",
        "row_remap_failure", "gpu_lost", "gpu_memory_full")}
    assert subjects == {
        "thermal_throttle": ["n1/gpu0"],
        "xid_hardware": ["n1/gpu1/xid79"],  # XID 48 on gpu5 came before the pass: over
        "xid_application": ["n1/gpu1/xid13"],
        "ecc_uncorrectable": ["n1/gpu2"],
        "row_remap_failure": ["n1/gpu2"],
        "gpu_lost": ["n1/gpu3"],
        "gpu_memory_full": ["n1/gpu4"],
    }
    app = c.book.list(state="firing")
    assert any("job 7 of bob" in a.summary for a in app if a.rule == "xid_application")


def test_application_xid_without_a_job_says_so(tmp_path):
    c = Cycle(tmp_path)
    x = [{"xid": 43, "count": 1, "last_seen": 990.0, "kind": "application"}]
    [t] = c.run("xid_application", view([gpu(xids=x)], now=1000))
    assert t.alert.summary == ("GPU 0 on n1: application XID 43 with no job on the GPU; "
                               "the GPU is fine")
    [t] = c.run("xid_application", view([gpu(index=1, xids=x, jobs=[{"job_id": "9"}])],
                                         now=1000))
    assert "application XID 43 in job 9; the GPU is fine" in t.alert.summary


def test_xid_alert_keeps_firing_then_resolves(tmp_path):
    c = Cycle(tmp_path, xid_application={"keep_firing_for": "15m"})
    x = [{"xid": 13, "count": 1, "last_seen": 0.0, "kind": "application"}]
    assert [t.event for t in c.run("xid_application", view([gpu(xids=x)], now=10))] == [
        "firing"]
    assert c.run("xid_application", view([gpu(xids=x)], now=800)) == []
    assert [t.event for t in c.run("xid_application", view([gpu(xids=x)], now=2000))] == [
        "resolved"]


def test_hardware_xid_alert_fires_until_a_check_passes_after_it(tmp_path):
    c = Cycle(tmp_path, xid_hardware={"keep_firing_for": "20s"})  # the demo's
    x = [{"xid": 79, "count": 1, "last_seen": 100.0, "kind": "hardware"}]
    passed_before = {"n1": 50.0}  # the burn-in passed before the XID

    def at(now, passed):
        v = view([gpu(xids=x)], now=now)
        return [t.event for t in c.run("xid_hardware", replace(v, checks_passed=passed))]

    assert at(101, passed_before) == ["firing"]
    assert at(3600, passed_before) == []  # an hour on, no new XID: still firing
    assert [a.state for a in c.book.list()] == ["firing"]
    assert at(3700, {"n1": 3650.0}) == ["resolved"]  # a check passed after it: at once
    assert at(3800, {"n1": 3650.0}) == []
    # without the rule's until_checks_pass it resolves by itself, keep_firing_for later
    c = Cycle(tmp_path / "b", xid_hardware={"keep_firing_for": "20s",
                                            "until_checks_pass": False})
    assert at(101, {}) == ["firing"]
    assert at(200, {}) == ["resolved"]
    with pytest.raises(GpuwardenError, match=r"watchdog.rules.gpu_lost: until_checks_pass is "
                       "for rules of kind xid"):
        load_rules({"gpu_lost": {"until_checks_pass": True}})


def test_node_down_and_slurm_rules(tmp_path):
    c = Cycle(tmp_path, node_down={"for": "2m"})
    nodes = [NodeFacts("n1", False, "ConnectError", 0, 8.0, "static", "worker")]
    assert c.run("node_down", view([], now=0, nodes=nodes)) == []
    [t] = c.run("node_down", view([], now=121, nodes=nodes))
    assert t.alert.subject == "n1" and "does not answer" in t.alert.summary
    slurm = SlurmSnapshot(collected_at=2000, duration_s=0.1, up=True, nodes=(
        SlurmNode("node2", "drained", flags=("DRAIN",), reason="bad fan"),
        SlurmNode("node3", "idle")), jobs=(
        SlurmJob(5, "j", "a", "gpu", "PENDING", "ReqNodeNotAvail", submit_time=990),
        SlurmJob(6, "j", "b", "gpu", "PENDING", "Resources", submit_time=990),
        SlurmJob(7, "j", "c", "gpu", "PENDING", "Resources", submit_time=100),
        SlurmJob(8, "j", "d", "", "COMPLETING", nodes=("node1",))))
    v = view([], now=2000, slurm=slurm)
    [t] = c.run("slurm_node_unavailable", v)
    assert t.alert.subject == "slurm/node2" and "bad fan" in t.alert.summary
    pending = {t.alert.subject: t.alert.summary for t in c.run("job_pending_too_long", v)}
    assert set(pending) == {"job/5", "job/7"}  # ReqNodeNotAvail at once, Resources after 30m
    assert "a node it needs is not available" in pending["job/5"]
    assert "GPUs, CPUs or memory it asks for are in use" in pending["job/7"]
    assert c.run("job_stuck_completing", v) == []  # pending for 10 min first


def test_silence_marks_alerts_and_expires(tmp_path):
    c = Cycle(tmp_path, gpu_idle={"for": "0s"})
    s = c.book.silence(author="ops", duration=3600, rule="gpu_idle", subject="n1/*",
                       comment="maintenance")
    [t] = c.run("gpu_idle", view([gpu(util=0)]))
    assert t.alert.silenced and t.alert.state == "firing"  # recorded, only muted
    c.book.expire_silence(s.id, "ops")
    assert not c.book.list()[0].silenced
    with pytest.raises(GpuwardenError):
        c.book.silence(author="", duration=60)


def test_acknowledge_and_history(tmp_path):
    c = Cycle(tmp_path, gpu_idle={"for": "0s"})
    [t] = c.run("gpu_idle", view([gpu(util=0)]))
    c.book.acknowledge(t.alert.id, "alice")
    c.run("gpu_idle", view([gpu(util=90)], now=2000))
    events = [e["event"] for e in c.book.events(t.alert.id)]
    assert events == ["firing", "acknowledged", "resolved"]
    assert c.book.get(t.alert.id).acknowledged_by == "alice"


def test_rule_overrides_are_validated():
    with pytest.raises(GpuwardenError, match="gpu_idle: for"):
        load_rules({"gpu_idle": {"for": "a while"}})
    with pytest.raises(GpuwardenError, match="unknown key"):
        load_rules({"gpu_idle": {"treshold": 3}})
    with pytest.raises(GpuwardenError, match="unknown rule gpu_idel; did you mean gpu_idle\\?"):
        load_rules({"gpu_idel": {"for": "5m"}})
    with pytest.raises(GpuwardenError, match="unknown rule zzz; the rules are: gpu_idle, "):
        load_rules({"zzz": False})
    mine = {r.id: r for r in load_rules({"my_idle": {"kind": "gpu_idle", "threshold": 1}})}
    assert mine["my_idle"].threshold == 1  # a new rule with its kind is not a typo
    assert not {r.id: r for r in load_rules({"gpu_idle": False})}["gpu_idle"].enabled
    lab = {r.id: r for r in load_rules({"gpu_idle": {"for": "30m"}},
                                       cluster_overrides={"gpu_idle": {"threshold": 2}})}
    assert lab["gpu_idle"].for_ == 1800 and lab["gpu_idle"].threshold == 2


def test_an_alert_whose_rule_is_removed_resolves_silenced_if_it_was(tmp_path):
    c = Cycle(tmp_path, thermal_throttle={"for": "0s"})
    hot = view([gpu(events={"hw_thermal_slowdown": True}, temp=92.0)])
    c.run("thermal_throttle", hot)
    c.run("thermal_throttle", view(hot.gpus, now=1001.0))
    c.book.silence(author="ops", duration=3600, rule="thermal_throttle", subject="*")
    (t,) = c.book.retire_rules(["gpu_idle"], 1002.0)
    assert t.event == "resolved" and t.alert.rule == "thermal_throttle"
    assert t.alert.silenced  # so the notifier keeps quiet about it
