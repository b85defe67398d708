"""The bootstrap script, run for real against two local "pods" (a directory and an
environment each, fake GPU character devices): it forms a working two-node Slurm cluster
(rank 0 static controller, rank 1 a dynamic node, as on RunPod) whose node daemons the
control plane scrapes."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from gpuwarden import processes
from gpuwarden.providers.base import NodeRecord
from gpuwarden.providers.bootstrap import SOCKET_PATH_MAX, render_script, write_slurm_config
from gpuwarden.providers.local import slurm_available
from gpuwarden.providers.registry import upsert_provider_nodes
from tests.conftest import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.skipif(not slurm_available(), reason="needs Slurm (apt-get install -y "
                    "slurm-wlm munge) and root")
def test_bootstrap_forms_a_slurm_cluster_scraped_by_the_control_plane(tmp_path, db,
                                                                       serve_factory):
    # The pods' roots are short: slurmd makes its step sockets in the pod's spool
    # (<root>/var/spool/slurmd/node1/node1_<job>.<step>) and a socket path holds 107 bytes,
    # which a tmp_path under pytest-xdist (.../pytest-N/popen-gw0/test_bootstrap_.../) is
    # too deep for. Left behind when the test fails, with the Slurm logs in it.
    base = Path(tempfile.mkdtemp(prefix="gw-boot-"))
    script = tmp_path / "bootstrap.sh"
    script.write_text(render_script())
    tag = f"bootstrap-test:{tmp_path}"
    ports = {"ctld": free_port(), "ctl_slurmd": free_port(), "slurmd": free_port()}
    common = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "GPUWARDEN"))},
        "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin",
        processes.MARKER: tag,
        "GPUWARDEN_SKIP_INSTALL": "1", "GPUWARDEN_PYTHON": sys.executable,
        "GPUWARDEN_CLUSTER": "boot", "GPUWARDEN_NUM_NODES": "2",
        "GPUWARDEN_CONTROLLER_ADDR": "127.0.0.1", "GPUWARDEN_NODE_ADDR": "127.0.0.1",
        "GPUWARDEN_NODE_TOKEN": "pod-token-0123456789abcdef",
        "GPUWARDEN_MUNGE_KEY_B64": base64.b64encode(os.urandom(1024)).decode(),
        "GPUWARDEN_GPUS_PER_NODE": "1", "GPUWARDEN_GPU_BACKEND": "sim",
        "GPUWARDEN_NODE_HOST": "127.0.0.1", "GPUWARDEN_NODE_CPUS": "1",
        "GPUWARDEN_NODE_MEMORY_MB": "512", "GPUWARDEN_SLURMCTLD_PORT": str(ports["ctld"]),
        "GPUWARDEN_CONTROLLER_SLURMD_PORT": str(ports["ctl_slurmd"]),
        "GPUWARDEN_SLURMD_PORT": str(ports["slurmd"]), "GPUWARDEN_CONTROLLER_WAIT_S": "60",
    }
    pods, urls = [], []
    try:
        for rank in (0, 1):
            root = base / f"pod{rank}"
            (root / "dev").mkdir(parents=True)
            os.mknod(root / "dev" / "nvidia0", 0o666 | stat.S_IFCHR, os.makedev(195, rank))
            port = free_port()
            env = {**common, "GPUWARDEN_POD_ROOT": str(root), "GPUWARDEN_NODE_RANK": str(rank),
                   "GPUWARDEN_NODE_PORT": str(port)}
            log = (tmp_path / f"pod{rank}.log").open("wb")
            pods.append(subprocess.Popen(["bash", str(script)], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=root))
            urls.append(f"http://127.0.0.1:{port}")
        for i, url in enumerate(urls):
            wait_until(f"pod{i} daemon ({(tmp_path / f'pod{i}.log')})",
                       lambda url=url, i=i: healthy(url) or pods[i].poll() is not None,
                       timeout=60, interval=0.3)
            assert pods[i].poll() is None, (tmp_path / f"pod{i}.log").read_text()

        slurm_env = {**common, "SLURM_CONF": str(base / "pod0/etc/slurm/slurm.conf")}
        sinfo = wait_until("both nodes idle", lambda: (lambda out: out if out.split() == [
            "node1", "idle", "node2", "idle"] else None)(subprocess.run(
                ["sinfo", "-N", "-h", "-o", "%N %t"], env=slurm_env, capture_output=True,
                text=True).stdout), timeout=60, interval=0.3)
        assert sinfo
        run = subprocess.run(["srun", "-N2", "--gres=gpu:1", "-t", "1", "bash", "-c",
                              "echo $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"], env=slurm_env,
                             capture_output=True, text=True, timeout=60)
        assert sorted(run.stdout.split("\n")[:2]) == ["node1 0", "node2 0"], \
            f"{run.stderr}(slurmd's logs: {base}/pod*/var/log/slurm)"
        assert not (base / "pod0/etc/gpuwarden/node.token").stat().st_mode & 0o077
        assert "pod-token-0123456789abcdef" not in script.read_text()

        # the control plane scrapes both node daemons once they are registered
        token_file = tmp_path / "token"
        token_file.write_text("pod-token-0123456789abcdef\n")
        token_file.chmod(0o600)
        upsert_provider_nodes(db, "boot", "runpod", [
            NodeRecord(f"boot-node{i + 1}", i + 1, "controller" if i == 0 else "worker",
                       "RUNNING", url=url, token_file=token_file) for i, url in enumerate(urls)])
        config = tmp_path / "gpuwarden.yaml"
        config.write_text("scrape:\n  interval: 1\n")
        serve = serve_factory(config, db.path.parent)
        nodes = serve.wait(lambda: (lambda v: v if len(v) == 2 and all(n["up"] for n in v)
                                    else None)(serve.get("/api/v1/nodes").json()),
                           timeout=30, what="both nodes scraped")
        assert {n["name"] for n in nodes} == {"boot-node1", "boot-node2"}
        assert {n["hostname"] for n in nodes} == {"boot-node1", "boot-node2"}
        slurm = serve.wait(lambda: (lambda s: s if s.get("up") else None)(
            serve.get("/api/v1/slurm").json()), timeout=30, what="Slurm seen via node1")
        assert slurm["gpus_total"] == 2
    finally:
        for proc in pods:
            processes.terminate(proc.pid)
        for pid in processes.tagged(tag):
            processes.terminate(pid)
        assert not processes.tagged(tag)
    shutil.rmtree(base, ignore_errors=True)


def test_a_pod_root_too_deep_for_slurmds_sockets_is_refused_before_slurm_starts(tmp_path):
    env = {"GPUWARDEN_CONTROLLER_ADDR": "127.0.0.1", "GPUWARDEN_NODE_RANK": "1",
           "GPUWARDEN_NODE_CPUS": "1", "GPUWARDEN_NODE_MEMORY_MB": "512"}
    # job 1's socket would just fit (107 bytes), a later job's would not
    deep = "/" + "d" * (SOCKET_PATH_MAX - 1 - len("/var/spool/slurmd/node2/node2_1.0"))
    assert len(f"{deep}/var/spool/slurmd/node2/node2_1.0") == SOCKET_PATH_MAX
    with pytest.raises(ValueError, match=r"node2_67108863\.4294967291\), more than the 107"):
        write_slurm_config(env, deep, tmp_path / "deep", "host")
    assert not (tmp_path / "deep").exists()
    write_slurm_config(env, "/", tmp_path / "short", "host")  # a pod's usual root
    assert "SlurmdSpoolDir=/var/spool/slurmd/%n" in (tmp_path / "short/slurm.conf").read_text()
