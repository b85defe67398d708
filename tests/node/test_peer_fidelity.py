"""The node's series against dcgm-exporter's: ``--hostname-label``, XID ``err_code`` and
``err_msg``, and ``promtool check metrics`` on the node's ``/metrics``."""

from __future__ import annotations

import time
from itertools import pairwise

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from gpuwarden.errors import GpuwardenError
from gpuwarden.gpu.fields import FIELDS
from gpuwarden.gpu.series import node_series
from gpuwarden.gpu.sim import SimSource
from gpuwarden.gpu.wire import SnapshotRefused, decode_document, decode_snapshot
from gpuwarden.gpu.xid_messages import xid_message
from gpuwarden.node.app import create_app
from gpuwarden.node.daemon import check_hostname_label
from gpuwarden.node.poller import GpuPoller
from tests.slurm.test_metrics_vpenso import promtool_findings

PROFILES = {0: "train", 1: "xid-storm", 2: "thermal-throttle", 3: "lost"}


def node(hostname_label: str = "Hostname") -> TestClient:
    poller = GpuPoller(SimSource(4, "h100", PROFILES, seed=1), hostname="n1",
                       hostname_label=hostname_label, interval=5)
    for _ in range(6):  # enough polls for the xid-storm GPU to have an XID
        poller.poll_once()
    return TestClient(create_app(poller.latest, token=None))


def label_names(text: str) -> set[str]:
    return {k for family in text_string_to_metric_families(text) for s in family.samples
            for k in s.labels}


@pytest.mark.parametrize("label", ["Hostname", "hostname"])
def test_hostname_label_choice_reaches_metrics_and_ingest(label: str) -> None:
    client = node(label)
    text = client.get("/metrics").text
    other = "hostname" if label == "Hostname" else "Hostname"
    assert f'{label}="n1"' in text and f'{other}="n1"' not in text
    # the control plane stores what the node exports: the snapshot says which label
    body = client.get("/api/v1/snapshot").content
    assert decode_snapshot(body, time.time()).node.hostname_label == label
    doc = decode_document(body, time.time())  # what the series are made of
    stored = {k for group in node_series(doc) for k in group.labels}
    assert label in stored and other not in stored


def test_hostname_label_is_one_of_dcgm_exporters() -> None:
    assert check_hostname_label("hostname") == "hostname"
    with pytest.raises(GpuwardenError, match=r"--hostname-label 'host'.*Hostname.*hostname"):
        check_hostname_label("host")
    doc = orjson.loads(node().get("/api/v1/snapshot").content)
    doc["node"]["hostname_label"] = "HOST"
    with pytest.raises(SnapshotRefused, match=r'node\.hostname_label: "HOST" is not one of'):
        decode_snapshot(orjson.dumps(doc), time.time())
    del doc["node"]["hostname_label"]  # a node of an older version: Hostname, as it exported
    assert decode_snapshot(orjson.dumps(doc), time.time()).node.hostname_label == "Hostname"


def test_xid_err_msg_is_dcgm_exporters() -> None:
    assert xid_message(0) == "No Error"
    assert xid_message(79) == "GPU has fallen off the bus"
    assert xid_message(172) == "Uncorrectable SRAM Error"
    assert xid_message(173) == xid_message(-1) == "Unknown Error"
    samples = [s for family in text_string_to_metric_families(node().get("/metrics").text)
               for s in family.samples if s.name == "DCGM_FI_DEV_XID_ERRORS"]
    stormy = next(s for s in samples if s.labels["gpu"] == "1")
    assert stormy.value > 0
    assert stormy.labels["err_code"] == str(int(stormy.value))
    assert stormy.labels["err_msg"] == xid_message(int(stormy.value))


def test_node_metrics_pass_promtool_but_for_dcgm_exporters_own() -> None:
    text = node().get("/metrics").text
    dcgm = {f.name for f in FIELDS}
    camel = "label names should be written in 'snake_case' not 'camelCase'"
    for name, problem in promtool_findings(text):
        # dcgm-exporter's counters have no _total; its modelName label is camelCase, and
        # gpuwarden's GPU series carry it too, so they join with dcgm-exporter's
        assert name in dcgm or problem == camel, (name, problem)
    camel_labels = {k for k in label_names(text) if any(a.islower() and b.isupper()
                                                         for a, b in pairwise(k))}
    assert camel_labels == {"modelName"}
