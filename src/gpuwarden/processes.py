"""Local processes: start them detached and tagged, tell whether they live, read their
environment, stop them (TERM, then KILL), sweep what a run left.  The one implementation
for the local provider, the local Slurm cluster, the demo and the runtime file.

A marker environment variable (``MARKER``) tags what the local provider starts, so a
crashed ``up`` leaves nothing a later ``down`` cannot find."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

MARKER = "GPUWARDEN_PROVIDER_TAG"
_EXITS: dict[int, int] = {}  # wait statuses of children reaped by ``alive``/``_reap``


def spawn(argv: Sequence[str], env: Mapping[str, str], tag: str, log_file: Path,
          pid_file: Path) -> int:
    """Start ``argv`` detached (own session), tagged with ``tag``, in the directory of its
    ``log_file`` (what it writes by a relative path lands there, not in the caller's
    directory: the ``slurm-N.out`` of a job a node daemon submits without an output, say);
    record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(list(argv), env={**env, MARKER: tag}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=log_file.parent.resolve())
    # Popen returns once the child's exec has closed its close-on-exec pipe, which the
    # kernel does before it sets the new program's environment up: until then
    # /proc/PID/environ reads empty and the child does not look tagged.  Wait for the tag.
    deadline = time.monotonic() + 5.0
    while tag_of(proc.pid) != tag and alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.001)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int | None) -> bool:
    """Running and not a zombie (a zombie child is reaped on the way)."""
    if pid is None:
        return False
    _collect(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tag_of(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{MARKER}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def under(directory: Path, keys: Sequence[str] = (MARKER,)) -> list[int]:
    """Live processes (this one excluded) whose environment names ``directory`` or a path
    below it in one of ``keys``: the last-resort sweep of everything a run kept there
    started, whoever its parent was."""
    own, root = os.getpid(), str(directory).rstrip("/")
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == own:
            continue
        env = environ(int(p.name))
        if any(v == root or f"{root}/" in v for k in keys if (v := env.get(k))) \
                and alive(int(p.name)):
            found.append(int(p.name))
    return found


def tagged(tag: str) -> list[int]:
    """Live processes carrying ``tag`` (this process excluded)."""
    own = os.getpid()
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != own and tag_of(int(p.name)) == tag
            and alive(int(p.name))]


def terminate(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            _reap(pid)
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if not alive(pid):
        _reap(pid)


def terminate_all(pids: Sequence[int], timeout_s: float = 10.0) -> None:
    """``terminate`` for many processes at once: one SIGTERM each, one shared wait, then
    SIGKILL for what is left (a stop takes the slowest one's time, not the sum)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for grace, sig in ((timeout_s, signal.SIGKILL), (5.0, None)):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.05)
        left = [p for p in pids if alive(p)]
        if not left or sig is None:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    for pid in pids:
        if not alive(pid):
            _reap(pid)


def _reap(pid: int) -> None:
    """Collect a child that turned zombie after ``alive`` last looked, so no pid is left."""
    _collect(pid, 0)


def _collect(pid: int, flags: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        done, status = os.waitpid(pid, flags)
        if done == pid:
            _EXITS[pid] = status


def how_it_ended(pid: int) -> str | None:
    """"exit code 1" or "killed by SIGKILL" for a child of this process that ended (and
    was reaped here), None when that is not known (not our child, or still running)."""
    _collect(pid, os.WNOHANG)
    status = _EXITS.get(pid)
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
        return f"killed by signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def free_ports(count: int = 1, host: str = "") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` ("": every IPv4 address), for a daemon
    to listen on a moment later.

    Not ``bind(0)``: that hands out a port of the kernel's ephemeral range, the range every
    outgoing connection on the machine draws its source port from, so in the seconds before
    the daemon binds it any ``connect()`` can take it (a local cluster's slurmd then died
    "Unable to bind listen port ... Address already in use" and ``up`` failed).  The ports
    come at random from the 12,000 below that range, which no connection uses as a source,
    each checked free by binding it without SO_REUSEADDR (a connected or TIME_WAIT socket on
    it counts as taken); at random, so two clusters started at once rarely pick the same."""
    low = _ephemeral_low()
    first = max(1024, low - 12000)
    if low - first < 64 * count:  # an odd ip_local_port_range: the kernel's choice then
        return _kernel_ports(count, host)
    chosen: list[int] = []
    rng = random.SystemRandom()
    for _ in range(200 * count):
        port = rng.randrange(first, low)
        if port in chosen:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    return chosen + _kernel_ports(count - len(chosen), host)


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other systems start higher (49152)


def _kernel_ports(count: int, host: str) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
