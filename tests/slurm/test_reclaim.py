"""Reclaim on the real local cluster (3 nodes x 2 GPUs), with compressed times: real node
daemons whose simulated GPUs follow Slurm (a job's ``gpuwarden:profile=`` comment picks its
load), a real ``gpuwarden serve`` running the ladder, real Apprise to local receivers.

* auto: an idle job gets exactly two warnings, then is cancelled (Slurm's own squeue/sacct
  says CANCELLED) and its owner's receiver got three messages; a job that becomes busy
  between the warnings is not cancelled and gets no second message; a busy job, a job
  opted out by its comment and an interactive one under the limit are untouched; with the
  node daemon of an idle job's node killed, nothing happens to that job.  The $ saved
  equals the cancelled job's $/hr over the time it would still have run.
* dry-run and approve change nothing until an operator approves; an exempt user's idle
  job is never proposed.
* ``busy_fraction``, on a 16-GPU node of its own: a job with 7 of its 8 GPUs busy is left
  alone; one with 1 of 8 busy is cancelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SubmitOptions
from tests.conftest import Daemon, Serve, start_daemon, start_serve, stop
from tests.e2e.conftest import _admin_token
from tests.slurm.conftest import _empty_queue, wait_until
from tests.watchdog.test_notify import Receiver as NotifyReceiver

pytestmark = pytest.mark.slow

GPU_COST = 2.0  # $/hr of one GPU: each node costs 4.0 with 2 GPUs
LADDER = "warn_after: [4s, 8s], act_after: 12s, grace: 1s, idle_below: 5"
QUICK = "warn_after: [2s, 4s], act_after: 6s, grace: 1s, idle_below: 5"  # no job flips there
LIMIT_MIN = 30  # every job's time limit: what a cancelled one "would still have run"


class Receiver(NotifyReceiver):
    """A local HTTP endpoint Apprise's json:// posts to (the watchdog tests' one)."""

    @property
    def messages(self) -> list[dict]:
        return self.received

    def about(self, job: int) -> list[str]:
        return [m["title"] for m in self.received if f"job {job} " in m["title"]]


def _daemon(cluster: LocalSlurmCluster, node: str, *extra: str) -> Daemon:
    return start_daemon(["--gpu-backend", "sim", "--sim-gpus", "2", "--interval", "1",
                         "--slurm", "--slurm-node", node, "--hostname", node,
                         "--slurm-interval", "1", "--no-auth", *extra], env=cluster.env())


def _serve(tmp: Path, name: str, daemons: list[Daemon], jobs: str, owner: Receiver,
           admins: Receiver, ladder: str = LADDER) -> Serve:
    config = tmp / f"{name}.yaml"
    nodes = "".join(
        f"  - {{name: node{i + 1}, url: '{d.url}', cost_per_hour: {2 * GPU_COST}"
        f"{', role: controller' if i == 0 else ''}}}\n" for i, d in enumerate(daemons))
    config.write_text(
        f"cluster: reclaim-{name}\n"
        "scrape: {interval: 1, timeout: 2}\n"
        f"watchdog: {{interval: 1, notify: ['{admins.url}']}}\n"
        f"owners: {{users: {{root: '{owner.url}'}}}}\n"
        f"reclaim: {{interval: 1s, jobs: {{{ladder}, {jobs}}}}}\n"
        f"nodes:\n{nodes}")
    return _admin_token(start_serve(config, tmp / f"home-{name}"))


def _api(serve: Serve, method: str, path: str) -> httpx.Response:
    return httpx.request(method, serve.url + path, timeout=30,
                         headers={"Authorization": f"Bearer {serve.admin}"})


def _candidate(serve: Serve, job: int) -> dict | None:
    plan = _api(serve, "GET", "/api/v1/reclaim").json()
    return next((c for c in plan["candidates"] if c["key"] == str(job)), None)


def _events(serve: Serve, job: int) -> list[str]:
    r = _api(serve, "GET", f"/api/v1/reclaim/history?key={job}")
    return [e["event"] for e in reversed(r.json())]


def _busy_gpus(node_url: str, job: int) -> int:
    """How many of ``job``'s GPUs the node daemon's latest poll shows busy (>= 5 %)."""
    gpus = httpx.get(node_url + "/api/v1/snapshot", timeout=10).json()["gpus"]
    return sum(1 for g in gpus if any(j["job_id"] == str(job) for j in g["jobs"])
               and g["fields"].get("DCGM_FI_DEV_GPU_UTIL", 0) >= 5)


def _squeue(cluster: LocalSlurmCluster, job: int) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job), "-o", "%T"],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, **cluster.env()})
    return out.stdout.strip()


@pytest.fixture(scope="module")
def daemons(slurm_cluster: LocalSlurmCluster) -> Iterator[list[Daemon]]:
    _empty_queue(slurm_cluster, slurm_cluster.adapter())
    started = [_daemon(slurm_cluster, "node1", "--slurm-controller"),
               _daemon(slurm_cluster, "node2"), _daemon(slurm_cluster, "node3")]
    try:
        yield started
    finally:
        for d in started:
            stop(d.proc)
        _empty_queue(slurm_cluster, slurm_cluster.adapter())


def test_an_idle_job_is_warned_twice_then_cancelled_and_the_rest_is_left_alone(
        slurm_cluster: LocalSlurmCluster, daemons: list[Daemon], tmp_path: Path) -> None:
    actions = SlurmActions(slurm_cluster.adapter())
    owner, admins = Receiver(), Receiver()

    def submit(name: str, profile: str, node: str, comment: str = "") -> int:
        return actions.submit("#!/bin/sh\nsleep 600\n", SubmitOptions(
            name=name, gres="gpu:1", nodelist=(node,), time=str(LIMIT_MIN),
            comment=f"gpuwarden:profile={profile} {comment}".strip()))

    idle = submit("idle-train", "idle", "node1")
    flip = submit("flip", "idle", "node1")
    busy = submit("busy", "train", "node2")
    kept = submit("kept", "idle", "node2", "gpuwarden:keep")
    interactive = submit("interactive", "idle", "node3")
    lost = submit("lost-node", "idle", "node3")
    wait_until("six jobs running", lambda: all(_squeue(slurm_cluster, j) == "RUNNING"
                                               for j in (idle, flip, busy, kept, interactive,
                                                         lost)), timeout=30)
    serve = _serve(tmp_path, "auto", daemons, "mode: auto, action: cancel", owner, admins)
    try:
        # node3's daemon dies before anything is judged: its jobs have no data from now on
        wait_until("the ladder watching", lambda: _candidate(serve, lost), timeout=20)
        stop(daemons[2].proc)
        try:
            wait_until("flip warned once", lambda: "warned" in _events(serve, flip), timeout=20)
        except BaseException:
            print(json.dumps(_api(serve, "GET", "/api/v1/reclaim").json(), indent=1))
            print(_api(serve, "GET", "/api/v1/reclaim/history").json())
            print("\n".join(serve.lines[-30:]))
            raise
        actions.adapter.run("scontrol", ["update", f"JobId={flip}",
                                         "Comment=gpuwarden:profile=train"])
        wait_until("the idle job cancelled by Slurm",
                   lambda: _squeue(slurm_cluster, idle) in ("CANCELLED", ""), timeout=40)
        assert _events(serve, idle) == ["warned", "warned", "acting", "acted"]
        wait_until("three messages to the owner", lambda: len(owner.about(idle)) == 3,
                   timeout=10)
        titles = owner.about(idle)
        assert "cancel at" in titles[0] and "cancel at" in titles[1], titles
        assert "cancelled" in titles[2], titles
        body = next(m["message"] for m in owner.messages if f"job {idle} " in m["title"])
        assert "gpuwarden reclaim exempt" in body and "$" in body, body
        assert admins.about(idle) == titles  # every step goes to the admins too
        # sacct agrees once the accounting record lands
        out = actions.adapter.run("sacct", ["-j", str(idle), "-X", "-n", "--parsable2",
                                            "-o", "State"]).stdout
        assert out.split("|")[0].strip().startswith("CANCELLED"), out
        # the busy job, the opted-out one, the interactive one, the flipped one and the one
        # without data all run on, untouched
        for job in (flip, busy, kept, interactive, lost):
            assert _squeue(slurm_cluster, job) == "RUNNING", job
        assert "acted" not in _events(serve, flip)
        assert len(owner.about(flip)) == 1, owner.about(flip)
        for job in (busy, kept, interactive, lost):
            assert "warned" not in _events(serve, job), (job, _events(serve, job))
            assert not owner.about(job)
        assert _candidate(serve, kept)["status"] == "exempt"
        assert "interactive" in _candidate(serve, interactive)["why"]
        assert _candidate(serve, lost)["status"] == "unknown"
        # $ saved: the cancelled GPU's $/hr until its time limit would have ended it
        plan = _api(serve, "GET", "/api/v1/reclaim").json()
        acted = next(e for e in _api(serve, "GET", f"/api/v1/reclaim/history?key={idle}").json()
                     if e["event"] == "acted")
        assert acted["rate_per_hour"] == pytest.approx(GPU_COST)
        start = acted["detail"]["start_time"]
        assert acted["saved_until"] == pytest.approx(start + LIMIT_MIN * 60, abs=1)
        elapsed = time.time() - acted["saved_from"]
        assert plan["saved_today"] == pytest.approx(GPU_COST * elapsed / 3600, abs=0.01)
        # the ops agent explains it from what reclaim recorded, once the control plane's
        # Slurm snapshot has the job ended too (a loaded machine keeps it COMPLETING a while)
        wait_until("the control plane to see the job ended", lambda: _api(
            serve, "GET", f"/api/v1/slurm/jobs/{idle}").json()["finished"], timeout=60)
        r = httpx.post(serve.url + "/api/v1/agent/runs", timeout=60,
                       json={"prompt": f"why was job {idle} cancelled?"},
                       headers={"Authorization": f"Bearer {serve.admin}"})
        answer = r.json()["answer"]
        assert "cancelled by gpuwarden reclaim (auto mode)" in answer, answer
        assert "warning 2 of 2" in answer and "$2.00/hr" in answer, answer
        # and the CLI shows the plan: the flipped job busy, the one without data paused
        cli = subprocess.run(
            [sys.executable, "-m", "gpuwarden", "reclaim", "plan", "--url", serve.url],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "GPUWARDEN_TOKEN": serve.admin, "COLUMNS": "200"})
        assert cli.returncode == 0, cli.stderr
        assert "mode auto" in cli.stdout and "paused: no fresh data" in cli.stdout, cli.stdout
        audit = _api(serve, "GET", "/api/v1/audit").json()
        assert any(a["actor"] == "reclaim" and a["action"] == "cancel_job"
                   and a["target"] == f"job {idle}" for a in audit), audit[:5]
        assert not [line for line in serve.lines if "cycle failed" in line], serve.lines
    finally:
        stop(serve.proc)
        daemons[2] = _daemon(slurm_cluster, "node3")
        for job in (flip, busy, kept, interactive, lost):
            actions.adapter.run("scancel", [str(job)])


def test_dry_run_and_approve_change_nothing_until_approved(
        slurm_cluster: LocalSlurmCluster, daemons: list[Daemon], tmp_path: Path) -> None:
    actions = SlurmActions(slurm_cluster.adapter())
    owner, admins = Receiver(), Receiver()
    jobs = {mode: actions.submit("#!/bin/sh\nsleep 600\n", SubmitOptions(
        name=f"idle-{mode}", gres="gpu:1", time=str(LIMIT_MIN),
        comment="gpuwarden:profile=idle")) for mode in ("dry-run", "approve")}
    # an exempt user's idle job (run as `nobody`, which every system has, registered with
    # the cluster's account as the demo's users are): never proposed
    actions.adapter.run("sacctmgr", ["-i", "add", "user", "nobody",
                                     f"account={slurm_cluster.account}"])
    theirs = actions.submit("#!/bin/sh\nsleep 600\n", SubmitOptions(
        name="idle-theirs", gres="gpu:1", time=str(LIMIT_MIN), user="nobody", workdir="/tmp",
        output="/dev/null", comment="gpuwarden:profile=idle"))
    wait_until("all running", lambda: all(_squeue(slurm_cluster, j) == "RUNNING"
                                          for j in (*jobs.values(), theirs)), timeout=30)
    other = {"dry-run": "approve", "approve": "dry-run"}
    serves = {mode: _serve(tmp_path, mode, daemons,
                           f"mode: {mode}, action: cancel, exempt: {{names: [idle-{other[mode]}],"
                           " users: [nobody]}", owner, admins, QUICK) for mode in jobs}
    try:
        dry, appr = serves["dry-run"], serves["approve"]
        wait_until("dry-run: would act", lambda: "would_act" in _events(dry, jobs["dry-run"]),
                   timeout=40)
        assert _events(dry, jobs["dry-run"]) == ["would_warn", "would_warn", "would_act"]
        assert not owner.about(jobs["dry-run"])  # a dry run tells no one
        wait_until("approve: proposed", lambda: "proposed" in _events(appr, jobs["approve"]),
                   timeout=40)
        assert _squeue(slurm_cluster, jobs["dry-run"]) == "RUNNING"
        assert _squeue(slurm_cluster, jobs["approve"]) == "RUNNING"
        pending = [a for a in _api(appr, "GET", "/api/v1/actions").json()
                   if a["state"] == "awaiting_approval"]
        assert [a["target"] for a in pending] == [str(jobs["approve"])], pending
        assert len(owner.about(jobs["approve"])) == 2  # the two warnings
        mine = _candidate(appr, theirs)  # idle as long, but its user is exempt
        assert mine["status"] == "exempt" and mine["why"] == "user nobody is exempt", mine
        assert _events(appr, theirs) == [] and not owner.about(theirs)
        r = _api(appr, "POST", f"/api/v1/actions/{pending[0]['id']}/approve")
        assert r.status_code == 200, r.text
        wait_until("approved job cancelled",
                   lambda: _squeue(slurm_cluster, jobs["approve"]) in ("CANCELLED", ""),
                   timeout=20)
        assert _squeue(slurm_cluster, jobs["dry-run"]) == "RUNNING"
        # the kill switch, from the CLI: the ladder stands still and says who stopped it
        cli = subprocess.run(
            [sys.executable, "-m", "gpuwarden", "reclaim", "pause", "--url", dry.url],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "GPUWARDEN_TOKEN": dry.admin})
        assert cli.returncode == 0, cli.stderr
        plan = wait_until("paused", lambda: (p := _api(dry, "GET", "/api/v1/reclaim").json())
                          ["paused"] and p, timeout=10)
        assert not plan["enabled"] and plan["paused"].startswith("paused by"), plan
    finally:
        for s in serves.values():
            stop(s.proc)
        for job in (*jobs.values(), theirs):
            actions.adapter.run("scancel", [str(job)])


@pytest.fixture(scope="module")
def wide_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurmCluster]:
    """A cluster of its own: one node with 16 GPUs, room for two 8-GPU jobs (no accounting:
    squeue shows a cancelled job for MinJobAge, all this test reads)."""
    cluster = LocalSlurmCluster(tmp_path_factory.mktemp("wide") / "cluster", nodes=1,
                                gpus_per_node=16, node_prefix="wide", gpu_type="a100",
                                cluster_name="wide", accounting=False, slurmd_timeout=5)
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def test_busy_fraction_keeps_a_job_with_seven_of_eight_gpus_busy(
        wide_node: LocalSlurmCluster, tmp_path: Path) -> None:
    """``busy_fraction: 0.8``, mode auto: the job with 7 of its 8 GPUs busy runs on,
    untouched, while the one with 1 of 8 busy (kept by the default rule, where any busy GPU
    keeps a job) is warned twice and cancelled."""
    actions = SlurmActions(wide_node.adapter())
    daemon = start_daemon(["--gpu-backend", "sim", "--sim-gpus", "16", "--interval", "1",
                           "--slurm", "--slurm-controller", "--slurm-node", "wide1",
                           "--hostname", "wide1", "--slurm-interval", "1", "--no-auth"],
                          env=wide_node.env())
    owner, admins = Receiver(), Receiver()

    def submit(name: str, profile: str) -> int:
        return actions.submit("#!/bin/sh\nsleep 600\n", SubmitOptions(
            name=name, gres="gpu:8", time=str(LIMIT_MIN), output="/dev/null",
            comment=f"gpuwarden:profile={profile}"))

    mostly_busy, mostly_idle = submit("seven-busy", "train*7+idle"), submit("one-busy",
                                                                           "train+idle")
    config = tmp_path / "wide.yaml"
    config.write_text(
        "cluster: reclaim-wide\nscrape: {interval: 1, timeout: 2}\n"
        f"watchdog: {{interval: 1, notify: ['{admins.url}']}}\n"
        f"owners: {{users: {{root: '{owner.url}'}}}}\n"
        f"reclaim: {{interval: 1s, jobs: {{{QUICK}, busy_fraction: 0.8, mode: auto, "
        "action: cancel}}\n"
        f"nodes:\n  - {{name: wide1, url: '{daemon.url}', cost_per_hour: {16 * GPU_COST}, "
        "role: controller}\n")
    serve = None
    try:
        wait_until("both running", lambda: all(_squeue(wide_node, j) == "RUNNING"
                                               for j in (mostly_busy, mostly_idle)), timeout=30)
        # and the node's simulated GPUs following them (its Slurm cycle saw the jobs): on a
        # loaded machine that lags squeue, and a job looking idle for a moment would start
        # a streak (grace is 1 s here)
        wait_until("the GPUs doing what the jobs' comments ask", lambda: _busy_gpus(
            daemon.url, mostly_busy) == 7 and _busy_gpus(daemon.url, mostly_idle) == 1,
            timeout=30, interval=0.5)
        serve = _admin_token(start_serve(config, tmp_path / "home-wide"))
        wait_until("the 1-of-8 job cancelled",
                   lambda: _squeue(wide_node, mostly_idle) in ("CANCELLED", ""), timeout=40)
        assert _events(serve, mostly_idle) == ["warned", "warned", "acting", "acted"]
        assert _squeue(wide_node, mostly_busy) == "RUNNING"
        kept = _candidate(serve, mostly_busy)
        assert kept is not None and kept["status"] == "busy", kept
        assert _events(serve, mostly_busy) == [] and not owner.about(mostly_busy)
        # the simulated GPUs did what the comment asked: 7 busy, 1 idle
        gpus = [g for g in httpx.get(serve.url + "/api/v1/gpus", timeout=10, headers={
            "Authorization": f"Bearer {serve.admin}"}).json()
            if any(j["job_id"] == str(mostly_busy) for j in g["jobs"])]
        assert sorted(g["utilization"] >= 5 for g in gpus) == [False] + [True] * 7, gpus
    finally:
        if serve is not None:
            stop(serve.proc)
        stop(daemon.proc)
        actions.adapter.run("scancel", [str(mostly_busy), str(mostly_idle)])
