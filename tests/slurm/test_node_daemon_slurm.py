"""Node daemons with --slurm on the real local cluster: simulated GPUs follow their jobs,
the controller's daemon serves Slurm metrics, the Slurm API and validated actions, and the
control plane reads and acts through it (with the watchdog draining under policy)."""

from __future__ import annotations

import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpuwarden.slurm import LocalSlurmCluster, SlurmActions, SlurmAdapter, SubmitOptions

pytestmark = pytest.mark.slow
SLEEP = "#!/bin/sh\nsleep 300\n"


def gpu_state(daemon, index):
    snap = daemon.get("/api/v1/snapshot").json()
    gpu = snap["gpus"][index]
    return gpu["fields"]["DCGM_FI_DEV_GPU_UTIL"], [j["job_id"] for j in gpu["jobs"]]


def slurm_daemon(daemon_factory, cluster: LocalSlurmCluster, node: str, *extra: str,
                 token: str | None = None):
    args = ["--gpu-backend", "sim", "--sim-gpus", "2", "--interval", "0.5", "--slurm",
            "--slurm-node", node, "--hostname", node, "--slurm-interval", "1", *extra]
    if token is None:
        args.append("--no-auth")
    return daemon_factory(args, token=token,
                          env={**cluster.env(), "GPUWARDEN_NODE_TOKEN": token or ""})


def test_sim_gpus_follow_their_slurm_jobs(daemon_factory, slurm_cluster, actions, wait,
                                          clean_queue):
    node2 = slurm_daemon(daemon_factory, slurm_cluster, "node2")
    idle_job = actions.submit(SLEEP, SubmitOptions(nodelist=("node2",), gres="gpu:1",
                                                   comment="gpuwarden:profile=idle"))
    wait("first job on GPU 0", lambda: gpu_state(node2, 0)[1] == [str(idle_job)])
    train_job = actions.submit(SLEEP, SubmitOptions(nodelist=("node2",), gres="gpu:1",
                                                    comment="gpuwarden:profile=train"))
    wait("train job busy on GPU 1",
         lambda: gpu_state(node2, 1)[1] == [str(train_job)] and gpu_state(node2, 1)[0] > 50)
    util0, jobs0 = gpu_state(node2, 0)
    assert jobs0 == [str(idle_job)] and util0 == 0  # allocated, idle: exactly the other GPU
    metrics = {f.name: f for f in text_string_to_metric_families(node2.get("/metrics").text)}
    info = {(s.labels["gpu"], s.labels["job_id"], s.labels["has_process"])
            for s in metrics["gpuwarden_gpu_job_info"].samples}
    assert info == {("0", str(idle_job), "false"), ("1", str(train_job), "false")}
    actions.cancel(train_job)
    wait("GPU 1 idle again", lambda: gpu_state(node2, 1) == (0.0, []), timeout=30)


def test_controller_daemon_serves_slurm_and_refuses_bad_input(daemon_factory, slurm_cluster,
                                                             actions, wait, clean_queue):
    ctl = slurm_daemon(daemon_factory, slurm_cluster, "node1", "--slurm-controller",
                       token="ctl-token-0123456789abcdef")
    assert ctl.get("/api/v1/slurm", token="wrong").status_code == 401
    held = actions.submit(SLEEP, SubmitOptions(name="held", hold=True))
    wait("held job visible", lambda: any(
        j["job_id"] == held for j in ctl.get("/api/v1/slurm/jobs").json()))
    summary = ctl.get("/api/v1/slurm").json()
    assert summary["up"] and summary["queue"]["pending"] >= 1
    assert {n["name"] for n in summary["nodes"]} == {"node1", "node2", "node3"}
    assert summary["gpus"]["total"] == 6
    metrics = {f.name for f in text_string_to_metric_families(ctl.get("/metrics").text)}
    assert {"slurm_up", "slurm_gpus_total", "slurm_node_state",
            "DCGM_FI_DEV_GPU_UTIL"} <= metrics

    import httpx

    def post(path, body=None):
        return httpx.post(ctl.url + path, json=body, timeout=30,
                          headers={"Authorization": "Bearer ctl-token-0123456789abcdef"})

    assert post(f"/api/v1/slurm/jobs/{held}/release").status_code == 200
    assert post(f"/api/v1/slurm/jobs/{held}/hold").status_code == 200
    assert post(f"/api/v1/slurm/jobs/{held}/cancel").status_code == 200
    wait("job gone", lambda: all(j["job_id"] != held or j["state"] != "PENDING"
                                 for j in ctl.get("/api/v1/slurm/jobs").json()))
    # "1; rm -rf /" as a job id: its slash makes it no route at all; without one it is
    # refused by validation, naming the field
    assert post("/api/v1/slurm/jobs/1%3B%20rm%20-rf%20%2F/cancel").status_code == 404
    bad = post("/api/v1/slurm/jobs/1%3B%20rm%20-rf%20~/cancel")
    assert bad.status_code == 422 and "job_id" in bad.json()["detail"]
    unknown = post("/api/v1/slurm/nodes/node9/drain", {"reason": "test"})
    assert unknown.status_code == 422 and "node9" in unknown.json()["detail"]
    assert post("/api/v1/slurm/nodes/node3/drain", {}).status_code == 422
    assert post("/api/v1/slurm/nodes/node3/drain", {"reason": "fan noise"}).status_code == 200
    node3 = next(n for n in ctl.get("/api/v1/slurm/nodes").json() if n["name"] == "node3")
    assert node3["reason"] == "fan noise" and "DRAIN" in " ".join(node3["flags"]).upper() + \
        node3["state"].upper()
    assert post("/api/v1/slurm/nodes/node3/resume").status_code == 200
    submitted = post("/api/v1/slurm/jobs", {"script": SLEEP, "name": "api", "hold": True})
    assert submitted.status_code == 201 and submitted.json()["job_id"] > 0
    assert post("/api/v1/slurm/jobs", {"script": "rm -rf /"}).status_code == 422
    assert post("/api/v1/slurm/jobs", {"script": SLEEP, "shell": "x"}).status_code == 422
    # a body that is not JSON, or JSON but not an object: refused, saying what to send
    def raw(path, content):
        return httpx.post(ctl.url + path, content=content, timeout=30, headers={
            "Authorization": "Bearer ctl-token-0123456789abcdef",
            "Content-Type": "application/json"})

    for path, codes, example in (("/api/v1/slurm/jobs", (400, 422), '"script"'),
                                 ("/api/v1/slurm/nodes/node3/drain", (422, 422), '"reason"')):
        for body, code in zip((b"{not json", b"[1, 2]"), codes, strict=True):
            refused = raw(path, body)
            assert refused.status_code == code, (path, body, refused.text)
            assert example in refused.json()["detail"], refused.text


def test_the_live_job_list_is_squeue_now_not_the_last_cycle(daemon_factory, slurm_cluster,
                                                             actions, wait, clean_queue):
    """What replace, stop and the checks read just before they act: a job that started
    after the daemon's last Slurm cycle is in ``?live=1`` at once (a cycle of 300 s here)."""
    import asyncio

    import httpx

    from gpuwarden.nodeclient import NodeClient

    ctl = slurm_daemon(daemon_factory, slurm_cluster, "node1", "--slurm-controller",
                       "--slurm-interval", "300")
    wait("the first cycle", lambda: ctl.get("/api/v1/slurm/jobs").status_code == 200)
    job = actions.submit(SLEEP, SubmitOptions(name="fresh", nodelist=("node2",)))
    wait("the job runs", lambda: any(j.job_id == job and j.state == "RUNNING"
                                     for j in actions.adapter.jobs()))
    assert all(j["job_id"] != job for j in ctl.get("/api/v1/slurm/jobs").json())  # the cycle's
    live = ctl.get("/api/v1/slurm/jobs?live=1&state=running").json()
    assert [j["nodes"] for j in live if j["job_id"] == job] == [["node2"]]

    async def through_the_client():
        async with httpx.AsyncClient() as http:
            return await NodeClient(http, ctl.url, None).slurm_jobs()

    assert [j.state for j in asyncio.run(through_the_client()) if j.job_id == job] == \
        ["RUNNING"]


def test_control_plane_and_watchdog_act_on_slurm(daemon_factory, serve_factory, slurm_cluster,
                                                  adapter: SlurmAdapter, actions: SlurmActions,
                                                  wait, clean_queue, tmp_path):
    ctl = slurm_daemon(daemon_factory, slurm_cluster, "node1", "--slurm-controller")
    node2 = slurm_daemon(daemon_factory, slurm_cluster, "node2")
    node3 = slurm_daemon(daemon_factory, slurm_cluster, "node3", "--sim-profile", "1=xid-storm")
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({
        "cluster": "slurm-test",
        "scrape": {"interval": 0.5, "timeout": 2.0},
        "nodes": [{"name": "node1", "url": ctl.url, "role": "controller", "cost_per_hour": 4},
                  {"name": "node2", "url": node2.url, "cost_per_hour": 4},
                  {"name": "node3", "url": node3.url, "cost_per_hour": 4}],
        "watchdog": {"interval": 0.5,
                     "policies": [{"rule": "xid_hardware", "action": "drain_node",
                                   "mode": "auto"}]},
    }))
    serve = serve_factory(config, tmp_path / "home")
    job = actions.submit(SLEEP, SubmitOptions(name="viewed", nodelist=("node2",), gres="gpu:1"))
    def running() -> dict | None:
        answer = serve.get("/api/v1/slurm/jobs")  # 503 until the controller's first scrape
        jobs = answer.json() if answer.status_code == 200 else []
        return next((j for j in jobs if j["job_id"] == job and j["state"] == "RUNNING"), None)

    detail = serve.wait(running, timeout=30, what="job through the control plane")
    assert detail["gpu_detail"] == {"node2": [0]}
    job_view = serve.wait(lambda: serve.get(f"/api/v1/slurm/jobs/{job}").json().get("gpus"),
                          what="job GPUs")
    assert [(g["node"], g["index"]) for g in job_view] == [("node2", 0)]
    assert serve.get("/api/v1/overview").json()["slurm"]["running"] >= 1
    # an operator cancels through the control plane; a viewer cannot
    import subprocess
    import sys

    viewer = subprocess.run([sys.executable, "-m", "gpuwarden", "token", "create", "--role",
                             "viewer"], capture_output=True, text=True,
                            env={**__import__("os").environ, "GPUWARDEN_HOME":
                                 str(tmp_path / "home")}).stdout.strip().splitlines()[-1]
    import httpx

    denied = httpx.post(f"{serve.url}/api/v1/slurm/jobs/{job}/cancel", timeout=30,
                        headers={"Authorization": f"Bearer {viewer}"})
    assert denied.status_code == 403
    done = httpx.post(f"{serve.url}/api/v1/slurm/jobs/{job}/cancel", timeout=30,
                      headers={"Authorization": f"Bearer {serve.admin}"})
    assert done.status_code == 200, done.text
    # a hardware XID on node3 (its xid-storm GPU sends one now and then): the watchdog's
    # auto policy drains node3 in Slurm, and the audit log has every step
    drained = serve.wait(lambda: next((n for n in adapter.nodes().nodes
                                       if n.name == "node3" and n.reason), None),
                         timeout=60, what="node3 drained by the watchdog")
    assert "gpuwarden watchdog" in drained.reason
    # the audit entry is written once the drain call returns, a moment after Slurm drains
    want = {("drain_node", "proposed"), ("drain_node", "executed"), ("cancel_job", "executed")}
    serve.wait(lambda: want <= {(e["action"], e["outcome"])
                                for e in serve.get("/api/v1/audit").json()},
               timeout=30, what="the audit log's steps")
    time.sleep(0.1)
