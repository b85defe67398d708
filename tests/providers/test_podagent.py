"""The generated bootstrap script run for real (a directory and an environment as the "pod",
no Slurm): a tampered wheel stops it at the hash check, before anything of it runs, and the
step and pip's words reach ``/healthz``; secrets arrive once, from whoever holds the
enrollment key, and only then does the node daemon start."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gpuwarden import __version__, processes
from gpuwarden.providers.base import ProviderError, Workspace
from gpuwarden.providers.bootstrap import render_script
from gpuwarden.providers.enroll import ENV, deliver_secrets, enrollment_env
from gpuwarden.providers.health import probe
from gpuwarden.providers.secrets import ensure_token
from tests.conftest import free_port
from tests.providers.conftest import WHEEL
from tests.waiting import wait_until


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Callable[..., tuple[str, subprocess.Popen[bytes]]]]:
    """Start the bootstrap script as one pod: (node URL, process)."""
    tag = f"podagent-test:{tmp_path}"
    script = tmp_path / "bootstrap.sh"
    script.write_text(render_script())
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        full = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "GPUWARDEN"))},
            processes.MARKER: tag, "GPUWARDEN_PYTHON": sys.executable,
            "GPUWARDEN_CLUSTER": "agent", "GPUWARDEN_SLURM": "0",
            "GPUWARDEN_POD_ROOT": str(tmp_path / "pod"), "GPUWARDEN_NODE_ADDR": "127.0.0.1",
            "GPUWARDEN_NODE_HOST": "127.0.0.1", "GPUWARDEN_NODE_PORT": str(port),
            "GPUWARDEN_GPU_BACKEND": "sim", **env}
        log = (tmp_path / "pod.log").open("ab")
        proc = subprocess.Popen(["bash", str(script)], env=full, stdout=log,
                                stderr=subprocess.STDOUT)
        started.append(proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in started:
        processes.terminate(proc.pid)
    for pid in processes.tagged(tag):
        processes.terminate(pid)
    assert not processes.tagged(tag)


def test_a_tampered_wheel_stops_the_bootstrap_at_the_hash_check(pod, wheel_server, tmp_path):
    base, root = wheel_server
    (root / WHEEL).write_bytes(b"not the wheel gpuwarden up hashed")
    url, proc = pod(GPUWARDEN_INSTALL_WHEEL=f"{base}/{WHEEL}",
                    GPUWARDEN_INSTALL_SHA256=hashlib.sha256(b"the real wheel").hexdigest(),
                    GPUWARDEN_NODE_TOKEN="t0ken", GPUWARDEN_MUNGE_KEY_B64="")
    with httpx.Client() as http:
        seen = wait_until("the failure on /healthz", lambda: (
            lambda p: p if p.bootstrap == "failed" else None)(probe(http, url)), timeout=60,
            interval=0.3)
    assert seen.step == "download gpuwarden (hash-checked)" and not seen.healthy
    assert "DO NOT MATCH THE HASHES" in seen.log and seen.version == __version__
    # nothing after the hash check ran: no install, no token written, no daemon
    assert not (tmp_path / "pod/etc/gpuwarden/node.token").exists()
    assert not list((tmp_path / "pod/tmp").glob("gpuwarden-wheel/*.whl"))
    assert proc.poll() is None  # the agent keeps saying why until the pod is stopped


def test_secrets_arrive_once_from_the_key_holder_then_the_daemon_starts(pod, tmp_path):
    ws = Workspace(tmp_path / "home", "agent")
    url, proc = pod(GPUWARDEN_SKIP_INSTALL="1", **enrollment_env(ws))
    assert ENV in enrollment_env(ws)
    with httpx.Client() as http:
        seen = wait_until("the pod waiting for its secrets", lambda: (
            lambda p: p if p.bootstrap == "waiting" else None)(probe(http, url)), timeout=60,
            interval=0.3)
        assert seen.step == "waiting for secrets"
        # someone who read the pod's environment has the hash, not the key
        impostor = Workspace(tmp_path / "other-home", "agent")
        with pytest.raises(ProviderError, match=r"refused its secrets \(HTTP 401"):
            deliver_secrets(http, impostor, url, "gw-agent-1")
        assert not (tmp_path / "pod/etc/gpuwarden/node.token").exists()
        deliver_secrets(http, ws, url, "gw-agent-1")
        wait_until("the node daemon", lambda: probe(http, url).healthy, timeout=60,
                   interval=0.3)
        token = ensure_token(ws.token_file("agent"))
        written = tmp_path / "pod/etc/gpuwarden/node.token"
        assert written.read_text().strip() == token and not written.stat().st_mode & 0o077
        munge = tmp_path / "pod/etc/munge/munge.key"
        assert munge.read_bytes() == (ws.directory / "munge.key").read_bytes()
        assert not munge.stat().st_mode & 0o077
        assert probe(http, url).version == __version__
        snap = http.get(url + "/api/v1/snapshot", headers={"Authorization": f"Bearer {token}"})
        assert snap.status_code == 200 and snap.json()["node"]["version"] == __version__
    assert proc.poll() is None


def test_a_pod_whose_secrets_never_come_says_so(pod, tmp_path):
    url, _ = pod(GPUWARDEN_SKIP_INSTALL="1", GPUWARDEN_SECRETS_WAIT_S="1",
                 **enrollment_env(Workspace(tmp_path / "home", "agent")))
    with httpx.Client() as http:
        seen = wait_until("the failure on /healthz", lambda: (
            lambda p: p if p.bootstrap == "failed" else None)(probe(http, url)), timeout=60,
            interval=0.3)
    assert seen.step == "receive the node token and munge key"
    assert "no secrets delivered within 1 s" in seen.log
