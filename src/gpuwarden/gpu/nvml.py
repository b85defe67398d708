"""NVML backend (nvidia-ml-py).  Every NVML quirk of gpuwarden lives in this module.

* ``nvmlInit`` once; :meth:`NvmlSource.poll` reads every GPU and is called from the node's
  poller thread, never from a scrape.
* Errors are handled by class (NVML's return codes, grouped by what to do about them):

  - NOT_SUPPORTED / NO_PERMISSION: the field is omitted and the answer cached per device
    and field, so the call is not repeated every cycle;
  - GPU_IS_LOST / UNKNOWN / RESET_REQUIRED: that GPU is reported down, the others go on;
  - DRIVER_NOT_LOADED / LIB_RM_VERSION_MISMATCH / UNINITIALIZED: every GPU is reported
    down, health is degraded with the reason, and NVML is re-initialised with backoff;
  - FUNCTION_NOT_FOUND (older driver): fall back to the older call, once.

* XIDs come from an NVML event set watched by a thread of their own; they are counted per
  XID with the time last seen (NVML keeps no history from before registration).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from gpuwarden.gpu.fields import clock_events_from_mask
from gpuwarden.gpu.model import (
    GpuIdentity,
    GpuPoll,
    GpuProcess,
    GpuSample,
    HealthReadings,
    NoGpuFound,
    SourceHealth,
    XidCount,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024

# Field-value reads batched into one nvmlDeviceGetFieldValues call:
# (pynvml constant name, exported metric name).
BATCHED_FIELDS: tuple[tuple[str, str], ...] = (
    ("NVML_FI_DEV_ECC_SBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"),
    ("NVML_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"),
    ("NVML_FI_DEV_ECC_SBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL"),
    ("NVML_FI_DEV_ECC_DBE_AGG_TOTAL", "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"),
    ("NVML_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_SBE"),
    ("NVML_FI_DEV_RETIRED_DBE", "DCGM_FI_DEV_RETIRED_DBE"),
    ("NVML_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_RETIRED_PENDING"),
    ("NVML_FI_DEV_REMAPPED_COR", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"),
    ("NVML_FI_DEV_REMAPPED_UNC", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"),
    ("NVML_FI_DEV_REMAPPED_FAILURE", "DCGM_FI_DEV_ROW_REMAP_FAILURE"),
    ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"),
    ("NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"),
    ("NVML_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_MEMORY_TEMP"),
    ("NVML_FI_DEV_NVLINK_BANDWIDTH_C0_TOTAL", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"),
)

# GPM metrics (Hopper and newer): (pynvml constant, exported name, scale to DCGM's unit).
GPM_METRICS: tuple[tuple[str, str, float], ...] = (
    ("NVML_GPM_METRIC_GRAPHICS_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.01),
    ("NVML_GPM_METRIC_SM_UTIL", "DCGM_FI_PROF_SM_ACTIVE", 0.01),
    ("NVML_GPM_METRIC_ANY_TENSOR_UTIL", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0.01),
    ("NVML_GPM_METRIC_DRAM_BW_UTIL", "DCGM_FI_PROF_DRAM_ACTIVE", 0.01),
    ("NVML_GPM_METRIC_PCIE_TX_PER_SEC", "DCGM_FI_PROF_PCIE_TX_BYTES", float(MIB)),
    ("NVML_GPM_METRIC_PCIE_RX_PER_SEC", "DCGM_FI_PROF_PCIE_RX_BYTES", float(MIB)),
)

_UNSUPPORTED = ("NOT_SUPPORTED", "NO_PERMISSION")
_GPU_LOST = ("GPU_IS_LOST", "UNKNOWN", "RESET_REQUIRED")
_DRIVER_DOWN = ("DRIVER_NOT_LOADED", "LIB_RM_VERSION_MISMATCH", "UNINITIALIZED",
                "LIBRARY_NOT_FOUND")


class _GpuLost(Exception):
    pass


class _DriverDown(Exception):
    pass


class _NotFound(Exception):
    pass


@dataclass
class _Device:
    identity: GpuIdentity
    handle: Any
    unsupported: set[str] = field(default_factory=set)
    field_ids: list[tuple[int, str]] = field(default_factory=list)
    gpm_sample: Any = None
    xid_watched: bool = False
    lost: str | None = None
    # what does not change while the driver stays loaded: read once, on the first poll
    static: tuple[int | None, int | None, float | None] | None = None


@dataclass
class _XidState:
    counts: dict[int, XidCount] = field(default_factory=dict)
    last: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlSource:
    """GPUs read through NVML.  ``nvml`` is the ``pynvml`` module (injected by tests)."""

    backend = "nvml"

    def __init__(
        self,
        nvml: ModuleType | None = None,
        *,
        xid_wait_ms: int = 500,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if nvml is None:
            import pynvml as nvml
        self._nvml: Any = nvml
        self._codes = {
            getattr(nvml, name): name.removeprefix("NVML_ERROR_")
            for name in dir(nvml)
            if name.startswith("NVML_ERROR_")
        }
        self._xid_wait_ms = xid_wait_ms
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._monotonic = monotonic
        self._now = wall_clock
        self._devices: list[_Device] = []
        self._driver_version = ""
        self._cuda_version = ""
        self._initialised = False
        self._down_reason: str | None = None
        self._backoff = backoff_initial
        self._next_reinit = 0.0
        self._fallbacks: set[str] = set()  # field groups read with an older call
        self._xids: dict[str, _XidState] = {}  # by GPU uuid; survives re-init
        self._xid_lock = threading.Lock()
        self._xid_thread: threading.Thread | None = None
        self._xid_stop = threading.Event()
        self._errors: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise NVML and find the GPUs; :class:`NoGpuFound` when there are none."""
        nvml = self._nvml
        try:
            self._init()
        except nvml.NVMLError as exc:
            raise NoGpuFound(
                f"NVML could not start ({exc}): no usable NVIDIA driver on this machine. "
                "To run without GPUs, use --gpu-backend sim."
            ) from exc
        if not self._devices:
            self.close()
            raise NoGpuFound(
                "NVML found no GPU on this machine. To run without GPUs, use --gpu-backend sim."
            )

    def close(self) -> None:
        self._stop_xid_thread()
        if self._initialised:
            self._free_gpm()
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._initialised = False

    def _init(self) -> None:
        nvml = self._nvml
        nvml.nvmlInit()
        self._initialised = True
        self._driver_version = _text(nvml.nvmlSystemGetDriverVersion())
        self._cuda_version = self._read_cuda_version()
        devices = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            identity = GpuIdentity(
                index=index,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                name=_text(nvml.nvmlDeviceGetName(handle)),
                pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
                minor_number=self._minor_number(handle, index),
                driver_version=self._driver_version,
            )
            device = _Device(identity, handle)
            device.field_ids = [
                (getattr(nvml, const), metric)
                for const, metric in BATCHED_FIELDS
                if hasattr(nvml, const)
            ]
            self._start_gpm(device)
            devices.append(device)
        self._devices = devices
        self._start_xid_thread()

    def _read_cuda_version(self) -> str:
        """``nvmlSystemGetCudaDriverVersion`` (12040) as ``12.4``; "" when unsupported."""
        try:
            version = int(self._nvml.nvmlSystemGetCudaDriverVersion())
        except (self._nvml.NVMLError, AttributeError):
            return ""
        return f"{version // 1000}.{version % 1000 // 10}"

    def _minor_number(self, handle: Any, index: int) -> int:
        try:
            return int(self._nvml.nvmlDeviceGetMinorNumber(handle))
        except self._nvml.NVMLError:
            return index

    # -- polling ---------------------------------------------------------------------------

    def poll(self) -> GpuPoll:
        self._errors = {}
        if self._down_reason is not None and not self._try_reinit():
            return self._poll_result(
                tuple(self._down_sample(d, self._down_reason) for d in self._devices)
            )
        samples = []
        try:
            for device in self._devices:
                samples.append(self._read_device(device))
        except _DriverDown as exc:
            self._driver_lost(str(exc))
            samples = [self._down_sample(d, self._down_reason or "") for d in self._devices]
        return self._poll_result(tuple(samples))

    def _poll_result(self, samples: tuple[GpuSample, ...]) -> GpuPoll:
        if self._down_reason is not None:
            health = SourceHealth("degraded", self._down_reason)
        elif any(not s.up for s in samples):
            lost = [str(s.index) for s in samples if not s.up]
            health = SourceHealth("degraded", f"GPU {', '.join(lost)} not responding")
        else:
            health = SourceHealth("ok")
        return GpuPoll(
            timestamp=self._now(),
            backend=self.backend,
            gpus=samples,
            health=health,
            driver_version=self._driver_version,
            errors=dict(self._errors),
            cuda_driver_version=self._cuda_version,
        )

    def _down_sample(self, device: _Device, reason: str) -> GpuSample:
        xids, _ = self._xid_view(device)
        return GpuSample(device.identity, up=False, xids=xids, error=reason)

    def _code(self, exc: Exception) -> str:
        return self._codes.get(getattr(exc, "value", None), "UNKNOWN")

    def _call(
        self, device: _Device, key: str, fn: Callable[[], Any], *, may_fall_back: bool = False
    ) -> Any:
        """One NVML call for one field group; None when the GPU does not support it."""
        if key in device.unsupported:
            return None
        try:
            return fn()
        except self._nvml.NVMLLibraryMismatchError as exc:
            # pynvml's unversioned wrappers turn FUNCTION_NOT_FOUND into this
            if may_fall_back:
                raise _NotFound(key) from exc
            device.unsupported.add(key)
            return None
        except self._nvml.NVMLError as exc:
            code = self._code(exc)
            self._errors[code] = self._errors.get(code, 0) + 1
            if code == "FUNCTION_NOT_FOUND" and may_fall_back:
                raise _NotFound(key) from exc
            if code in _UNSUPPORTED or code == "FUNCTION_NOT_FOUND":
                device.unsupported.add(key)
                return None
            if code in _GPU_LOST:
                raise _GpuLost(f"NVML {code} on {key}") from exc
            if code in _DRIVER_DOWN:
                raise _DriverDown(f"NVML {code}: {exc}") from exc
            log.debug("GPU %d: %s failed with %s", device.identity.index, key, code)
            return None

    def _with_fallback(
        self,
        device: _Device,
        key: str,
        new: Callable[[], Any],
        old: Callable[[], Any],
    ) -> Any:
        """Call ``new``; when the driver lacks it (FUNCTION_NOT_FOUND), use ``old`` from then
        on, for every GPU, and say so once."""
        if key not in self._fallbacks:
            try:
                return self._call(device, key, new, may_fall_back=True)
            except _NotFound:
                log.warning("NVML: the driver lacks the current call for %s; using the older one",
                            key)
                self._fallbacks.add(key)
        return self._call(device, key, old)

    def _read_device(self, device: _Device) -> GpuSample:
        nvml = self._nvml
        handle = device.handle
        fields: dict[str, float] = {}
        call = self._call
        try:
            util = call(device, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
            if util is not None:
                fields["DCGM_FI_DEV_GPU_UTIL"] = float(util.gpu)
                fields["DCGM_FI_DEV_MEM_COPY_UTIL"] = float(util.memory)
            enc = call(device, "encoder", lambda: nvml.nvmlDeviceGetEncoderUtilization(handle))
            if enc is not None:
                fields["DCGM_FI_DEV_ENC_UTIL"] = float(enc[0])
            dec = call(device, "decoder", lambda: nvml.nvmlDeviceGetDecoderUtilization(handle))
            if dec is not None:
                fields["DCGM_FI_DEV_DEC_UTIL"] = float(dec[0])
            for key, clock, metric in (
                ("sm_clock", nvml.NVML_CLOCK_SM, "DCGM_FI_DEV_SM_CLOCK"),
                ("mem_clock", nvml.NVML_CLOCK_MEM, "DCGM_FI_DEV_MEM_CLOCK"),
            ):
                value = call(device, key, lambda c=clock: nvml.nvmlDeviceGetClockInfo(handle, c))
                if value is not None:
                    fields[metric] = float(value)
            temp = call(
                device,
                "temperature",
                lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            )
            if temp is not None:
                fields["DCGM_FI_DEV_GPU_TEMP"] = float(temp)
            power = call(device, "power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
            if power is not None:
                fields["DCGM_FI_DEV_POWER_USAGE"] = power / 1000.0
            limit = call(
                device, "power_limit", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
            )
            if limit is not None:
                fields["DCGM_FI_DEV_POWER_MGMT_LIMIT"] = limit / 1000.0
            self._read_memory(device, fields)
            for key, policy, metric in (
                ("power_violation", nvml.NVML_PERF_POLICY_POWER, "DCGM_FI_DEV_POWER_VIOLATION"),
                (
                    "thermal_violation",
                    nvml.NVML_PERF_POLICY_THERMAL,
                    "DCGM_FI_DEV_THERMAL_VIOLATION",
                ),
            ):
                violation = call(
                    device, key, lambda p=policy: nvml.nvmlDeviceGetViolationStatus(handle, p)
                )
                if violation is not None:
                    fields[metric] = float(violation.violationTime)
            self._read_field_values(device, fields)
            self._read_gpm(device, fields)
            mask = self._with_fallback(
                device,
                "clock_events",
                lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle),
                lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle),
            )
            clock_events = clock_events_from_mask(int(mask)) if mask is not None else {}
            processes = self._read_processes(device)
            readings = self._read_readings(device)
        except _GpuLost as exc:
            if device.lost is None:
                log.error("GPU %d (%s) lost: %s", device.identity.index, device.identity.uuid, exc)
            device.lost = str(exc)
            return self._down_sample(device, str(exc))
        if device.lost is not None:
            log.warning("GPU %d answers again", device.identity.index)
            device.lost = None
        xids, last = self._xid_view(device)
        return GpuSample(
            identity=device.identity,
            up=True,
            fields=fields,
            clock_events=clock_events,
            processes=processes,
            xids=xids,
            last_xid=last if device.xid_watched else None,
            readings=readings,
        )

    def _read_readings(self, device: _Device) -> HealthReadings:
        """The PCIe link (now and at most), the default power limit and a pending row
        remap, for the node health checks; an unsupported one is None and not asked again."""
        nvml = self._nvml
        handle = device.handle
        call = self._call
        if device.static is None:
            gen_max = call(device, "pcie_gen_max",
                           lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(handle))
            width_max = call(device, "pcie_width_max",
                             lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(handle))
            default = call(device, "power_limit_default",
                           lambda: nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
            device.static = (None if gen_max is None else int(gen_max),
                             None if width_max is None else int(width_max),
                             None if default is None else default / 1000.0)
        gen = call(device, "pcie_gen", lambda: nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle))
        width = call(device, "pcie_width", lambda: nvml.nvmlDeviceGetCurrPcieLinkWidth(handle))
        remap = call(device, "remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(handle))
        gen_max, width_max, default = device.static
        return HealthReadings(
            pcie_gen=None if gen is None else int(gen), pcie_gen_max=gen_max,
            pcie_width=None if width is None else int(width), pcie_width_max=width_max,
            power_limit_default_w=default,
            row_remap_pending=None if remap is None else bool(remap[2]))

    def _read_memory(self, device: _Device, fields: dict[str, float]) -> None:
        nvml = self._nvml
        handle = device.handle
        mem = self._with_fallback(
            device,
            "memory",
            lambda: nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2),
            lambda: nvml.nvmlDeviceGetMemoryInfo(handle),
        )
        if mem is None:
            return
        fields["DCGM_FI_DEV_FB_TOTAL"] = mem.total / MIB
        fields["DCGM_FI_DEV_FB_FREE"] = mem.free / MIB
        fields["DCGM_FI_DEV_FB_USED"] = mem.used / MIB
        reserved = getattr(mem, "reserved", None)
        if reserved is not None:
            fields["DCGM_FI_DEV_FB_RESERVED"] = reserved / MIB

    def _read_field_values(self, device: _Device, fields: dict[str, float]) -> None:
        nvml = self._nvml
        if not device.field_ids:
            return
        ids = [fid for fid, _ in device.field_ids]
        values = self._call(
            device, "field_values", lambda: nvml.nvmlDeviceGetFieldValues(device.handle, ids)
        )
        if values is None:
            return
        keep = []
        for (fid, metric), value in zip(device.field_ids, values, strict=True):
            ret = value.nvmlReturn
            if ret == nvml.NVML_SUCCESS:
                fields[metric] = self._field_value(value)
                keep.append((fid, metric))
                continue
            code = self._codes.get(ret, "UNKNOWN")
            self._errors[code] = self._errors.get(code, 0) + 1
            if code in _GPU_LOST:
                raise _GpuLost(f"NVML {code} on field {metric}")
            if code in _DRIVER_DOWN:
                raise _DriverDown(f"NVML {code}")
            if code not in _UNSUPPORTED:
                keep.append((fid, metric))
        device.field_ids = keep  # unsupported fields are never asked for again

    def _field_value(self, value: Any) -> float:
        nvml = self._nvml
        kind = value.valueType
        union = value.value
        if kind == nvml.NVML_VALUE_TYPE_DOUBLE:
            return float(union.dVal)
        if kind == nvml.NVML_VALUE_TYPE_UNSIGNED_INT:
            return float(union.uiVal)
        if kind == nvml.NVML_VALUE_TYPE_UNSIGNED_LONG:
            return float(union.ulVal)
        if kind == nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
            return float(union.sllVal)
        if kind == nvml.NVML_VALUE_TYPE_SIGNED_INT:
            return float(union.siVal)
        if kind == nvml.NVML_VALUE_TYPE_UNSIGNED_SHORT:
            return float(union.usVal)
        return float(union.ullVal)

    def _read_processes(self, device: _Device) -> tuple[GpuProcess, ...]:
        processes: dict[int, GpuProcess] = {}
        nvml = self._nvml
        handle = device.handle
        for key, kind, new, old in (
            (
                "compute_processes",
                "compute",
                nvml.nvmlDeviceGetComputeRunningProcesses,
                nvml.nvmlDeviceGetComputeRunningProcesses_v2,
            ),
            (
                "graphics_processes",
                "graphics",
                nvml.nvmlDeviceGetGraphicsRunningProcesses,
                nvml.nvmlDeviceGetGraphicsRunningProcesses_v2,
            ),
        ):
            found = self._with_fallback(device, key, lambda f=new: f(handle),
                                        lambda f=old: f(handle)) or []
            for proc in found:
                used = getattr(proc, "usedGpuMemory", None)
                if proc.pid not in processes:
                    processes[proc.pid] = GpuProcess(
                        pid=int(proc.pid),
                        used_memory_mib=None if used is None else used / MIB,
                        kind=kind,
                    )
        return tuple(sorted(processes.values(), key=lambda p: p.pid))

    # -- GPM (profiling metrics on Hopper and newer) ---------------------------------------

    def _start_gpm(self, device: _Device) -> None:
        nvml = self._nvml
        if not hasattr(nvml, "nvmlGpmQueryDeviceSupport"):
            return
        try:
            support = nvml.nvmlGpmQueryDeviceSupport(device.handle)
            if not support.isSupportedDevice:
                return
            sample = nvml.nvmlGpmSampleAlloc()
            nvml.nvmlGpmSampleGet(device.handle, sample)
        except nvml.NVMLError as exc:
            log.info("GPU %d: no GPM profiling metrics (%s)", device.identity.index, exc)
            return
        device.gpm_sample = sample

    def _read_gpm(self, device: _Device, fields: dict[str, float]) -> None:
        nvml = self._nvml
        previous = device.gpm_sample
        if previous is None:
            return
        current = self._call(device, "gpm", lambda: nvml.nvmlGpmSampleAlloc())
        if current is None:
            return
        if self._call(device, "gpm", lambda: nvml.nvmlGpmSampleGet(device.handle, current)) is None:
            nvml.nvmlGpmSampleFree(current)
            return
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.sample1 = previous
        request.sample2 = current
        wanted = [(getattr(nvml, c), m, s) for c, m, s in GPM_METRICS if hasattr(nvml, c)]
        request.numMetrics = len(wanted)
        for i, (metric_id, _, _) in enumerate(wanted):
            request.metrics[i].metricId = metric_id
        result = self._call(device, "gpm", lambda: nvml.nvmlGpmMetricsGet(request))
        nvml.nvmlGpmSampleFree(previous)
        device.gpm_sample = current
        if result is None:
            return
        for i, (_, metric, scale) in enumerate(wanted):
            entry = result.metrics[i]
            if entry.nvmlReturn == nvml.NVML_SUCCESS:
                fields[metric] = float(entry.value) * scale

    def _free_gpm(self) -> None:
        for device in self._devices:
            if device.gpm_sample is not None:
                with contextlib.suppress(self._nvml.NVMLError):
                    self._nvml.nvmlGpmSampleFree(device.gpm_sample)
                device.gpm_sample = None

    # -- driver loss and re-initialisation -------------------------------------------------

    def _driver_lost(self, reason: str) -> None:
        log.error("NVML stopped working: %s; re-initialising with backoff", reason)
        self._down_reason = reason
        self._backoff = self._backoff_initial
        self._next_reinit = self._monotonic() + self._backoff
        self.close()

    def _try_reinit(self) -> bool:
        if self._monotonic() < self._next_reinit:
            return False
        try:
            self.close()
            self._init()
        except self._nvml.NVMLError as exc:
            self._errors[self._code(exc)] = self._errors.get(self._code(exc), 0) + 1
            self._down_reason = f"NVML re-initialisation failed: {exc}"
            self._backoff = min(self._backoff * 2, self._backoff_max)
            self._next_reinit = self._monotonic() + self._backoff
            return False
        log.warning("NVML re-initialised; %d GPU(s)", len(self._devices))
        self._down_reason = None
        return True

    # -- XID events ------------------------------------------------------------------------

    def _start_xid_thread(self) -> None:
        nvml = self._nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            log.warning("NVML events unavailable (%s): XIDs will not be counted", exc)
            return
        by_index = {}
        for device in self._devices:
            try:
                nvml.nvmlDeviceRegisterEvents(
                    device.handle, nvml.nvmlEventTypeXidCriticalError, event_set
                )
            except nvml.NVMLError as exc:
                log.info("GPU %d: XID events not supported (%s)", device.identity.index, exc)
                continue
            device.xid_watched = True
            by_index[device.identity.index] = device.identity.uuid
            with self._xid_lock:
                self._xids.setdefault(device.identity.uuid, _XidState())
        if not by_index:
            nvml.nvmlEventSetFree(event_set)
            return
        self._xid_stop = threading.Event()
        self._xid_thread = threading.Thread(
            target=self._xid_loop,
            args=(event_set, by_index, self._xid_stop),
            name="gpuwarden-xid",
            daemon=True,
        )
        self._xid_thread.start()

    def _xid_loop(self, event_set: Any, by_index: dict[int, str], stop: threading.Event) -> None:
        nvml = self._nvml
        try:
            while not stop.is_set():
                try:
                    data = nvml.nvmlEventSetWait_v2(event_set, self._xid_wait_ms)
                except nvml.NVMLError_Timeout:
                    continue
                except nvml.NVMLError as exc:
                    if stop.is_set():
                        return
                    log.warning("XID event wait failed (%s); XID watch paused", exc)
                    stop.wait(self._xid_wait_ms / 1000.0)
                    if self._code(exc) in _DRIVER_DOWN:
                        return
                    continue
                if not data.eventType & nvml.nvmlEventTypeXidCriticalError:
                    continue
                try:
                    index = int(nvml.nvmlDeviceGetIndex(data.device))
                except nvml.NVMLError:
                    continue
                uuid = by_index.get(index)
                if uuid is not None:
                    self._record_xid(uuid, int(data.eventData))
        finally:
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlEventSetFree(event_set)

    def _record_xid(self, uuid: str, xid: int) -> None:
        now = self._now()
        with self._xid_lock:
            state = self._xids.setdefault(uuid, _XidState())
            previous = state.counts.get(xid)
            state.counts[xid] = XidCount(xid, (previous.count if previous else 0) + 1, now)
            state.last = xid
        log.warning("GPU %s: XID %d", uuid, xid)

    def _xid_view(self, device: _Device) -> tuple[tuple[XidCount, ...], int]:
        with self._xid_lock:
            state = self._xids.get(device.identity.uuid)
            if state is None:
                return (), 0
            return tuple(sorted(state.counts.values(), key=lambda x: x.xid)), state.last

    def _stop_xid_thread(self) -> None:
        thread = self._xid_thread
        if thread is None:
            return
        self._xid_stop.set()
        thread.join(timeout=self._xid_wait_ms / 1000.0 + 2.0)
        self._xid_thread = None
