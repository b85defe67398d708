from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuwarden import processes
from gpuwarden.slurm import LocalSlurmCluster

# the live agent cluster (tests/agent and tests/agent_scenarios share one)
pytest_plugins = ["tests.agent.live"]

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference"  # copies of public data files; see its README


def reference_file(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference file {path} is missing from the repository "
                    "(tests/reference/README.md lists them and where they come from)")
    return path


def free_port() -> int:
    """A port for a daemon a test starts: below the ephemeral range (processes.free_ports)."""
    return processes.free_port()


class Daemon:
    def __init__(self, proc: subprocess.Popen[str], url: str, token: str | None) -> None:
        self.proc = proc
        self.url = url
        self.token = token

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return httpx.get(self.url + path, headers=headers, timeout=5)


def start_daemon(args: list[str], token: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 20.0) -> Daemon:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "node", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code in (200, 503):
                return Daemon(proc, url, token)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("daemon did not answer /healthz in time")


@pytest.fixture
def daemon_factory() -> Iterator:
    started: list[Daemon] = []

    def factory(args: list[str], token: str | None = None, **kw) -> Daemon:
        d = start_daemon(args, token, **kw)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.proc.terminate()
        try:
            d.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            d.proc.kill()


class Serve:
    def __init__(self, proc: subprocess.Popen[str], url: str, admin: str, home: Path,
                 lines: list[str]) -> None:
        self.proc, self.url, self.admin, self.home, self.lines = proc, url, admin, home, lines

    def get(self, path: str, token: str | None = None, **kw) -> httpx.Response:
        token = self.admin if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=10, **kw)

    def wait(self, predicate, timeout: float = 20.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def start_serve(config: Path, home: Path, port: int | None = None) -> Serve:
    port = port or free_port()
    env = {**os.environ, "GPUWARDEN_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: list[str] = []
    admin = ""
    url = f"http://127.0.0.1:{port}"

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            time.sleep(0.2)
            raise AssertionError(f"serve exited {proc.returncode}: " + "\n".join(lines))
        signin = next((x for x in lines if x.startswith("sign in:")), None)
        for i, line in enumerate(lines):
            if "shown this once" in line and i + 1 < len(lines):
                admin = lines[i + 1].strip()
        ready = signin is not None and (admin or "/login?token=" not in signin)
        try:
            if ready and httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Serve(proc, url, admin, home, lines)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not come up: " + "\n".join(lines))


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def serve_factory() -> Iterator:
    started: list[Serve] = []

    def factory(config: Path, home: Path, port: int | None = None) -> Serve:
        s = start_serve(config, home, port)
        started.append(s)
        return s

    yield factory
    for s in started:
        stop(s.proc)


# -- the session's one real Slurm cluster (tests/slurm and the browser tests share it) -----
SLURMD_TIMEOUT = 3


def _slurm_installed() -> bool:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return shutil.which("slurmctld", path=path) is not None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurmCluster]:
    if not _slurm_installed():
        pytest.skip("slurmctld is not installed (apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root")
    cluster = LocalSlurmCluster(
        tmp_path_factory.mktemp("slurm") / "cluster",
        nodes=3,
        gpus_per_node=2,
        gpu_type="a100",
        slurmd_timeout=SLURMD_TIMEOUT,
        max_job_count=2000,
        # Short timeouts so a killed slurmd shows as down within seconds, not minutes.
        extra_conf={"MessageTimeout": "2"},
    )
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
        left = cluster.leftover_pids()
        assert not left, f"processes left behind: {left}"
