"""Finished jobs on the real local cluster: with slurmdbd on its private MariaDB, jobs that
complete, fail, die by a signal, hit their time limit or are cancelled show with Slurm's
own state, exit code and times (as ``sacct -j`` prints them) in the collector's snapshot
and through the node daemon's /api/v1/slurm; without accounting, from ``squeue
--states=all`` with ``source: squeue``. The job that hits its time limit runs on a cluster
of its own, submitted as the session begins (``time_limited_job``, tests/slurm/conftest.py):
Slurm takes a minute or more to end it."""

from __future__ import annotations

import pwd
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from gpuwarden.slurm import (
    AccountingDisabled,
    LocalSlurmCluster,
    SlurmActions,
    SlurmAdapter,
    SlurmCollector,
    SubmitOptions,
)
from gpuwarden.slurm.parsers.sacct import gpus_in_alloc_tres, parse_exit_code, split_state
from tests.slurm.conftest import TIME_LIMIT_MIN, TimeLimitedJob

pytestmark = pytest.mark.slow
Wait = Callable[..., object]
SACCT_FIELDS = ("JobIDRaw", "User", "Account", "State", "ExitCode", "Start", "End",
                "ElapsedRaw", "NodeList", "AllocTRES")
SLEEP = "#!/bin/sh\nsleep 300\n"


def sacct_says(adapter: SlurmAdapter, job_id: int) -> dict[str, str] | None:
    """``sacct -j ID`` as a user would run it (epoch times: the adapter's
    SLURM_TIME_FORMAT), once the job has ended; else None."""
    out = adapter.run("sacct", ["-j", str(job_id), "-X", "-n", "--parsable2",
                                "-o", ",".join(SACCT_FIELDS)]).stdout
    rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True))
            for line in out.splitlines() if line.strip()]
    if not rows or rows[0]["End"] in ("", "Unknown"):
        return None
    return rows[0]


def expected(row: dict[str, str]) -> dict[str, object]:
    """What the snapshot must say, from sacct's own words."""
    code, sig = parse_exit_code(row["ExitCode"])
    return {"state": split_state(row["State"]), "exit_code": code, "signal": sig,
            "start_time": float(row["Start"]), "end_time": float(row["End"]),
            "elapsed_s": int(row["ElapsedRaw"]), "user": row["User"],
            "account": row["Account"],
            "nodes": [] if row["NodeList"] == "None assigned" else None,
            "alloc_gpus": gpus_in_alloc_tres(row["AllocTRES"]), "source": "sacct"}


def matches(job: dict[str, object], want: dict[str, object]) -> bool:
    return all(job.get(k) == v for k, v in want.items() if v is not None)


def as_dict(job: object) -> dict[str, object]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
            ((f, getattr(job, f)) for f in ("state", "exit_code", "signal", "start_time",
                                             "end_time", "elapsed_s", "user", "account",
                                             "nodes", "alloc_gpus", "source"))}


def sacct_counts(adapter: SlurmAdapter) -> dict[str, int]:
    """Finished jobs of the last 24 h by state, as ``sacct`` counts them."""
    out = adapter.run("sacct", ["-X", "-a", "-n", "--parsable2", "-S", "now-24hours",
                                "-E", "now", "-s", "CD,F,CA,TO", "-o", "State"]).stdout
    states = [split_state(line) for line in out.splitlines() if line.strip()]
    return {s.lower(): states.count(s) for s in ("COMPLETED", "FAILED", "CANCELLED")}


def test_finished_jobs_match_sacct(slurm_cluster: LocalSlurmCluster, adapter: SlurmAdapter,
                                   actions: SlurmActions, daemon_factory, serve_factory,
                                   wait: Wait, clean_queue: None, tmp_path: Path) -> None:
    if not slurm_cluster.has_accounting:
        pytest.skip("no accounting: apt-get install -y mariadb-server slurmdbd")
    out = str(tmp_path / "%j.out")
    jobs = {
        "ok": actions.submit("#!/bin/sh\ntrue\n",
                             SubmitOptions(name="ok", gres="gpu:1", output=out)),
        "exit3": actions.submit("#!/bin/sh\nexit 3\n", SubmitOptions(name="exit3", output=out)),
        "killed": actions.submit("#!/bin/sh\nkill -9 $$\n",
                                 SubmitOptions(name="killed", output=out)),
        "cancelled": actions.submit(SLEEP, SubmitOptions(name="cancelled", output=out)),
    }
    demo_user = _user("alice")
    if demo_user:  # the demo's users are registered too: their jobs are accounted
        jobs["alice"] = actions.submit("#!/bin/sh\nexit 2\n",
                                       SubmitOptions(name="alice", user=demo_user,
                                                     workdir="/tmp", output="/dev/null"))
    wait("the sleeper running", lambda: any(j.job_id == jobs["cancelled"] and j.is_running
                                            for j in adapter.jobs()))
    actions.cancel(jobs["cancelled"])
    rows = wait("sacct has every quick job", lambda: (
        r if all((r := {k: sacct_says(adapter, v) for k, v in jobs.items()}).values())
        else None), timeout=60)
    assert isinstance(rows, dict)
    want = {name: expected(row) for name, row in rows.items()}
    assert [want[n]["state"] for n in ("ok", "exit3", "killed", "cancelled")] == [
        "COMPLETED", "FAILED", "FAILED", "CANCELLED"]
    assert (want["exit3"]["exit_code"], want["killed"]["signal"]) == (3, 9)
    assert want["ok"]["alloc_gpus"] == 1
    if demo_user:
        assert (want["alice"]["user"], want["alice"]["account"]) == ("alice", "gpuwarden")

    collector = SlurmCollector(adapter, interval=1, accounting_interval=1)
    snap = collector.collect_once()
    assert snap.accounting and snap.finished_source == "sacct" and snap.up, snap.errors
    for name, job_id in jobs.items():
        job = snap.job(job_id)
        assert job is not None and matches(as_dict(job), want[name]), (name, job, want[name])
    assert snap.job(jobs["ok"]).nodes and snap.job(jobs["ok"]).is_finished  # type: ignore[union-attr]

    ctl = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "2", "--interval", "0.5",
                          "--slurm", "--slurm-controller", "--slurm-node", "node1",
                          "--hostname", "node1", "--slurm-interval", "1", "--no-auth"],
                         env=slurm_cluster.env())

    def api(path: str) -> httpx.Response:
        return httpx.get(ctl.url + path, timeout=10)

    for name, job_id in jobs.items():
        got = wait(f"{name} from sacct through the API", lambda j=job_id: (
            (r := api(f"/api/v1/slurm/jobs/{j}")).status_code == 200
            and r.json()["source"] == "sacct" and r.json()))
        assert isinstance(got, dict) and matches(got, want[name]), (name, got, want[name])
        assert got["finished"] and got["nodes"] == (
            [] if want[name]["nodes"] == [] else got["nodes"])
    failed = {j["job_id"] for j in api("/api/v1/slurm/jobs?state=failed").json()}
    assert {jobs["exit3"], jobs["killed"]} <= failed and jobs["ok"] not in failed
    summary = api("/api/v1/slurm").json()
    assert summary["accounting"] == {"available": True, "finished_source": "sacct",
                                     "window_s": 86400.0}
    assert summary["queue"]["failed"] >= 2 and summary["queue"]["completed"] >= 1
    assert summary["queue"]["cancelled"] >= 1
    missing = api("/api/v1/slurm/jobs/999999")
    assert missing.status_code == 404 and "accounting of the last 24 h" in missing.json()[
        "detail"]

    # the control plane: the Overview's counts are sacct's, a finished job's page too
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "finished", "scrape": {"interval": 0.5, "timeout": 2.0},
        "nodes": [{"name": "node1", "url": ctl.url, "role": "controller"}]}))
    serve = serve_factory(config, tmp_path / "home")

    def overview_counts() -> dict[str, int] | None:
        answer = serve.get("/api/v1/overview")
        queue = answer.json().get("slurm") if answer.status_code == 200 else None
        if not queue:
            return None
        counts = sacct_counts(adapter)
        mine = {k: queue[k] for k in counts}
        return counts if mine == counts else None

    counts = serve.wait(overview_counts, timeout=30, what="the Overview's counts = sacct's")
    assert counts["failed"] >= 2 and counts["completed"] >= 1
    page = serve.wait(lambda: (r := serve.get(f"/api/v1/slurm/jobs/{jobs['exit3']}"))
                      .status_code == 200 and r.json(), what="a failed job's page")
    assert matches(page, want["exit3"]) and page["finished"], page
    summary_view = serve.get("/api/v1/slurm").json()
    assert summary_view["accounting"] and summary_view["finished_source"] == "sacct"
    gone = serve.get("/api/v1/slurm/jobs/999999")
    assert gone.status_code == 404 and "accounting" in gone.text


def test_without_accounting_finished_jobs_come_from_squeue(tmp_path: Path,
                                                          wait: Wait) -> None:
    cluster = LocalSlurmCluster(tmp_path / "noacct", nodes=1, gpus_per_node=1,
                                accounting=False, slurmd_timeout=5)
    try:
        cluster.up()
        assert not cluster.has_accounting
        adapter = cluster.adapter()
        actions = SlurmActions(adapter)
        ok = actions.submit("#!/bin/sh\ntrue\n", SubmitOptions(gres="gpu:1",
                                                                output="/dev/null"))
        failed = actions.submit("#!/bin/sh\nexit 4\n", SubmitOptions(output="/dev/null"))
        with pytest.raises(AccountingDisabled):
            adapter.finished_jobs(0)
        collector = SlurmCollector(adapter, interval=1)

        def both_done():
            snap = collector.collect_once()
            jobs = [snap.job(ok), snap.job(failed)]
            return snap if all(j is not None and j.is_finished for j in jobs) else None

        snap = wait("both jobs finished in squeue", both_done)
        assert not snap.accounting and snap.finished_source == "squeue" and snap.up  # type: ignore[union-attr]
        done, bad = snap.job(ok), snap.job(failed)  # type: ignore[union-attr]
        assert (done.state, done.exit_code, done.signal, done.source) == (
            "COMPLETED", 0, 0, "squeue")
        assert (bad.state, bad.exit_code, bad.signal, bad.source) == ("FAILED", 4, 0, "squeue")
        assert bad.end_time and bad.start_time and bad.end_time >= bad.start_time
        assert bad.nodes == ("node1",) and "sacct" not in snap.errors  # type: ignore[union-attr]
        # scontrol as a user would ask it agrees
        shown = adapter.run("scontrol", ["-o", "show", "job", str(failed)]).stdout
        assert "ExitCode=4:0" in shown and "JobState=FAILED" in shown
    finally:
        cluster.down()
    assert cluster.leftover_pids() == []


def test_a_time_limit_ends_in_timeout(time_limited_job: TimeLimitedJob, daemon_factory,
                                      wait: Wait) -> None:
    """TIMEOUT, as sacct says, in the collector and through the API."""
    cluster, slow = time_limited_job.cluster, time_limited_job.job_id
    assert slow is not None
    adapter = cluster.adapter()
    row = wait("the slow job timed out", lambda: sacct_says(adapter, slow), timeout=150)
    assert isinstance(row, dict) and split_state(row["State"]) == "TIMEOUT", row
    assert int(row["ElapsedRaw"]) >= 60 * TIME_LIMIT_MIN, row  # ended by its limit
    collector = SlurmCollector(adapter, interval=1, accounting_interval=1)
    job = wait("TIMEOUT in the snapshot", lambda: (
        (j := collector.collect_once().job(slow)) is not None and j.source == "sacct" and j))
    assert matches(as_dict(job), expected(row)) and job.time_limit_s == 60  # type: ignore[union-attr]
    ctl = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "1", "--interval", "0.5",
                          "--slurm", "--slurm-controller", "--slurm-node", "node1",
                          "--hostname", "node1", "--slurm-interval", "1", "--no-auth"],
                         env=cluster.env())
    got = wait("TIMEOUT through the API", lambda: (
        (r := httpx.get(f"{ctl.url}/api/v1/slurm/jobs/{slow}", timeout=10)).status_code == 200
        and r.json().get("source") == "sacct" and r.json()))
    assert isinstance(got, dict) and matches(got, expected(row)), (got, row)
    assert got["finished"]


def _user(name: str) -> str | None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return None
    return name
