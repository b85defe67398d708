"""Passive checks: read from the node daemon's latest GPU poll, never an extra NVML call
(the poller reads what they need, ``GpuSample.readings`` included).  Each evaluator returns
one result per node; a figure names the GPUs that miss, the expected value what a healthy
node shows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuwarden.checks.model import CheckResult, Expectation, Verdict
from gpuwarden.checks.spec import CheckSpec
from gpuwarden.gpu.model import GpuPoll, GpuSample

# clock-event reasons that must not be active on an idle GPU (gpu.fields.CLOCK_EVENT_REASONS)
SLOWDOWNS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
             "hw_power_brake_slowdown", "sw_power_cap")


@dataclass(frozen=True, slots=True)
class CheckContext:
    poll: GpuPoll
    jobs: Mapping[int, Sequence[Any]] = field(default_factory=dict)  # GPU index -> jobs
    expect: Expectation = field(default_factory=Expectation)


def _result(spec: CheckSpec, ok: bool, figure: str, expected: str,
            value: float | None = None, verdict: Verdict | None = None) -> CheckResult:
    return CheckResult(spec.name, spec.level, verdict or ("pass" if ok else spec.severity),
                       figure, expected, spec.description, value)


def _per_gpu(spec: CheckSpec, ctx: CheckContext, expected: str,
             miss: Callable[[GpuSample], str | None], unsupported: Callable[[GpuSample], bool],
             ok_figure: str) -> CheckResult:
    """One result from a per-GPU test: ``miss`` says what is wrong with a GPU (None: fine),
    ``unsupported`` whether the GPU cannot tell."""
    gpus = [g for g in ctx.poll.gpus if g.up]
    told = [g for g in gpus if not unsupported(g)]
    if not told:
        return _result(spec, True, "skipped: no GPU reports it", expected, verdict="skip")
    misses = [f"GPU {g.index}: {why}" for g in told if (why := miss(g)) is not None]
    if misses:
        return _result(spec, False, "; ".join(misses), expected, float(len(misses)))
    return _result(spec, True, ok_figure, expected, 0.0)


def gpu_count(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    listed = len(ctx.poll.gpus)
    up = sum(g.up for g in ctx.poll.gpus)
    wanted = ctx.expect.gpus
    expected = f"{wanted} answering" if wanted is not None else f"{listed} answering"
    figure = f"{up} answering" if up == listed else f"{up} answering of {listed} listed"
    lost = [str(g.index) for g in ctx.poll.gpus if not g.up]
    if lost:
        figure += f" (GPU {', '.join(lost)} not answering)"
    ok = up == listed and (wanted is None or listed == wanted)
    return _result(spec, ok, figure, expected, float(up))


def _alnum(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def gpu_model(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    names = sorted({g.identity.name for g in ctx.poll.gpus})
    figure = ", ".join(names) or "no GPU"
    wanted = ctx.expect.model
    if wanted is None:
        return _result(spec, len(names) == 1, figure, "one model on every GPU")
    ok = bool(names) and all(_alnum(wanted) in _alnum(n) for n in names)
    return _result(spec, ok, figure, wanted)


def pcie_link(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    idle = {g.index for g in ctx.poll.gpus if g.clock_events.get("gpu_idle")}

    def miss(g: GpuSample) -> str | None:
        r = g.readings
        assert r is not None
        problems = []
        if r.pcie_width is not None and r.pcie_width_max and r.pcie_width < r.pcie_width_max:
            problems.append(f"x{r.pcie_width} of x{r.pcie_width_max}")
        # an idle GPU may lower its link generation to save power; judge it under load only
        if (r.pcie_gen is not None and r.pcie_gen_max and r.pcie_gen < r.pcie_gen_max
                and (g.index not in idle or problems)):
            problems.append(f"gen {r.pcie_gen} of gen {r.pcie_gen_max}")
        return ", ".join(problems) or None

    def unsupported(g: GpuSample) -> bool:
        r = g.readings
        return r is None or (r.pcie_width is None and r.pcie_gen is None)

    links = {(g.readings.pcie_width_max, g.readings.pcie_gen_max)
             for g in ctx.poll.gpus if g.up and g.readings is not None}
    expected = ", ".join(f"x{w} gen {gen}" for w, gen in sorted(links, key=str)) or "max link"
    return _per_gpu(spec, ctx, expected, miss, unsupported, "at max link")


def row_remap(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    def miss(g: GpuSample) -> str | None:
        if g.fields.get("DCGM_FI_DEV_ROW_REMAP_FAILURE"):
            return "row remapping failed"
        if g.readings is not None and g.readings.row_remap_pending:
            unc = g.fields.get("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 0)
            return f"row remap pending a GPU reset ({unc:.0f} uncorrectable)"
        return None

    def unsupported(g: GpuSample) -> bool:
        return "DCGM_FI_DEV_ROW_REMAP_FAILURE" not in g.fields and (
            g.readings is None or g.readings.row_remap_pending is None)

    return _per_gpu(spec, ctx, "no remap pending or failed", miss, unsupported, "none")


def retired_pages(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    limit = spec.threshold if spec.threshold is not None else 60
    worst: list[str] = []
    failed = False
    for g in ctx.poll.gpus:
        if not g.up or "DCGM_FI_DEV_RETIRED_PENDING" not in g.fields:
            continue
        pending = g.fields.get("DCGM_FI_DEV_RETIRED_PENDING", 0)
        retired = (g.fields.get("DCGM_FI_DEV_RETIRED_SBE", 0)
                   + g.fields.get("DCGM_FI_DEV_RETIRED_DBE", 0))
        if pending:
            failed = True
            worst.append(f"GPU {g.index}: {pending:.0f} pending retirement")
        elif retired > limit:
            worst.append(f"GPU {g.index}: {retired:.0f} retired")
    expected = f"none pending, at most {limit:g} retired"
    if not any("DCGM_FI_DEV_RETIRED_PENDING" in g.fields for g in ctx.poll.gpus):
        return _result(spec, True, "skipped: no GPU reports it", expected, verdict="skip")
    if failed:
        return _result(spec, False, "; ".join(worst), expected, verdict="fail")
    return _result(spec, not worst, "; ".join(worst) or "within limits", expected)


def ecc_uncorrectable(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    volatile, aggregate = [], []
    told = False
    for g in ctx.poll.gpus:
        vol = g.fields.get("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL")
        agg = g.fields.get("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL")
        told = told or vol is not None or agg is not None
        if vol:
            volatile.append(f"GPU {g.index}: {vol:.0f} volatile")
        elif agg:
            aggregate.append(f"GPU {g.index}: {agg:.0f} aggregate")
    expected = "0 uncorrectable"
    if not told:
        return _result(spec, True, "skipped: no GPU reports ECC", expected, verdict="skip")
    if volatile:
        return _result(spec, False, "; ".join(volatile + aggregate), expected,
                       float(len(volatile)))
    if aggregate:
        return _result(spec, False, "; ".join(aggregate), expected, 0.0, verdict="warn")
    return _result(spec, True, "0", expected, 0.0)


def xids(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    hardware = spec.xid_class == "hardware"
    limit = 0.0 if hardware else (spec.threshold if spec.threshold is not None else 100)
    since = ctx.expect.xids_since
    per_gpu = []
    total = 0
    for g in ctx.poll.gpus:
        found = [x for x in g.xids if x.application != hardware
                 and (since is None or x.last_seen > since)]
        count = sum(x.count for x in found)
        total += count
        if count:
            per_gpu.append(xid_figure(g.index, [(x.xid, x.count) for x in found]))
    expected = "none" if hardware else f"at most {limit:g}"
    if since is not None:
        expected += " since the last check"
    figure = "; ".join(per_gpu) or "none"
    return _result(spec, total <= limit, figure, expected, float(total))


def xid_figure(gpu: int, counts: Sequence[tuple[int, int]]) -> str:
    """``GPU 0: XID 79 x1, XID 48 x3``: the XID checks' figure (the watchdog's too)."""
    return f"GPU {gpu}: " + ", ".join(f"XID {xid} x{count}" for xid, count in counts)


def clocks_idle(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    below = spec.threshold if spec.threshold is not None else 5
    idle = [g for g in ctx.poll.gpus if g.up and not ctx.jobs.get(g.index)
            and g.fields.get("DCGM_FI_DEV_GPU_UTIL", 100) < below]
    expected = "no slowdown at idle"
    if not idle:
        return _result(spec, True, "skipped: no idle GPU to judge", expected, verdict="skip")
    misses = []
    for g in idle:
        active = [r for r in SLOWDOWNS if g.clock_events.get(r)]
        if active:
            misses.append(f"GPU {g.index}: {', '.join(active)}")
    if misses:
        return _result(spec, False, "; ".join(misses), expected, float(len(misses)))
    return _result(spec, True, f"none on {len(idle)} idle GPU(s)", expected, 0.0)


def power_limit(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    def miss(g: GpuSample) -> str | None:
        limit = g.fields.get("DCGM_FI_DEV_POWER_MGMT_LIMIT")
        default = g.readings.power_limit_default_w if g.readings else None
        if limit is None or default is None or abs(limit - default) < 1.0:
            return None
        return f"{limit:.0f} W of default {default:.0f} W"

    def unsupported(g: GpuSample) -> bool:
        return ("DCGM_FI_DEV_POWER_MGMT_LIMIT" not in g.fields or g.readings is None
                or g.readings.power_limit_default_w is None)

    return _per_gpu(spec, ctx, "the default limit", miss, unsupported, "at default")


def versions(spec: CheckSpec, ctx: CheckContext) -> CheckResult:
    """The node's own versions; the control plane compares them across the cluster."""
    figure = version_figure(ctx.poll.driver_version, ctx.poll.cuda_driver_version)
    return _result(spec, bool(ctx.poll.driver_version), figure, "the same on every node")


def version_figure(driver: str, cuda: str) -> str:
    return f"driver {driver or '?'}, CUDA {cuda or '?'}"


EVALUATORS: dict[str, Callable[[CheckSpec, CheckContext], CheckResult]] = {
    "gpu_count": gpu_count, "gpu_model": gpu_model, "pcie_link": pcie_link,
    "row_remap": row_remap, "retired_pages": retired_pages,
    "ecc_uncorrectable": ecc_uncorrectable, "xids": xids, "clocks_idle": clocks_idle,
    "power_limit": power_limit, "versions": versions,
}
