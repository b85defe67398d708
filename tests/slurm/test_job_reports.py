"""The per-job report on the real local cluster (the session's ``slurm_cluster``): a GPU
job that completes has a report whose GPU-hours are GPUs x Slurm's elapsed (sacct's, with
accounting) within one scrape interval and whose $ is the cost model's; its summary is
stored when it ends, survives a restart of the control plane (a fresh app on the same
state database) and still answers once Slurm and the metrics store have forgotten the job;
its end-of-job message reaches a real local receiver through real Apprise exactly once,
naming the job and its owner; ``gpuwarden jobstats`` and ``gpuwarden report`` show it."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gpuwarden.config import ServeConfig
from gpuwarden.slurm import (
    LocalSlurmCluster,
    SlurmActions,
    SlurmAdapter,
    SubmitOptions,
    ValidationError,
)
from tests.conftest import free_port
from tests.slurm.test_finished_jobs import sacct_says
from tests.slurm.test_node_daemon_slurm import slurm_daemon
from tests.watchdog.test_notify import Receiver

pytestmark = pytest.mark.slow
INTERVAL = 0.5  # scrape interval, s
REPORTS_INTERVAL = 1.0  # the reports' look (their least: reports.interval >= 1 s)
NODE_COST = 6.0  # $/hr of node1: 2 GPUs, $3 each


@dataclass
class Plane:
    cp: Any
    url: str
    token: str

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"},
                         timeout=30, **kw)


@contextlib.contextmanager
def control_plane(home: Path, config: ServeConfig) -> Iterator[Plane]:
    """``serve`` in this process: scraper, watchdog, job reports and API on loopback."""
    import uvicorn

    from gpuwarden.api.app import create_app
    from gpuwarden.server import attach_background, open_control_plane

    cp = open_control_plane(config, home)
    attach_background(cp)
    server = uvicorn.Server(uvicorn.Config(create_app(cp), host="127.0.0.1", port=free_port(),
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="reports-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "serve did not start"
            time.sleep(0.05)
        yield Plane(cp, f"http://127.0.0.1:{server.config.port}",
                    cp.tokens.create("admin", "reports-test"))
    finally:
        server.should_exit = True
        thread.join(15)
        cp.store.close()
        cp.db.close()


def config(receiver: Receiver, ctl_url: str | None) -> ServeConfig:
    nodes = [{"name": "node1", "url": ctl_url, "role": "controller", "cost_per_hour": NODE_COST}]
    return ServeConfig.model_validate({
        "cluster": "reports", "scrape": {"interval": INTERVAL, "timeout": 2.0},
        "watchdog": {"interval": INTERVAL}, "nodes": nodes if ctl_url else [],
        "owners": {"users": {"root": receiver.url}},
        "reports": {"end_of_job_message": True, "interval": REPORTS_INTERVAL,
                    "min_runtime": 1}})


def quietly(check: Callable[[], Any]) -> Callable[[], Any]:
    """``check`` for ``wait``, None while Slurm's data is not there yet."""
    from gpuwarden.errors import GpuwardenError

    def run() -> Any:
        try:
            return check()
        except GpuwardenError:
            return None

    return run


def mine(receiver: Receiver, job_id: int) -> list[dict[str, Any]]:
    """The messages about ``job_id``."""
    return [m for m in receiver.received if f"job {job_id} (" in m["title"]]


def cli(plane: Plane, *args: str) -> str:
    from gpuwarden.cli import app

    result = CliRunner().invoke(app, list(args), env={
        "GPUWARDEN_URL": plane.url, "GPUWARDEN_TOKEN": plane.token, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_finished_gpu_jobs_report_is_stored_once_and_sent_once(
        slurm_cluster: LocalSlurmCluster, adapter: SlurmAdapter, actions: SlurmActions,
        daemon_factory, wait, clean_queue: None, tmp_path: Path) -> None:
    from gpuwarden.metrics import open_store
    from gpuwarden.services import slurm

    receiver = Receiver()
    ctl = slurm_daemon(daemon_factory, slurm_cluster, "node1", "--slurm-controller")
    home = tmp_path / "home"
    try:
        with control_plane(home, config(receiver, ctl.url)) as plane:
            wait("Slurm through the control plane", quietly(lambda: slurm.nodes(plane.cp)),
                 timeout=30)
            job_id = actions.submit("#!/bin/sh\nsleep 6\n", SubmitOptions(
                name="report-me", gres="gpu:2", nodelist=("node1",), output="/dev/null",
                comment="gpuwarden:profile=train"))
            live = wait("its live report", lambda: (
                (r := plane.get(f"/api/v1/slurm/jobs/{job_id}/report")).status_code == 200
                and r.json()["per_gpu"] and r.json()))
            assert isinstance(live, dict)
            assert live["source"] == "live" and live["end_time"] is None and live["gpus"] == 2
            stored = wait("its stored summary", lambda: (
                (r := plane.get(f"/api/v1/slurm/jobs/{job_id}/report")).json()
                .get("source") == "stored" and r.json()), timeout=60)
            assert isinstance(stored, dict)
            # Slurm's truth: sacct's times with accounting, else the snapshot's (squeue)
            row = sacct_says(adapter, job_id) if slurm_cluster.has_accounting else None
            truth = slurm.find_job(plane.cp, job_id)
            assert truth is not None and truth.finished
            elapsed = float(row["ElapsedRaw"]) if row else float(truth.elapsed_s or 0)
            start = float(row["Start"]) if row else truth.start_time
            assert (stored["start_time"], stored["elapsed_s"]) == (start, elapsed)
            assert stored["slurm_source"] == ("sacct" if row else "squeue")
            assert stored["gpus"] == 2 and len(stored["per_gpu"]) == 2
            assert abs(stored["gpu_hours"] - 2 * elapsed / 3600) <= 2 * INTERVAL / 3600
            per_gpu = NODE_COST / 2  # the cost model: node $/hr shared by its GPUs
            assert {g["cost_per_hour"] for g in stored["per_gpu"]} == {per_gpu}
            assert stored["cost"] == pytest.approx(per_gpu * stored["gpu_hours"], abs=1e-6)
            assert stored["mean_utilization"] > 40 and stored["wasted"] < stored["cost"]
            assert stored["grades"][0]["metric"] == "gpu_utilization"

            # the session's cluster has other tests' ended GPU jobs: each gets its own
            sent = wait("the end-of-job message", lambda: mine(receiver, job_id), timeout=30)
            assert isinstance(sent, list) and len(sent) == 1, sent
            text = sent[0]["title"] + "\n" + sent[0]["message"]
            assert f"job {job_id}" in text and "of root" in text and "GPU-hours" in text

            shown = cli(plane, "jobstats", str(job_id))
            assert "Slurm Job Statistics" in shown and str(job_id) in shown
            assert "root" in shown and f"GPU-hours {stored['gpu_hours']:.2f}" in shown
            ranked = cli(plane, "report", "--since", "1h")
            assert "root" in ranked and "most GPU-hours of" in ranked
            assert cli(plane, "report", "--since", "1h", "--csv").splitlines()[0] == \
                "rank,user,jobs,gpu_hours,mean_utilization,cost,wasted"

        # a fresh app on the same state database, the job still in Slurm's snapshot: its
        # summary stays, nothing is stored or sent again
        with control_plane(home, config(receiver, ctl.url)) as plane:
            cp = plane.cp
            wait("the job in the new control plane's snapshot",
                 quietly(lambda: slurm.find_job(cp, job_id)), timeout=30)
            cycles = (cp.reports.cycles, cp.watchdog.cycles)
            wait("two more report and watchdog cycles", lambda: (
                cp.reports.cycles >= cycles[0] + 2 and cp.watchdog.cycles >= cycles[1] + 2))
            again = plane.get(f"/api/v1/slurm/jobs/{job_id}/report").json()
            assert again["source"] == "stored" and again["stored_at"] == stored["stored_at"]
            assert len(mine(receiver, job_id)) == 1

        # Slurm and the metrics store forget it: no controller, the store's files gone
        store = open_store(ServeConfig().store, home)
        path = Path(store.path)  # type: ignore[attr-defined]
        store.close()
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
        with control_plane(home, config(receiver, None)) as plane:
            kept = plane.get(f"/api/v1/slurm/jobs/{job_id}/report")
            assert kept.status_code == 200, kept.text
            assert kept.json()["cost"] == stored["cost"] and kept.json()["source"] == "stored"
            week = plane.get("/api/v1/reports/efficiency", params={"since": "7d"}).json()
            root = next(r for r in week["rows"] if r["key"] == "root")
            assert root["rank"] >= 1 and root["gpu_hours"] >= stored["gpu_hours"] - 1e-4
        assert len(mine(receiver, job_id)) == 1
    finally:
        receiver.close()


def test_without_the_watchdog_the_message_is_sent_and_the_admin_comment_written(
        slurm_cluster: LocalSlurmCluster, adapter: SlurmAdapter, actions: SlurmActions,
        daemon_factory, wait, clean_queue: None, tmp_path: Path) -> None:
    """``watchdog.enabled: false`` (and reclaim off: no loop delivers the outbox but the
    reports' own): the end-of-job message still arrives, once; with
    ``reports.admin_comment`` the summary is the job's AdminComment as Slurm reads it back."""
    from gpuwarden.services import jobreport, slurm

    receiver = Receiver()
    ctl = slurm_daemon(daemon_factory, slurm_cluster, "node1", "--slurm-controller")
    settings = config(receiver, ctl.url).model_dump()
    settings["watchdog"]["enabled"] = False
    settings["reclaim"]["enabled"] = False
    settings["reports"]["admin_comment"] = True
    try:
        with control_plane(tmp_path / "home", ServeConfig.model_validate(settings)) as plane:
            cp = plane.cp
            assert cp.watchdog is None and cp.reclaim is None and cp.reports.delivers
            wait("Slurm through the control plane", quietly(lambda: slurm.nodes(cp)),
                 timeout=30)
            job_id = actions.submit("#!/bin/sh\nsleep 3\n", SubmitOptions(
                name="no-watchdog", gres="gpu:1", nodelist=("node1",), output="/dev/null",
                comment="gpuwarden:profile=train"))
            def where() -> str:  # what a timeout says: how far the job and the reports got
                seen = quietly(lambda: slurm.find_job(cp, job_id))()
                state = adapter.run("squeue", ["-h", "-t", "all", "-j", str(job_id), "-o",
                                               "%T"]).stdout.strip()
                return (f"job in the control plane's snapshot: {seen!r}; reports: "
                        f"{cp.reports.cycles} cycles, {cp.reports.stored} stored, "
                        f"{cp.reports.messages} messages; squeue: {state!r}")

            sent = wait("the end-of-job message", lambda: mine(receiver, job_id), timeout=60,
                        detail=where)
            assert isinstance(sent, list) and len(sent) == 1, sent
            assert f"job {job_id}" in sent[0]["title"] and "of root" in sent[0]["title"]
            stored = jobreport.stored_report(cp, job_id)
            assert stored is not None
            want = jobreport.admin_comment_text(stored)
            assert want.startswith("gpuwarden: 1 gpu(s): ") and "gpu-hours" in want

            if slurm_cluster.has_accounting:  # AdminComment of an ended job: slurmdbd's
                wait("the AdminComment in Slurm", lambda: adapter.run("sacct", [
                    "-j", str(job_id), "-X", "-n", "-P", "-o", "AdminComment"]).stdout
                    .strip() == want, timeout=30)
                assert cp.reports.comments >= 1
            for bad, field in ((lambda: actions.admin_comment(job_id, 'say "hi"'), "comment"),
                               (lambda: actions.admin_comment(job_id, " "), "comment"),
                               (lambda: actions.submit("#!/bin/sh\n", SubmitOptions(
                                   qos="gpu cap")), "qos"),
                               (lambda: actions.submit("#!/bin/sh\n", SubmitOptions(
                                   account="a;b")), "account")):
                with pytest.raises(ValidationError) as err:
                    bad()
                assert err.value.field == field, err.value
            cycles = cp.reports.cycles
            wait("two more report cycles", lambda: cp.reports.cycles >= cycles + 2)
            assert len(mine(receiver, job_id)) == 1
    finally:
        receiver.close()


def test_a_job_over_its_memory_ends_out_of_memory_and_the_agent_says_so(
        daemon_factory, wait, tmp_path: Path) -> None:
    """With cgroup memory enforcement (a cluster of its own: the session's confines
    nothing) a job that touches more than its --mem is killed by the cgroup's OOM killer;
    Slurm ends it OUT_OF_MEMORY, and the agent's outcome analyzer says so, with sacct's
    state, exit code and node."""
    import asyncio

    from gpuwarden.agent import analyzers
    from gpuwarden.slurm.local import memory_cgroup_unavailable
    from gpuwarden.slurm.parsers.sacct import parse_exit_code
    from tests.conftest import _slurm_installed

    if not _slurm_installed() or os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs Slurm and root")
    why = memory_cgroup_unavailable()
    if why is not None:
        pytest.skip(f"no cgroup memory enforcement here: {why}")
    cluster = LocalSlurmCluster(tmp_path / "oom", nodes=1, gpus_per_node=2, cpus_per_node=2,
                                memory_mb=1024, cluster_name="oom", memory_enforcement=True,
                                slurmd_timeout=5)
    cluster.up()
    try:
        ctl = slurm_daemon(daemon_factory, cluster, "node1", "--slurm-controller")
        settings = {"cluster": "oom", "scrape": {"interval": INTERVAL, "timeout": 2.0},
                    "watchdog": {"enabled": False}, "reclaim": {"enabled": False},
                    "nodes": [{"name": "node1", "url": ctl.url, "role": "controller"}]}
        with control_plane(tmp_path / "home", ServeConfig.model_validate(settings)) as plane:
            from gpuwarden.services import slurm

            job_id = SlurmActions(cluster.adapter()).submit(
                f"#!/bin/sh\n{sys.executable} -c 'b = bytearray(300 << 20)\n"
                "for i in range(0, len(b), 4096): b[i] = 1'\n",
                SubmitOptions(name="greedy", gres="gpu:1", mem="64M", output="/dev/null"))
            job = wait("the job's end in gpuwarden's view", quietly(lambda: (
                (j := slurm.find_job(plane.cp, job_id)) is not None and j.finished and j)),
                timeout=60)
            adapter = cluster.adapter()
            if cluster.has_accounting:
                row = wait("sacct's record", lambda: sacct_says(adapter, job_id), timeout=30)
                state, (code, sig) = row["State"].split()[0], parse_exit_code(row["ExitCode"])
            else:  # slurmctld still holds it (MinJobAge)
                state, code, sig = job.state, job.exit_code, job.signal
            assert state == "OUT_OF_MEMORY"
            a = asyncio.run(analyzers.job_outcome(plane.cp, job_id))
            assert (a.data["state"], a.data["nodes"]) == (state, ["node1"]), a.data
            assert (a.data["exit_code"], a.data["signal"] or 0) == (code, sig or 0), a.data
            text = a.text()
            assert "ran out of memory" in a.summary and "OUT_OF_MEMORY" in a.summary
            assert "node1" in a.summary and "--mem" in text, text
    finally:
        cluster.down()
