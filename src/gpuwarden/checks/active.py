"""Active checks: they load the GPUs or run a vendor tool, so they run only when what they
need is there (``needs``) and are skipped with the reason otherwise.  They run in the node
daemon's request thread, never in its poller."""

from __future__ import annotations

import importlib.util
import shutil
import time
from typing import Any

from gpuwarden.checks import nccl as nccl_test
from gpuwarden.checks.model import CheckResult
from gpuwarden.checks.nccl import run as run_tool
from gpuwarden.checks.passive import CheckContext, _alnum, _result
from gpuwarden.checks.spec import CheckSpec

# dense BF16 matmul TFLOPS a healthy GPU of the model reaches in an 8192^3 loop (typical
# measured figures, about 75 % of the data-sheet peak), by a part of its name
EXPECTED_TFLOPS: tuple[tuple[str, float], ...] = (
    ("h200", 740.0), ("h100", 700.0), ("a100", 250.0), ("l40s", 300.0), ("l4", 90.0),
    ("4090", 150.0),
)


def missing_need(spec: CheckSpec, backend: str) -> str | None:
    """Why ``spec`` cannot run on this node (``skipped: ...``), or None when it can."""
    for need in spec.needs:
        kind, _, what = need.partition(":")
        if need == "nvml" and backend != "nvml":
            return f"skipped: needs real GPUs through NVML (this node's are {backend})"
        if kind == "binary" and shutil.which(what) is None:
            return f"skipped: {what} not installed"
        if kind == "python":
            names = what.split("|")
            if not any(importlib.util.find_spec(n) is not None for n in names):
                return f"skipped: {' or '.join(names)} not installed"
    return None


def expected_tflops(model: str) -> float | None:
    name = _alnum(model)
    return next((tf for part, tf in EXPECTED_TFLOPS if part in name), None)


def gpu_burn(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """A BF16 matmul loop on every GPU for ``seconds``; each must reach ``threshold`` of the
    model's expected TFLOPS and raise no XID meanwhile."""
    model = ctx.poll.gpus[0].identity.name if ctx.poll.gpus else ""
    expect = expected_tflops(model)
    floor = expect * (spec.threshold or 0.8) if expect else None
    expected = f">= {floor:.0f} TFLOPS per GPU" if floor else "no error (no figure for model)"
    per_gpu = _burn_torch(spec.seconds, len(ctx.poll.gpus)) \
        if importlib.util.find_spec("torch") else _burn_cupy(spec.seconds, len(ctx.poll.gpus))
    slow = [f"GPU {i}: {tf:.0f}" for i, tf in per_gpu.items() if floor and tf < floor]
    figure = ", ".join(f"GPU {i}: {tf:.0f} TFLOPS" for i, tf in per_gpu.items())
    worst = min(per_gpu.values()) if per_gpu else None
    return _result(spec, not slow, "; ".join(slow) + " TFLOPS" if slow else figure, expected,
                   worst)


def _burn_torch(seconds: float, gpus: int) -> dict[int, float]:
    import torch  # only where installed: missing_need skips the check otherwise

    n = 8192
    out = {}
    for i in range(gpus):
        dev = torch.device("cuda", i)
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        torch.matmul(a, b)
        torch.cuda.synchronize(dev)
        iters, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for _ in range(10):
                torch.matmul(a, b)
            torch.cuda.synchronize(dev)
            iters += 10
        out[i] = 2 * n**3 * iters / (time.perf_counter() - began) / 1e12
    return out


def _burn_cupy(seconds: float, gpus: int) -> dict[int, float]:
    import cupy  # only where installed: missing_need skips the check otherwise

    n = 8192
    out = {}
    for i in range(gpus):
        with cupy.cuda.Device(i):
            a = cupy.random.random((n, n), dtype=cupy.float32).astype(cupy.float16)
            b = cupy.random.random((n, n), dtype=cupy.float32).astype(cupy.float16)
            cupy.matmul(a, b)
            cupy.cuda.Device(i).synchronize()
            iters, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds:
                for _ in range(10):
                    cupy.matmul(a, b)
                cupy.cuda.Device(i).synchronize()
                iters += 10
            out[i] = 2 * n**3 * iters / (time.perf_counter() - began) / 1e12
    return out


def dcgm_diag(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    code, text = run_tool(["dcgmi", "diag", "-r", str(spec.diag_level)], 3600)
    failed = [line.strip(" |") for line in text.splitlines() if "Fail" in line]
    if failed:
        figure = "; ".join(failed)[:400]
    elif code == 0:
        figure = "all tests pass"
    else:
        figure = text.splitlines()[-1][:400] if text else f"exit {code}"
    return _result(spec, code == 0 and not failed, figure,
                   f"dcgmi diag -r {spec.diag_level} passes")


def nccl(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """nccl-tests' all_reduce_perf over this node's GPUs (1 GiB, one process): the bus
    bandwidth inside the node, against ``threshold`` GB/s when given.  Across nodes the
    control plane runs it as one Slurm step instead (``services.checks``)."""
    gpus = len(ctx.poll.gpus)
    code, text = run_tool(nccl_test.node_argv(gpus), 600)
    ok, figure, bandwidth = nccl_test.judge(nccl_test.parse(text), code, text, ranks=gpus,
                                            threshold=spec.threshold,
                                            where=f"1 node x {gpus} GPUs")
    return _result(spec, ok, figure, nccl_expected(spec.threshold, "threshold"), bandwidth)


def nccl_expected(threshold: float | None, setting: str) -> str:
    return (f">= {threshold:g} GB/s bus bandwidth, no wrong value" if threshold
            else f"completes with no wrong value (set {setting}: GB/s to judge bandwidth)")


EVALUATORS: dict[str, Any] = {"gpu_burn": gpu_burn, "dcgm_diag": dcgm_diag, "nccl": nccl}
