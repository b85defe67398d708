"""A ``gpuwarden demo`` subprocess as a user runs it: stdout into a pipe that the test reads
(no reader thread, so a test can close its end), in its own process group (so a test can
send the group a Ctrl-C), and the processes that name its home."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gpuwarden.slurm import LocalSlurmCluster


@dataclass
class DemoRun:
    home: Path
    port: int
    proc: subprocess.Popen
    stderr: Path
    out: str = ""
    token: str | None = None
    _fd: int | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def slurm_dir(self) -> Path:
        return self.home / "demo" / "clusters" / "demo" / "local" / "slurm"

    @property
    def slurm_env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.slurm_dir / "etc" / "slurm.conf")}

    def log(self) -> str:
        err = self.stderr.read_text() if self.stderr.exists() else ""
        return f"--- stdout\n{self.out}\n--- stderr (tail)\n{err[-4000:]}"

    def read(self, timeout: float = 0.0) -> bool:
        """Take what the pipe has (waiting up to ``timeout``); False at end of file."""
        if self._fd is None:
            return False
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return True
        chunk = os.read(self._fd, 65536)
        if not chunk:
            return False
        self.out += chunk.decode(errors="replace")
        return True

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.out)
            if found:
                return found
            if not self.read(0.5) and self.proc.poll() is not None:
                break
        raise AssertionError(f"no {pattern!r} from the demo\n{self.log()}")

    def started(self, timeout: float = 120) -> DemoRun:
        self.token = self.wait_for(r"/login\?token=(\S+)", timeout).group(1)
        return self

    def api(self) -> httpx.Client:
        assert self.token, "started() first"
        return httpx.Client(base_url=f"{self.url}/api/v1", timeout=15,
                            headers={"Authorization": f"Bearer {self.token}"})

    def close_stdout(self) -> None:
        if self._fd is not None:
            self.proc.stdout.close()
            self._fd = None

    def finish(self, timeout: float = 90) -> int:
        """Read to the end and wait for the exit status."""
        deadline = time.monotonic() + timeout
        while self.read(0.5) and time.monotonic() < deadline:
            pass
        try:
            return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the demo did not end within {timeout:.0f}s\n"
                                 f"{self.log()}") from None

    def kill(self) -> None:
        """For a test's own cleanup: whatever happened, end the demo and its processes."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self.proc.wait(timeout=60)
        for pid in processes_of(self.home):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                os.kill(pid, signal.SIGKILL)


def start(home: Path, port: int, *args: str) -> DemoRun:
    stderr = home.parent / f"{home.name}.stderr"
    home.parent.mkdir(parents=True, exist_ok=True)
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpuwarden", "demo", "--headless", "--port", str(port),
             *args], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            env={**os.environ, "GPUWARDEN_HOME": str(home)}, start_new_session=True)
    return DemoRun(home, port, proc, stderr, _fd=proc.stdout.fileno())


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2]
                for item in raw.split(b"\0") if b"=" in item)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_of(home: Path) -> list[int]:
    """Live processes whose command line or environment names ``home``: the demo itself
    (GPUWARDEN_HOME), its node daemons (the provider's tag), munged, slurmctld, the slurmds
    (GPUWARDEN_SLURM_LOCAL) and the jobs' processes (SLURM_CONF), whoever owns them."""
    root, own = str(home), os.getpid()
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == own:
            continue
        try:
            cmd = Path(p, "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        values = [cmd, *_environ(int(p.name)).values()]
        if any(v == root or f"{root}/" in v or f"{root}\0" in v for v in values) \
                and _alive(int(p.name)):
            found.append(int(p.name))
    return found


def job_processes(home: Path) -> list[int]:
    """Processes of Slurm jobs of the demo in ``home`` (a job script and its children)."""
    return [p for p in processes_of(home) if "SLURM_JOB_ID" in _environ(p)]


def describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes()
                       .replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(out)


def assert_nothing_left(run: DemoRun, timeout: float = 3.0) -> None:
    """No process and no Slurm state of the demo: nothing names its home, the Unix sockets'
    stand-in directory is gone, no runtime file; the kernel may take a moment to reap."""
    deadline = time.monotonic() + timeout
    while (left := processes_of(run.home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"left running:\n{describe(left)}\n{run.log()}"
    sockets = LocalSlurmCluster(run.slurm_dir).socket_dir
    assert sockets == run.slurm_dir or not sockets.exists(), sockets
    assert not (run.home / "demo" / "control-plane.json").exists()
