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


def parse(text: str) -> NcclRun | None:
    """The run in nccl-tests' output, or None when there is no result line in it."""
    rows = []
    for match in _ROW.finditer(text):
        cols = match.group(3).split()
        # time algbw busbw #wrong, out-of-place then in-place ("N/A" where not validated)
        numbers = [c for c in cols if re.fullmatch(r"[0-9.]+|N/A", c)]
        if len(numbers) >= 4:
            rows.append((int(match.group(1)), numbers))
    avg = _AVG.search(text)
    if not rows and avg is None:
        return None
    busbw = float(avg.group(1)) if avg else None
    wrong = sum(int(m.group(1)) for m in _OOB.finditer(text))
    if rows:
        size = max(r[0] for r in rows)
        last = [n for s, n in rows if s == size][-1]
        places = [last[i:i + 4] for i in range(0, len(last) - 3, 4)]
        bws = [float(p[2]) for p in places if p[2] != "N/A"]
        busbw = sum(bws) / len(bws) if bws else busbw
        wrong += sum(int(p[3]) for _, n in rows for p in
                     (n[i:i + 4] for i in range(0, len(n) - 3, 4)) if p[3] != "N/A")
    ranks = [(int(m.group(1)), m.group(2)) for m in _RANK.finditer(text)]
    runs = max(1, len(_HEADER.findall(text)))
    per_run = len(ranks) // runs if runs > 1 else len({r for r, _ in ranks})
    return NcclRun(per_run, tuple(dict.fromkeys(h for _, h in ranks)), runs, busbw, wrong)


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


def socket_ifname(env: dict[str, str], addrs: dict[str, list[str]]) -> str | None:
    """What ``NCCL_SOCKET_IFNAME`` should be on this node: kept when set; else the interface
    that holds the address the cluster knows the node by (``NODE_ADDR``, RunPod's per-pod
    private address); on RunPod (``NODE_ADDR`` set) with no interface holding it, ``=ens1``;
    else None (NCCL's own choice)."""
    if env.get("NCCL_SOCKET_IFNAME"):
        return env["NCCL_SOCKET_IFNAME"]
    addr = env.get("NODE_ADDR") or ""
    try:
        wanted = str(ipaddress.ip_address(addr))
    except ValueError:
        return None
    for name, held in addrs.items():
        if wanted in held:
            return f"={name}"  # '=' : exactly this interface, not every name it prefixes
    return RUNPOD_IFNAME


def main(argv: Sequence[str]) -> int:
    """The per-rank wrapper: set ``NCCL_SOCKET_IFNAME`` for this node, then execute the
    test in this process (so Slurm's MPI environment and signals reach it unchanged)."""
    if not argv:
        print("usage: python -m gpuwarden.checks.nccl COMMAND [ARG ...]", file=sys.stderr)
        return 2
    ifname = socket_ifname(dict(os.environ), interfaces())
    if ifname:
        os.environ["NCCL_SOCKET_IFNAME"] = ifname
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror or exc} on {socket.gethostname()}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
