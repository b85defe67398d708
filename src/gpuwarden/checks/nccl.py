"""The NCCL all-reduce check: nccl-tests' ``all_reduce_perf``, on one node (``-g GPUS``,
NVLink/PCIe inside the node) or across nodes as one Slurm step (``srun -N K
--ntasks-per-node=GPUS all_reduce_perf -g 1``: one rank per GPU, the network between the
nodes).  Here: the command lines, the parser of nccl-tests' output, the verdict, and the
per-rank wrapper (``python -m gpuwarden.checks.nccl CMD ...``) that sets
``NCCL_SOCKET_IFNAME`` on each node before it executes the test.

nccl-tests prints, from rank 0 only when it is built with MPI (``make MPI=1``)::

    # nThread 1 nGpus 1 minBytes 1073741824 maxBytes 1073741824 step: ...
    #  Rank  0 Group  0 Pid   6899 on node-1 device  0 [0000:04:00] NVIDIA H100 80GB HBM3
    ...
    #       size         count      type   redop    root     time   algbw   busbw #wrong ...
      1073741824     268435456     float     sum      -1   6759.0  158.86  297.86      0 ...
    # Out of bounds values : 0 OK
    # Avg bus bandwidth    : 297.86

A build without MPI started by srun runs every task as its own one-GPU test: many headers,
one rank each, which is reported as such rather than read as a bandwidth."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

SIZE = "1G"  # the message size: large enough that bus bandwidth, not latency, is measured
# RunPod Instant Clusters: the private network between pods is on ens1..ens8, the address
# each pod is known by (NODE_ADDR / PRIMARY_ADDR) on ens1; eth0 is the public side
RUNPOD_IFNAME = "=ens1"

_RANK = re.compile(r"^#\s+Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+\d+\s+on\s+(\S+)", re.M)
_HEADER = re.compile(r"^# nThread \d+ nGpus \d+", re.M)
_OOB = re.compile(r"^# Out of bounds values\s*:\s*(\d+)", re.M)
_AVG = re.compile(r"^# Avg bus bandwidth\s*:\s*([0-9.]+)", re.M)
_ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+\w+\s+\w+\s+-?\d+\s+(.*)$", re.M)


@dataclass(frozen=True, slots=True)
class NcclRun:
    """What one all_reduce_perf run printed."""

    ranks: int  # ranks in the largest header (one per GPU when the ranks form one job)
    hosts: tuple[str, ...]  # the hosts its ranks ran on, as it names them
    runs: int  # how many separate tests printed a header (1 when the ranks joined up)
    busbw: float | None  # GB/s at the largest message size (mean of out- and in-place)
    wrong: int  # values the test found wrong (#wrong columns, out-of-bounds count)


def _number(text: str) -> float | None:
    """A column's value (nccl-tests prints ``#wrong`` with ``%g``: ``1e+06`` past a million);
    None for ``N/A`` (not validated) or anything else."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN: not a figure


def parse(text: str) -> NcclRun | None:
    """The run in nccl-tests' output, or None when there is no result line in it."""
    rows = []
    for match in _ROW.finditer(text):
        cols = match.group(3).split()
        # by position: time algbw busbw #wrong, out-of-place then in-place
        if len(cols) >= 4:
            rows.append((int(match.group(1)), [cols[i:i + 4] for i in range(0, len(cols) - 3, 4)]))
    avg = _AVG.search(text)
    if not rows and avg is None:
        return None
    busbw = float(avg.group(1)) if avg else None
    wrong = sum(int(m.group(1)) for m in _OOB.finditer(text))
    if rows:
        size = max(r[0] for r in rows)
        places = [p for s, ps in rows if s == size for p in ps][-2:]
        bws = [b for p in places if (b := _number(p[2])) is not None]
        busbw = sum(bws) / len(bws) if bws else busbw
        for _, ps in rows:
            for p in ps:
                count = _number(p[3])
                if p[3] != "N/A" and (count is None or count > 0):
                    wrong += int(count) if count is not None else 1  # unreadable: wrong
    ranks = [(int(m.group(1)), m.group(2)) for m in _RANK.finditer(text)]
    runs = max(1, len(_HEADER.findall(text)))
    per_run = len(ranks) // runs if runs > 1 else len({r for r, _ in ranks})
    return NcclRun(per_run, tuple(dict.fromkeys(h for _, h in ranks)), runs, busbw, wrong)


def started(text: str) -> bool:
    """Whether nccl-tests began at all (printed its header): when not, a failure is srun's
    or the launch's, and says nothing of the nodes' NCCL."""
    return _HEADER.search(text) is not None


def judge(run: NcclRun | None, code: int, text: str, *, ranks: int,
          threshold: float | None, where: str) -> tuple[bool, str, float | None]:
    """(ok, figure, GB/s) of a run that should have joined ``ranks`` GPUs; ``where`` names
    them in the figure (``2 nodes x 4 GPUs``)."""
    if run is None or run.busbw is None:
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()),
                    "")
        return False, f"all_reduce_perf failed (exit {code}): {last[:200]}".rstrip(": "), None
    if run.runs > 1:
        return False, (f"{run.runs} separate one-GPU runs, not one {ranks}-rank run: "
                       "all_reduce_perf must be built with MPI (make MPI=1) and started "
                       "through Slurm's MPI plugin (checks.checks.<name>.mpi)"), None
    if run.ranks != ranks:
        return False, f"{run.ranks} of {ranks} ranks joined ({where})", run.busbw
    if run.wrong:
        return False, f"{run.wrong} wrong values at {run.busbw:g} GB/s ({where})", run.busbw
    if code != 0:
        return False, f"exit {code} after {run.busbw:g} GB/s ({where})", run.busbw
    ok = threshold is None or run.busbw >= threshold
    return ok, f"{run.busbw:g} GB/s ({where})", run.busbw


def ring_pairs(nodes: Sequence[str]) -> list[tuple[str, str]]:
    """Each node with the next, around the ring: every node is in two pairs (more than two
    nodes), so one bad node fails both of its pairs and a good one passes at least one."""
    if len(nodes) < 3:
        return []
    return [(nodes[i], nodes[(i + 1) % len(nodes)]) for i in range(len(nodes))]


def blame(nodes: Sequence[str], pair_ok: dict[tuple[str, str], bool]) -> list[str]:
    """The nodes two or more pairs of which ran and every one failed: the ones a failed
    cluster run can be pinned on (none when the pairs pass, or when every pair fails: then
    the fault is not one node's).  A pair that could not run is no evidence."""
    bad = [n for n in nodes
           if len(mine := [ok for pair, ok in pair_ok.items() if n in pair]) >= 2
           and not any(mine)]
    return [] if len(bad) == len(nodes) else bad


def node_argv(gpus: int) -> list[str]:
    """One node, every GPU in one process: the bandwidth inside the node."""
    return ["all_reduce_perf", "-b", SIZE, "-e", SIZE, "-g", str(gpus)]


def rank_command() -> list[str]:
    """What each rank of a cross-node run executes (``SlurmActions.step`` starts one per GPU
    of every node): the wrapper, then the test on one GPU."""
    return [sys.executable, "-m", "gpuwarden.checks.nccl", "all_reduce_perf", "-b", SIZE,
            "-e", SIZE, "-g", "1"]


def run(argv: list[str], timeout: float) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    except OSError as exc:
        return -1, f"{argv[0]}: {exc.strerror or exc}"
    return done.returncode, (done.stdout + done.stderr).strip()


def interfaces() -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses (``ip -o -4 addr show``); empty where ``ip`` is
    missing."""
    code, text = run(["ip", "-o", "-4", "addr", "show"], 5)
    found: dict[str, list[str]] = {}
    if code != 0:
        return found
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            found.setdefault(parts[1].split("@")[0], []).append(parts[3].split("/")[0])
    return found


def node_address(env: dict[str, str]) -> str | None:
    """The address the cluster knows this node by: Slurm's ``NodeAddr`` for
    ``SLURMD_NODENAME`` (this rank's own node; srun hands every rank the launching node's
    environment, its ``NODE_ADDR`` included), else ``NODE_ADDR`` (RunPod's per-pod private
    address, outside Slurm)."""
    name = env.get("SLURMD_NODENAME")
    if name:
        code, text = run(["scontrol", "show", "node", "--oneliner", name], 10)
        found = re.search(r"\bNodeAddr=(\S+)", text) if code == 0 else None
        if found:
            try:
                return str(ipaddress.ip_address(found.group(1)))
            except ValueError:  # a host name: what it resolves to here
                with contextlib.suppress(OSError):
                    return socket.gethostbyname(found.group(1))
    return env.get("NODE_ADDR") or None


def socket_ifname(env: dict[str, str], addrs: dict[str, list[str]],
                  addr: str | None) -> str | None:
    """What ``NCCL_SOCKET_IFNAME`` should be on this node: kept when set; else the interface
    that holds ``addr`` (:func:`node_address`); on RunPod (``NODE_ADDR`` set) with no
    interface holding it, ``=ens1``; else None (NCCL's own choice)."""
    if env.get("NCCL_SOCKET_IFNAME"):
        return env["NCCL_SOCKET_IFNAME"]
    try:
        wanted = str(ipaddress.ip_address(addr or ""))
    except ValueError:
        wanted = ""
    for name, held in addrs.items():
        if wanted and wanted in held:
            return f"={name}"  # '=' : exactly this interface, not every name it prefixes
    return RUNPOD_IFNAME if env.get("NODE_ADDR") else None


def main(argv: Sequence[str]) -> int:
    """The per-rank wrapper: set ``NCCL_SOCKET_IFNAME`` for this node, then execute the
    test in this process (so Slurm's MPI environment and signals reach it unchanged)."""
    if not argv:
        print("usage: python -m gpuwarden.checks.nccl COMMAND [ARG ...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    ifname = socket_ifname(env, interfaces(), node_address(env))
    if ifname:
        os.environ["NCCL_SOCKET_IFNAME"] = ifname
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror or exc} on {socket.gethostname()}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
