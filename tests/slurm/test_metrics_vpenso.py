"""The ``slurm_*`` series against vpenso/prometheus-slurm-exporter's meaning.

Every name gpuwarden shares with vpenso's exporter must carry vpenso's value: the live test
runs vpenso's own commands (the arguments of its ``development`` branch) on the real local
cluster and reads them the way its Go code does, restated here independently of gpuwarden's
parsers; the other tests pin the cases one by one and run ``promtool check metrics`` on the
controller's exposition.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuwarden.gpu.wire import SnapshotRefused
from gpuwarden.node.exposition import render
from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SlurmAdapter, SlurmCollector
from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.metrics import SLURM_METRICS, VPENSO_NAMES, SlurmMetricsCollector
from gpuwarden.slurm.model import SlurmJob, SlurmNode, SlurmSnapshot
from gpuwarden.slurm.parsers import FieldFormatShape, parse_sdiag, parse_sshare
from gpuwarden.slurm.wire import decode_summary, encode_summary

DATA = Path(__file__).parent / "data"
SLEEP = "#!/bin/sh\nsleep 300\n"
Wait = Callable[..., object]
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def recorded_snapshot() -> SlurmSnapshot:
    shape = FieldFormatShape()
    info = shape.parse_nodes((DATA / "sinfo_format.txt").read_text())
    return SlurmSnapshot(collected_at=1.0, duration_s=0.1, up=True,
                         jobs=tuple(shape.parse_jobs((DATA / "squeue_format.txt").read_text())),
                         nodes=info.nodes, partitions=info.partitions,
                         stats=parse_sdiag((DATA / "sdiag.txt").read_text()),
                         fairshare={"root": 0.5, "gpuwarden": 0.25})


def exposed(snapshot: SlurmSnapshot) -> str:
    return render([SlurmMetricsCollector(lambda: snapshot)]).decode()


def series_of(text: str) -> Series:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def reader(series: Series) -> Callable[..., float]:
    """``value(name, **labels)``: the sample of that series."""
    return lambda name, **labels: series[(name, tuple(sorted(labels.items())))]


def promtool_findings(text: str) -> list[tuple[str, str]]:
    """``promtool check metrics`` on an exposition: (metric, problem) for each finding."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    findings = [tuple(line.split(" ", 1)) for line in lines]
    assert done.returncode in (0, 3), lines  # 3: lint findings, anything else: it failed
    assert (done.returncode == 0) == (not findings), lines
    return findings  # type: ignore[return-value]


def test_gpuwardens_own_names_pass_promtool() -> None:
    text = exposed(recorded_snapshot())
    findings = promtool_findings(text)
    # vpenso's names keep their type and name, _total on a gauge included (promtool's
    # only complaint about them); everything else passes clean
    assert {name for name, _ in findings} <= VPENSO_NAMES, findings
    assert {problem for _, problem in findings} == {
        'non-counter metrics should not have "_total" suffix'}
    assert "slurm_scheduler_backfilled_jobs_since_start_total" in {n for n, _ in findings}


def test_every_vpenso_name_is_exported_with_its_type() -> None:
    assert set(SLURM_METRICS) >= VPENSO_NAMES
    assert {SLURM_METRICS[name].type for name in VPENSO_NAMES} == {"gauge"}
    names = {name for name, _ in series_of(exposed(recorded_snapshot()))}
    assert names >= VPENSO_NAMES


def job(job_id: int, state: str, reason: str = "None", *, user: str = "alice",
        account: str = "lab", cpus: int = 2) -> SlurmJob:
    return SlurmJob(job_id, f"j{job_id}", user, "gpu", state, reason, num_cpus=cpus,
                    account=account)


def test_queue_user_and_account_counts_as_vpenso() -> None:
    jobs = (job(1, "PENDING", "Dependency", cpus=4), job(2, "PENDING", "Resources"),
            job(3, "RUNNING", cpus=8), job(4, "SUSPENDED", account="ops"),
            job(5, "PENDING", "Priority", user="bob", account="ops", cpus=1),
            job(6, "COMPLETED", user="carol", account=""),
            SlurmJob(7, "j7", "dave", "gpu,cpu", "PENDING", "Priority", account="lab"))
    series = series_of(exposed(SlurmSnapshot(collected_at=1.0, duration_s=0.1, up=True,
                                             jobs=jobs)))

    value = reader(series)

    # vpenso: a dependency-pending job is pending, and pending_dependency too
    assert value("slurm_queue_pending") == 4 and value("slurm_queue_pending_dependency") == 1
    # squeue -o%P --states=PENDING says "gpu,cpu": no partition of that name
    assert value("slurm_partition_jobs_pending", partition="gpu") == 3
    assert value("slurm_partition_jobs_pending", partition="cpu") == 0
    assert value("slurm_jobs_pending", reason="Dependency") == 1
    assert value("slurm_user_jobs_pending", user="alice") == 2
    assert value("slurm_user_cpus_pending", user="alice") == 6
    assert value("slurm_user_cpus_running", user="alice") == 8
    assert value("slurm_user_jobs_suspended", user="alice") == 1
    assert value("slurm_account_jobs_pending", account="lab") == 3
    assert value("slurm_account_cpus_pending", account="lab") == 6
    assert value("slurm_account_jobs_running", account="lab") == 1
    assert value("slurm_account_cpus_running", account="lab") == 8
    assert value("slurm_account_jobs_suspended", account="ops") == 1
    assert value("slurm_account_cpus_pending", account="ops") == 1
    # a job without an account counts in no account; a user with finished jobs only is 0
    assert not [key for key in series if dict(key[1]).get("account") == ""]
    assert value("slurm_user_jobs_pending", user="carol") == 0


def node(name: str, state: str, flags: tuple[str, ...] = (), *, used: int = 0,
         cpus_alloc: int = 0, state_raw: str = "") -> SlurmNode:
    from gpuwarden.slurm.gres import parse_gres

    return SlurmNode(name, state, state_raw or state, flags, cpus_alloc=cpus_alloc,
                     cpus_total=4, gres=parse_gres("gpu:a100:2"),
                     gres_used=parse_gres(f"gpu:a100:{used}(IDX:0-{max(used - 1, 0)})"))


def test_gpu_idle_and_other_mean_what_vpensos_sinfo_says() -> None:
    nodes = (node("n1", "idle"), node("n2", "mixed", used=1, cpus_alloc=1),
             node("n3", "draining", ("DRAIN",), used=1, cpus_alloc=1),
             node("n4", "drained", ("DRAIN",)), node("n5", "down", ("NOT_RESPONDING",),
                                                        state_raw="down*"))
    series = series_of(exposed(SlurmSnapshot(collected_at=1.0, duration_s=0.1, up=True,
                                             nodes=nodes)))

    value = reader(series)

    # sinfo --state=idle,allocated lists n1 (idle), n2 and n3 (CPUs allocated)
    assert value("slurm_gpus_alloc") == 2
    assert value("slurm_gpus_idle") == 2 + 1 + 1
    assert value("slurm_gpus_other") == 10 - 2 - 4
    # gpuwarden's: what a job can get now (not the draining node's free GPU)
    assert value("slurm_gpus_free") == 3 and value("slurm_gpus_unusable") == 5
    assert value("slurm_node_cpu_total", node="n5", status="down*") == 4
    assert value("slurm_node_cpu_alloc", node="n3", status="draining") == 1


def test_status_label_from_a_json_shape_is_sinfos_statelong() -> None:
    assert node("n1", "mixed", state_raw="MIXED").sinfo_state == "mixed"
    assert node("n1", "down", ("NOT_RESPONDING",), state_raw="DOWN+NOT_RESPONDING"
                ).sinfo_state == "down*"
    assert node("n1", "drained", state_raw="drained").sinfo_state == "drained"


def test_sshare_is_read_as_vpenso_reads_it() -> None:
    # what sshare -n -P -o account,fairshare printed on the local cluster (Fair Tree)
    text = "root|\n root|0.500000\n gpuwarden|\n  gpuwarden|0.250000\n"
    assert parse_sshare(text) == {"root": 0.5, "gpuwarden": 0.0}
    with pytest.raises(ParseError, match="FairShare 'lots' of account 'root'"):
        parse_sshare("root|lots\n")


def test_fairshare_travels_to_the_control_plane() -> None:
    snap = recorded_snapshot()
    back = decode_summary(encode_summary(snap))
    assert dict(back.fairshare) == {"root": 0.5, "gpuwarden": 0.25}
    assert series_of(exposed(back)) == series_of(exposed(snap))
    assert series_of(exposed(snap))[("slurm_account_fairshare",
                                     (("account", "root"),))] == 0.5


def test_the_slurm_interval_travels_and_is_checked() -> None:
    doc = encode_summary(recorded_snapshot())
    assert decode_summary({**doc, "interval_s": 15.0}).interval_s == 15.0
    assert decode_summary({k: v for k, v in doc.items() if k != "interval_s"}).interval_s is None
    for bad in (0, -1, 1e308, float("nan"), "15"):
        with pytest.raises(SnapshotRefused, match="interval_s"):
            decode_summary({**doc, "interval_s": bad})


# ---- against the real cluster, with vpenso's commands ------------------------------------

_GPU = re.compile(r"gpu:(\(null\)|[^:(]*):?([0-9]+)(\([^)]*\))?")


def _gpus(field: str) -> float:
    return sum(float(_GPU.search(part).group(2)) for part in field.split(",")  # type: ignore[union-attr]
               if "gpu:" in part)


def vpenso_series(adapter: SlurmAdapter) -> Series:
    """What vpenso's exporter (development branch) would export now: its commands, read as
    its Go code reads them. Per-user, per-account and per-partition series only where > 0,
    as it exports them."""
    def run(command: str, *args: str) -> list[str]:
        return adapter.run(command, list(args)).stdout.splitlines()

    out: Series = {}

    def put(name: str, value: float, **labels: str) -> None:
        out[(name, tuple(sorted(labels.items())))] = value

    queue: Counter[str] = Counter()
    for line in run("squeue", "-a", "-r", "-h", "-o %A,%T,%r", "--states=all"):
        parts = line.split(",")
        if len(parts) > 1:
            queue[parts[1]] += 1
            if parts[1] == "PENDING" and len(parts) > 2 and parts[2] == "Dependency":
                queue["pending_dependency"] += 1
    for state in ("PENDING", "RUNNING", "SUSPENDED", "CANCELLED", "COMPLETING", "COMPLETED",
                  "CONFIGURING", "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL"):
        put(f"slurm_queue_{state.lower()}", queue[state])
    put("slurm_queue_pending_dependency", queue["pending_dependency"])
    for owner, letter in (("account", "a"), ("user", "u")):
        rows: dict[str, list[float]] = {}
        for line in run("squeue", "-a", "-r", "-h", f"-o %A|%{letter}|%T|%C"):
            if "|" not in line:
                continue
            _, name, state, cpus = line.split("|")
            row = rows.setdefault(name, [0.0] * 5)
            state = state.lower()
            if state.startswith("pending"):
                row[0] += 1
                row[4] += float(cpus)
            elif state.startswith("running"):
                row[1] += 1
                row[3] += float(cpus)
            elif state.startswith("suspended"):
                row[2] += 1
        for name, row in rows.items():
            for key, value in zip(("jobs_pending", "jobs_running", "jobs_suspended",
                                   "cpus_running", "cpus_pending"), row, strict=True):
                if value > 0:
                    put(f"slurm_{owner}_{key}", value, **{owner: name})
    cpus = run("sinfo", "-h", "-o %C")[0].strip().split("/")
    for key, value in zip(("alloc", "idle", "other", "total"), cpus, strict=True):
        put(f"slurm_cpus_{key}", float(value))
    nodes: Counter[str] = Counter()
    for line in sorted(set(run("sinfo", "-h", "-o %D,%T"))):
        count, state = line.split(",")
        group = next((g for g in ("alloc", "comp", "down", "drain", "fail", "err", "idle",
                                  "maint", "mix", "res") if state.startswith(g)), None)
        if group:
            nodes["resv" if group == "res" else group] += float(count)
    for group in ("alloc", "comp", "down", "drain", "err", "fail", "idle", "maint", "mix",
                  "resv"):
        put(f"slurm_nodes_{group}", nodes[group])
    for line in sorted(set(run("sinfo", "-h", "-N", "-O",
                               "NodeList: ,AllocMem: ,Memory: ,CPUsState: ,StateLong:"))):
        if not line.strip():
            continue
        name, mem_alloc, mem_total, states, status = line.split()
        a, i, o, t = states.split("/")
        for key, value in (("cpu_alloc", a), ("cpu_idle", i), ("cpu_other", o),
                           ("cpu_total", t), ("mem_alloc", mem_alloc),
                           ("mem_total", mem_total)):
            put(f"slurm_node_{key}", float(value), node=name, status=status)
    pending = Counter(line for line in run("squeue", "-a", "-r", "-h", "-o%P",
                                           "--states=PENDING"))
    for line in run("sinfo", "-h", "-o%R,%C"):
        if "," not in line:
            continue
        part, states = line.split(",")
        for key, value in zip(("cpus_allocated", "cpus_idle", "cpus_other", "cpus_total"),
                              states.split("/"), strict=True):
            if float(value) > 0:
                put(f"slurm_partition_{key}", float(value), partition=part)
        if pending[part] > 0:
            put("slurm_partition_jobs_pending", pending[part], partition=part)
    # gpus.go: three sinfo calls, each line "<nodes> <gres> [<gres used>]"
    total = sum(float(f[0]) * _gpus(f[1]) for f in
                (line.split() for line in run("sinfo", "-a", "-h", "--Format=Nodes: ,Gres:"))
                if len(f) > 1 and "gpu:" in f[1])
    alloc = sum(float(f[0]) * _gpus(f[1]) for f in
                (line.split() for line in run("sinfo", "-a", "-h", "--Format=Nodes: ,GresUsed:",
                                              "--state=allocated"))
                if len(f) > 1 and "gpu:" in f[1])
    idle = sum(float(f[0]) * (_gpus(f[1]) - _gpus(f[2])) for f in
               (line.split() for line in run("sinfo", "-a", "-h",
                                             "--Format=Nodes: ,Gres: ,GresUsed:",
                                             "--state=idle,allocated"))
               if len(f) > 2 and "gpu:" in f[1])
    for key, value in (("alloc", alloc), ("idle", idle), ("other", total - alloc - idle),
                       ("total", total), ("utilization", alloc / total)):
        put(f"slurm_gpus_{key}", value)
    try:
        for line in run("sshare", "-n", "-P", "-o", "account,fairshare"):
            if not line.startswith("  ") and "|" in line:
                account, value = line.split("|")[:2]
                put("slurm_account_fairshare", float(value) if value else 0.0,
                    account=account.strip())
    except Exception:  # no slurmdbd: vpenso's sshare collector has nothing to say
        pass
    return out


@pytest.mark.slow
def test_equal_to_vpensos_exporter_on_the_live_cluster(
        slurm_cluster: LocalSlurmCluster, actions: SlurmActions, adapter: SlurmAdapter,
        wait: Wait, clean_queue: None) -> None:
    from gpuwarden.slurm import SubmitOptions

    def sbatch(*args: str) -> int:
        out = adapter.run("sbatch", ["--parsable", "-o", "/dev/null", *args], stdin=SLEEP)
        return int(out.stdout.strip().split(";")[0])

    account = ["--account=gpuwarden"] if slurm_cluster.has_accounting else []
    wide = sbatch("-N2", "--gres=gpu:2", "-w", "node1,node2", "-J", "wide", *account)
    actions.submit(SLEEP, SubmitOptions(name="one", gres="gpu:1", nodelist=("node3",),
                                        output="/dev/null"))
    wait("both jobs running", lambda: sum(j.is_running for j in adapter.jobs()) == 2)
    sbatch("--gres=gpu:2", "-J", "waits", "-n", "2", *account)
    sbatch("--gres=gpu:2", "-J", "waits2")
    sbatch(f"--dependency=afterok:{wide}", "-J", "after", "-n", "2")
    # node3 drains with its job on it: vpenso's sinfo --state=allocated still lists it
    adapter.run("scontrol", ["update", "nodename=node3", "state=drain", "reason=parity"])
    collector = SlurmCollector(adapter, interval=1.0)

    def agreed() -> tuple[Series, Series] | None:
        ours = series_of(exposed(collector.collect_once()))
        theirs = vpenso_series(adapter)
        return (ours, theirs) if all(ours.get(k) == v for k, v in theirs.items()) else None

    found = None
    try:
        found = wait("gpuwarden's series to equal vpenso's", agreed, timeout=30)
    finally:
        if found is None:  # say which series differ
            ours, theirs = series_of(exposed(collector.collect_once())), vpenso_series(adapter)
            print({k: (ours.get(k), v) for k, v in theirs.items() if ours.get(k) != v})
    ours, theirs = found  # type: ignore[misc]
    names = {name for name, _ in theirs}
    assert names <= VPENSO_NAMES and len(theirs) >= 50  # every series vpenso exports here
    # the cases this scenario is for were all there
    assert theirs[("slurm_queue_pending_dependency", ())] == 1
    assert theirs[("slurm_queue_pending", ())] == 3
    assert theirs[("slurm_gpus_idle", ())] == 1  # node3's free GPU, draining
    assert ours[("slurm_gpus_free", ())] == 0
    assert any(name == "slurm_node_cpu_alloc" and ("status", "draining") in labels
               for name, labels in theirs)
    print(f"{len(theirs)} series equal; accounting: {slurm_cluster.has_accounting}")
    if slurm_cluster.has_accounting:
        assert ("slurm_account_jobs_running", (("account", "gpuwarden"),)) in theirs
        assert ("slurm_account_fairshare", (("account", "gpuwarden"),)) in theirs
        assert ("slurm_user_cpus_pending", (("user", "root"),)) in theirs
    assert promtool_findings(exposed(collector.latest()))  # only vpenso's own names flagged
    assert {n for n, _ in promtool_findings(exposed(collector.latest()))} <= VPENSO_NAMES
