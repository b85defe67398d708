"""Simulated GPUs: plausible, correlated values for machines without an NVIDIA GPU.

Utilization is the driver: it sets power (idle floor to the board limit), power sets the
temperature (first-order lag toward ambient + thermal resistance x power), temperature and
power set the clocks and the clock-event reasons, and power integrates into a monotonic
energy counter.  Each GPU runs a load profile that can change while the source runs
(the node daemon switches it to follow Slurm's allocation).

Simulated GPUs say so: their identity has ``simulated=True`` (exported as
``gpuwarden_gpu_info{simulated="true"}``) and their UUIDs start with ``GPU-5111``.

The temperature lags its target with a time constant of 30 s, so a GPU that starts a
``thermal-throttle`` job reaches its slowdown temperature about a minute later.
``GPUWARDEN_SIM_THERMAL_LAG_S`` (seconds, > 0) sets another time constant for the sources a
process creates: the tests' live clusters use a few seconds, so as not to wait for the heat.

Faults (:data:`FAULTS`) are what the node health checks find, set apart from the load
profile (which follows Slurm): ``pcie-degraded`` (the link trained at x8 gen 3 of x16 gen 5),
``row-remap-pending`` (an uncorrectable row remapped, waiting for a GPU reset),
``gpu-missing`` (the GPU is not listed at all), ``slow`` (hardware slowdown and power brake
active even at idle, clocks at half) and ``ecc-storm`` (double-bit ECC errors growing every
poll, XID 48), ``xid-79`` (the GPU raises one XID 79, fallen off the bus, then works on:
a hardware XID that stops by itself).  ``--sim-fault`` sets them like ``--sim-profile``
(``slow`` on every GPU; ``gpu-missing`` alone hides the last one; ``1=pcie-degraded``),
and ``--sim-fault-file`` names a file in the same syntax, read again whenever it changes,
so a fault can clear while the node runs (an empty or missing file: no fault).
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpuwarden.gpu.model import (
    GpuIdentity,
    GpuPoll,
    GpuSample,
    HealthReadings,
    SourceHealth,
    XidCount,
)

log = logging.getLogger(__name__)

PROFILES: tuple[str, ...] = ("idle", "train", "inference", "thermal-throttle", "xid-storm", "lost")
FAULTS: tuple[str, ...] = ("pcie-degraded", "row-remap-pending", "gpu-missing", "slow",
                           "ecc-storm", "xid-79")

MIB = 1024 * 1024
SIM_DRIVER_VERSION = "550.54.15-sim"
SIM_CUDA_VERSION = "12.4"


@dataclass(frozen=True, slots=True)
class SimModel:
    name: str
    aliases: tuple[str, ...]
    memory_mib: int
    power_limit_w: float
    idle_power_w: float
    sm_clock_max: float
    sm_clock_idle: float
    mem_clock: float
    slowdown_temp_c: float
    datacenter: bool  # ECC, remapped rows, memory temperature, profiling metrics
    nvlink: bool
    pcie_gen: int = 5  # the link generation it trains at in a matching slot


MODELS: tuple[SimModel, ...] = (
    SimModel("NVIDIA H100 80GB HBM3", ("h100", "h100-sxm"), 81559, 700, 72, 1980, 345, 2619,
             87, True, True),
    SimModel("NVIDIA H200", ("h200",), 143771, 700, 75, 1980, 345, 3201, 87, True, True),
    SimModel("NVIDIA A100-SXM4-80GB", ("a100", "a100-80gb"), 81920, 400, 55, 1410, 210, 1593,
             85, True, True, 4),
    SimModel("NVIDIA L4", ("l4",), 23034, 72, 16, 2040, 210, 6251, 83, True, False, 4),
    SimModel("NVIDIA GeForce RTX 4090", ("rtx4090", "4090"), 24564, 450, 22, 2520, 210, 10501,
             83, False, False, 4),
)


def find_model(name: str) -> SimModel:
    wanted = name.strip().lower()
    for model in MODELS:
        if wanted == model.name.lower() or wanted in model.aliases:
            return model
    known = ", ".join(m.aliases[0] for m in MODELS)
    raise ValueError(f"unknown simulated GPU model {name!r}; choose one of: {known}")


def parse_profiles(spec: str | None, gpus: int) -> dict[int, str]:
    """``"train"`` (all GPUs) or ``"0=train,3=idle"`` (others idle) -> profile per index."""
    if not spec:
        return {i: "idle" for i in range(gpus)}
    spec = spec.strip()
    if "=" not in spec:
        _check_profile(spec)
        return {i: spec for i in range(gpus)}
    profiles = {i: "idle" for i in range(gpus)}
    for part in spec.split(","):
        index_text, _, profile = part.partition("=")
        try:
            index = int(index_text)
        except ValueError:
            raise ValueError(
                f"--sim-profile: {index_text.strip()!r} is not a GPU index; "
                "write INDEX=PROFILE, e.g. 0=train,3=idle"
            ) from None
        if not 0 <= index < gpus:
            raise ValueError(f"--sim-profile: GPU {index} does not exist (0..{gpus - 1})")
        profile = profile.strip()
        _check_profile(profile)
        profiles[index] = profile
    return profiles


def parse_faults(spec: str | None, gpus: int, source: str = "--sim-fault") -> dict[int, str]:
    """``"slow"`` (every GPU; ``gpu-missing`` alone: the last GPU), ``"1=pcie-degraded,
    2=slow"`` or ``"none"``/empty (no fault) -> fault per GPU index."""
    spec = (spec or "").strip()
    if not spec or spec == "none":
        return {}
    if "=" not in spec:
        _check_fault(spec, source)
        return {gpus - 1: spec} if spec == "gpu-missing" else {i: spec for i in range(gpus)}
    faults = {}
    for part in spec.split(","):
        index_text, _, fault = part.partition("=")
        try:
            index = int(index_text)
        except ValueError:
            raise ValueError(f"{source}: {index_text.strip()!r} is not a GPU index; write "
                             "INDEX=FAULT, e.g. 1=pcie-degraded") from None
        if not 0 <= index < gpus:
            raise ValueError(f"{source}: GPU {index} does not exist (0..{gpus - 1})")
        fault = fault.strip()
        _check_fault(fault, source)
        faults[index] = fault
    return faults


def _check_fault(fault: str, source: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"{source}: unknown fault {fault!r}; choose one of: "
                         f"{', '.join(FAULTS)} (or none)")


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(
            f"--sim-profile: unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}"
        )


@dataclass
class _GpuState:
    identity: GpuIdentity
    profile: str
    rng: random.Random
    util: float = 0.0
    temp: float = 32.0
    energy_mj: float = 0.0
    mem_used_mib: float = 0.0
    xids: dict[int, XidCount] = field(default_factory=dict)
    last_xid: int = 0
    phase: float = 0.0
    thermal_violation_ns: float = 0.0
    power_violation_ns: float = 0.0
    fault: str | None = None
    dbe_volatile: float = 0.0  # double-bit ECC errors an ecc-storm has made


# Utilization targets (mean, jitter) and memory use (fraction of total) per profile.
_UTIL = {
    "idle": (0.0, 0.0),
    "train": (94.0, 4.0),
    "inference": (45.0, 20.0),
    "thermal-throttle": (98.0, 1.5),
    "xid-storm": (60.0, 15.0),
    "lost": (0.0, 0.0),
}
_MEMORY = {"idle": 0.0, "train": 0.86, "inference": 0.55, "thermal-throttle": 0.9,
           "xid-storm": 0.5, "lost": 0.0}
_XID_STORM = (13, 31, 43, 13, 43, 79)  # mostly application faults, now and then a hardware one
_AMBIENT_C = 30.0
THERMAL_LAG_ENV = "GPUWARDEN_SIM_THERMAL_LAG_S"
THERMAL_LAG_S = 30.0  # the temperature's time constant, unless THERMAL_LAG_ENV says otherwise


def thermal_lag_s(environ: Mapping[str, str] | None = None) -> float:
    """The temperature's time constant: ``GPUWARDEN_SIM_THERMAL_LAG_S`` when set, else 30 s."""
    text = (os.environ if environ is None else environ).get(THERMAL_LAG_ENV, "").strip()
    if not text:
        return THERMAL_LAG_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise ValueError(f"{THERMAL_LAG_ENV}={text!r}: write a number of seconds above 0, "
                         f"e.g. {THERMAL_LAG_S:g}")
    return value


class SimSource:
    """N simulated GPUs of one model."""

    backend = "sim"

    def __init__(
        self,
        gpus: int = 4,
        model: SimModel | str = "h100",
        profiles: Mapping[int, str] | None = None,
        *,
        hostname: str = "localhost",
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        thermal_lag: float | None = None,
        faults: Mapping[int, str] | None = None,
        fault_file: Path | None = None,
    ) -> None:
        if gpus < 1:
            raise ValueError("--sim-gpus must be at least 1")
        self.model = find_model(model) if isinstance(model, str) else model
        self._clock = clock
        self._thermal_lag = thermal_lag_s() if thermal_lag is None else thermal_lag
        if not 0 < self._thermal_lag < math.inf:
            raise ValueError(f"thermal_lag: {thermal_lag!r} is not a number of seconds above 0")
        self._lock = threading.Lock()
        base_seed = seed if seed is not None else random.randrange(1 << 30)
        wanted = dict(profiles or {})
        for profile in wanted.values():
            _check_profile(profile)
        self._gpus = []
        for index in range(gpus):
            ident = GpuIdentity(
                index=index,
                uuid=_sim_uuid(hostname, index),
                name=self.model.name,
                pci_bus_id=f"00000000:{0x18 + 0x10 * index:02X}:00.0",
                minor_number=index,
                driver_version=SIM_DRIVER_VERSION,
                simulated=True,
            )
            state = _GpuState(ident, wanted.get(index, "idle"), random.Random(base_seed + index))
            state.phase = state.rng.uniform(0, 2 * math.pi)
            self._gpus.append(state)
        self._last = clock()
        self._settled = False  # the first poll shows each profile in its steady state
        self._base_faults = dict(faults or {})
        self.set_faults(self._base_faults)
        self._fault_file = fault_file
        self._fault_stamp: tuple[int, int] | None = None  # (mtime_ns, size) last read

    # The source protocol --------------------------------------------------------------------

    def start(self) -> None:
        self._last = self._clock()

    def close(self) -> None:
        pass

    def poll(self) -> GpuPoll:
        now = self._clock()
        self._read_fault_file()
        with self._lock:
            dt = max(0.0, now - self._last) if self._settled else 0.0
            self._settled = True
            self._last = now
            samples = tuple(self._step(g, dt, now) for g in self._gpus
                            if g.fault != "gpu-missing")
        lost = [str(s.index) for s in samples if not s.up]
        health = (
            SourceHealth("degraded", f"GPU {', '.join(lost)} not responding")
            if lost
            else SourceHealth("ok")
        )
        return GpuPoll(now, self.backend, samples, health, SIM_DRIVER_VERSION,
                       cuda_driver_version=SIM_CUDA_VERSION)

    # Control ---------------------------------------------------------------------------------

    @property
    def gpu_count(self) -> int:
        return len(self._gpus)

    def profiles(self) -> dict[int, str]:
        with self._lock:
            return {g.identity.index: g.profile for g in self._gpus}

    def set_profiles(self, profiles: Mapping[int, str]) -> None:
        """Switch GPUs to other profiles (indices not named keep theirs)."""
        for profile in profiles.values():
            _check_profile(profile)
        with self._lock:
            for g in self._gpus:
                if g.identity.index in profiles:
                    g.profile = profiles[g.identity.index]

    def faults(self) -> dict[int, str]:
        with self._lock:
            return {g.identity.index: g.fault for g in self._gpus if g.fault}

    def set_faults(self, faults: Mapping[int, str]) -> None:
        """The GPUs' faults from now on (a GPU not named has none)."""
        for fault in faults.values():
            _check_fault(fault, "faults")
        with self._lock:
            for g in self._gpus:
                g.fault = faults.get(g.identity.index)

    def _read_fault_file(self) -> None:
        """Apply the fault file when it changed since the last poll; a file that does not
        parse is logged and the faults stay as they were."""
        if self._fault_file is None:
            return
        try:
            st = self._fault_file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._fault_stamp:
            return
        self._fault_stamp = stamp
        try:
            text = self._fault_file.read_text() if stamp is not None else ""
            faults = parse_faults(text, len(self._gpus), str(self._fault_file))
        except (OSError, ValueError) as exc:
            log.warning("simulated faults unchanged: %s", exc)
            return
        self.set_faults(faults if stamp is not None else self._base_faults)

    # Physics ---------------------------------------------------------------------------------

    def _step(self, g: _GpuState, dt: float, now: float) -> GpuSample:
        m = self.model
        if g.profile == "lost":
            g.util = 0.0
            return GpuSample(g.identity, up=False, xids=tuple(g.xids.values()),
                             error="GPU is lost (simulated)")
        mean, jitter = _UTIL[g.profile]
        g.phase += dt / 60.0
        target = mean + jitter * (0.6 * math.sin(g.phase) + 0.4 * g.rng.uniform(-1, 1))
        target = min(100.0, max(0.0, target))
        # utilization follows its target within a couple of seconds
        g.util = target if dt == 0 else g.util + (target - g.util) * min(1.0, dt / 2.0)
        util = g.util / 100.0

        power = m.idle_power_w + (m.power_limit_w - m.idle_power_w) * util**0.85
        if g.profile == "thermal-throttle":
            # a failing fan: the heat has nowhere to go
            resistance = (m.slowdown_temp_c + 8 - _AMBIENT_C) / m.power_limit_w
        else:
            resistance = (m.slowdown_temp_c - 17 - _AMBIENT_C) / m.power_limit_w
        temp_target = _AMBIENT_C + resistance * power
        g.temp = temp_target if dt == 0 else g.temp + (temp_target - g.temp) * min(
            1.0, dt / self._thermal_lag)

        thermal = g.temp >= m.slowdown_temp_c
        power_capped = power >= m.power_limit_w * 0.98 and not thermal
        slow = g.fault == "slow"
        if slow:  # a broken power brake or slowdown line: half clocks whatever the load
            sm_clock = m.sm_clock_max * 0.5 if util else m.sm_clock_idle
        elif util == 0.0:
            sm_clock = m.sm_clock_idle
        elif thermal:
            sm_clock = m.sm_clock_max * 0.55
            power *= 0.8
        elif power_capped:
            sm_clock = m.sm_clock_max * 0.9
        else:
            sm_clock = m.sm_clock_max
        g.energy_mj += power * dt * 1000.0
        if thermal:
            g.thermal_violation_ns += dt * 1e9
        if power_capped:
            g.power_violation_ns += dt * 1e9

        mem_target = _MEMORY[g.profile] * m.memory_mib
        g.mem_used_mib = mem_target if dt == 0 else g.mem_used_mib + (
            mem_target - g.mem_used_mib) * min(1.0, dt / 5.0)
        reserved = min(512.0, m.memory_mib * 0.01)
        used = round(g.mem_used_mib + (g.rng.uniform(0, 64) if g.mem_used_mib else 0))
        used = min(used, m.memory_mib - reserved)

        fields: dict[str, float] = {
            "DCGM_FI_DEV_GPU_UTIL": round(g.util),
            "DCGM_FI_DEV_MEM_COPY_UTIL": round(g.util * (0.45 if g.profile == "train" else 0.3)),
            "DCGM_FI_DEV_ENC_UTIL": 0.0,
            "DCGM_FI_DEV_DEC_UTIL": 0.0,
            "DCGM_FI_DEV_SM_CLOCK": round(sm_clock),
            "DCGM_FI_DEV_MEM_CLOCK": m.mem_clock,
            "DCGM_FI_DEV_GPU_TEMP": round(g.temp),
            "DCGM_FI_DEV_POWER_USAGE": round(power, 3),
            "DCGM_FI_DEV_POWER_MGMT_LIMIT": m.power_limit_w,
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": round(g.energy_mj),
            "DCGM_FI_DEV_FB_TOTAL": float(m.memory_mib),
            "DCGM_FI_DEV_FB_USED": float(used),
            "DCGM_FI_DEV_FB_RESERVED": reserved,
            "DCGM_FI_DEV_FB_FREE": m.memory_mib - reserved - used,
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": 0.0,
            "DCGM_FI_DEV_POWER_VIOLATION": round(g.power_violation_ns),
            "DCGM_FI_DEV_THERMAL_VIOLATION": round(g.thermal_violation_ns),
        }
        if m.datacenter:
            fields.update({
                "DCGM_FI_DEV_MEMORY_TEMP": round(g.temp + 4),
                "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 0.0,
                "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0.0,
                "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": 0.0,
                "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": 0.0,
                "DCGM_FI_DEV_RETIRED_SBE": 0.0,
                "DCGM_FI_DEV_RETIRED_DBE": 0.0,
                "DCGM_FI_DEV_RETIRED_PENDING": 0.0,
                "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": 0.0,
                "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": 0.0,
                "DCGM_FI_DEV_ROW_REMAP_FAILURE": 0.0,
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE": round(util * 0.97, 4),
                "DCGM_FI_PROF_SM_ACTIVE": round(util * 0.9, 4),
                "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": round(
                    util * (0.55 if g.profile in ("train", "thermal-throttle") else 0.25), 4),
                "DCGM_FI_PROF_DRAM_ACTIVE": round(util * 0.6, 4),
                "DCGM_FI_PROF_PCIE_TX_BYTES": round(util * 2.1e9),
                "DCGM_FI_PROF_PCIE_RX_BYTES": round(util * 3.4e9),
            })
        if m.nvlink:
            fields["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"] = 0.0
        if m.datacenter and g.fault == "row-remap-pending":
            fields["DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"] = 1.0
        if m.datacenter and g.fault == "ecc-storm":
            g.dbe_volatile += 3
            fields["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] = g.dbe_volatile
            fields["DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"] = g.dbe_volatile
            fields["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"] = g.dbe_volatile * 40
            previous = g.xids.get(48)
            g.xids[48] = XidCount(48, (previous.count if previous else 0) + 1, now)
            g.last_xid = 48
        if g.fault == "xid-79" and 79 not in g.xids:  # once: the XID stops by itself
            g.xids[79] = XidCount(79, 1, now)
            g.last_xid = 79

        if g.profile == "xid-storm" and g.rng.random() < 0.5:
            xid = g.rng.choice(_XID_STORM)
            previous = g.xids.get(xid)
            g.xids[xid] = XidCount(xid, (previous.count if previous else 0) + 1, now)
            g.last_xid = xid

        clock_events = {
            "gpu_idle": util == 0.0,
            "applications_clocks_setting": False,
            "sw_power_cap": power_capped,
            "hw_slowdown": thermal or slow,
            "sync_boost": False,
            "sw_thermal_slowdown": thermal,
            "hw_thermal_slowdown": thermal,
            "hw_power_brake_slowdown": slow,
            "display_clock_setting": False,
        }
        return GpuSample(
            identity=g.identity,
            up=True,
            fields=fields,
            clock_events=clock_events,
            xids=tuple(sorted(g.xids.values(), key=lambda x: x.xid)),
            last_xid=g.last_xid,
            readings=self._readings(g),
        )

    def _readings(self, g: _GpuState) -> HealthReadings:
        gen, width = (3, 8) if g.fault == "pcie-degraded" else (self.model.pcie_gen, 16)
        return HealthReadings(
            pcie_gen=gen, pcie_gen_max=self.model.pcie_gen, pcie_width=width,
            pcie_width_max=16, power_limit_default_w=self.model.power_limit_w,
            row_remap_pending=(g.fault == "row-remap-pending") if self.model.datacenter
            else None)


def _sim_uuid(hostname: str, index: int) -> str:
    u = uuid.uuid5(uuid.NAMESPACE_DNS, f"gpuwarden-sim.{hostname}.{index}")
    return "GPU-5111" + str(u)[4:]
