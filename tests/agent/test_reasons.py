"""The reason table, the XID ranking and the exit-status reading, alone (no cluster)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpuwarden.agent.analyzers import (
    XID_SEVERITY,
    XID_SHORT,
    _exit_status,
    _limit_setting,
    rank_xids,
    xid_rank,
)
from gpuwarden.gpu.model import APPLICATION_XIDS
from gpuwarden.gpu.xids import XID_MEANINGS
from gpuwarden.slurm import reasons

KINDS = {reasons.SCHEDULING, reasons.RESOURCES, reasons.PRIORITY, reasons.DEPENDENCY,
         reasons.NEVER, reasons.HELD, reasons.BEGIN, reasons.NODES, reasons.PARTITION,
         reasons.LIMIT, reasons.RESERVATION, reasons.OTHER}


def test_every_code_in_the_table_has_a_kind_and_words():
    for code, (kind, text) in reasons.REASONS.items():
        assert kind in KINDS, code
        assert len(text) > 15 and not text.endswith("."), code
        assert reasons.reason(code).code == code


@pytest.mark.parametrize(("raw", "code", "kind", "words"), [
    ("None", "None", reasons.SCHEDULING, "not evaluated"),
    ("", "None", reasons.SCHEDULING, "not evaluated"),
    ("Priority", "Priority", reasons.PRIORITY, "higher-priority"),
    ("Resources", "Resources", reasons.RESOURCES, "in use"),
    ("Dependency", "Dependency", reasons.DEPENDENCY, "depends on"),
    ("DependencyNeverSatisfied", "DependencyNeverSatisfied", reasons.NEVER, "never start"),
    ("JobHeldUser", "JobHeldUser", reasons.HELD, "released"),
    ("JobHeldAdmin", "JobHeldAdmin", reasons.HELD, "administrator"),
    ("BeginTime", "BeginTime", reasons.BEGIN, "--begin"),
    ("ReqNodeNotAvail, UnavailableNodes:gpu[3-4]", "ReqNodeNotAvail", reasons.NODES,
     "not available"),
    ("PartitionNodeLimit", "PartitionNodeLimit", reasons.PARTITION, "MaxNodes"),
    ("PartitionTimeLimit", "PartitionTimeLimit", reasons.PARTITION, "MaxTime"),
    ("QOSMaxGRESPerUser", "QOSMaxGRESPerUser", reasons.LIMIT, "per user"),
    ("AssocGrpGRES", "AssocGrpGRES", reasons.LIMIT, "aggregate GPU"),
    ("launch failed requeued held", "launch failed requeued held", reasons.HELD, "requeued"),
    ("RaisedSignal:9(Killed)", "RaisedSignal", reasons.OTHER, "signal"),
])
def test_the_reasons_slurm_gives_pending_jobs(raw, code, kind, words):
    r = reasons.reason(raw)
    assert (r.code, r.kind) == (code, kind)
    assert words in r.text


def test_limit_codes_not_in_the_table_are_read_from_their_name():
    cases = {
        "AssocGrpMemRunMinutes": ("association", "memory", "minutes"),
        "AssocGrpNodeLimit": ("association", "aggregate node"),
        "QOSMaxNodePerUserLimit": ("QOS", "node", "per user"),
        "QOSMaxWallDurationPerJobLimit": ("QOS", "wall-time", "per job"),
        "QOSMinGRES": ("less GPU",),
        "MaxGRESPerAccount": ("GPU", "per account"),
        "AssocGrpBillingMinutes": ("billing", "minutes"),
    }
    for code, words in cases.items():
        r = reasons.reason(code)
        assert r.kind == reasons.LIMIT, code
        assert all(w in r.text for w in words), (code, r.text)


def test_an_unknown_code_is_shown_as_slurm_gave_it():
    r = reasons.reason("SomethingNew")
    assert r.kind == reasons.OTHER and "'SomethingNew'" in r.text
    assert reasons.split_reason("ReqNodeNotAvail, UnavailableNodes:n1") == (
        "ReqNodeNotAvail", "UnavailableNodes:n1")


def test_hardware_xids_come_first_by_severity_then_application_ones_by_count():
    seen = [(43, 14, 0.0), (13, 11, 0.0), (79, 2, 0.0), (31, 5, 0.0), (74, 1, 0.0),
            (48, 1, 0.0), (119, 3, 0.0), (63, 9, 0.0), (95, 1, 0.0), (200, 1, 0.0)]
    assert [x for x, _, _ in rank_xids(seen)] == [79, 95, 48, 63, 74, 119, 200, 43, 13, 31]
    assert all(xid_rank(x)[0] == 2 for x in APPLICATION_XIDS)
    assert max(xid_rank(x) for x in (79, 48, 63, 64, 94, 95, 74, 119, 120)) < xid_rank(200)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"exit_code": 3, "signal": 0}, (3, None)),
    ({"exit_code": 0, "signal": 9}, (0, 9)),
    ({"exit_code": "1:0"}, (1, None)),
    ({"exit_code": "0:15"}, (0, 15)),
    ({}, (None, None)),
])
def test_exit_status_as_slurm_reports_it(fields, expected):
    assert _exit_status(SimpleNamespace(**fields)) == expected


def test_every_xid_class_the_catalogue_explains_has_a_rank_and_a_short_name():
    """Each XID gpu/xids.py explains is ranked by the node doctor: every hardware/driver
    one by severity (bus, memory, NVLink, GSP, micro-controller), the application ones
    after all of them; each has the doctor's short name."""
    hardware = {x for x in XID_MEANINGS if x not in APPLICATION_XIDS}
    assert hardware == set(XID_SEVERITY)
    assert set(XID_MEANINGS) <= set(XID_SHORT)
    worst_app = min(xid_rank(x) for x in APPLICATION_XIDS)
    assert all(xid_rank(x) < worst_app for x in hardware)
    assert xid_rank(79) == min(xid_rank(x) for x in XID_MEANINGS)  # the GPU is gone


@pytest.mark.parametrize(("code", "setting"), [
    ("QOSMaxGRESPerUser", ("MaxTRESPerUser", "gres/gpu", "qos")),
    ("QOSGrpGRES", ("GrpTRES", "gres/gpu", "qos")),
    ("QOSMaxGRESPerJob", ("MaxTRESPerJob", "gres/gpu", "qos")),
    ("QOSMaxJobsPerUserLimit", ("MaxJobsPerUser", None, "qos")),
    ("QOSMaxSubmitJobPerUserLimit", ("MaxSubmitJobsPerUser", None, "qos")),
    ("QOSMaxWallDurationPerJobLimit", ("MaxWallDurationPerJob", None, "qos")),
    ("AssocGrpGRES", ("GrpTRES", "gres/gpu", "association")),
    ("AssocGrpCpuLimit", ("GrpTRES", "cpu", "association")),
    ("AssocGrpGRESRunMinutes", ("GrpTRESRunMins", "gres/gpu", "association")),
    ("AssocMaxJobsLimit", ("MaxJobs", None, "association")),
    ("AssocGrpJobsLimit", ("GrpJobs", None, "association")),
    ("AccountingPolicy", ("AccountingPolicy", None, "qos")),
])
def test_a_limit_reason_names_the_sacctmgr_setting_behind_it(code, setting):
    assert _limit_setting(code) == setting
