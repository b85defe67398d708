"""A fake of the ``pynvml`` module (nvidia-ml-py) for machines without a GPU.

It is built from the real module: the constants, the exception classes
(``NVMLError_NotSupported``, ...), ``NVMLLibraryMismatchError`` and the ctypes structures it
returns (``c_nvmlMemory_v2_t``, ``c_nvmlFieldValue_t``, ``c_nvmlEventData_t``,
``c_nvmlGpmMetricsGet_t``, opaque ``c_nvmlDevice_t`` handles) are the real ones.  Only the
C library behind the functions is replaced by scenario data, and the fake raises what NVML
raises (``NVMLError(NVML_ERROR_*)``), never anything friendlier:

* any call before ``nvmlInit`` or after ``nvmlShutdown``: UNINITIALIZED;
* driver unloaded: DRIVER_NOT_LOADED (``nvmlInit`` included); handles from before a driver
  reload are stale: UNINITIALIZED;
* a lost GPU: GPU_IS_LOST on every call with its handle;
* a function a GPU lacks: NOT_SUPPORTED; a function the driver lacks: FUNCTION_NOT_FOUND
  (and ``NVMLLibraryMismatchError`` from the unversioned wrappers, as pynvml does);
* field values a GPU lacks: NOT_SUPPORTED in that entry's ``nvmlReturn``.
"""

from __future__ import annotations

import ctypes
import queue
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import pynvml as real

# pynvml functions whose wrapper is decorated with throwOnVersionMismatch
_UNVERSIONED = {"nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"}


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    pci_bus_id: str = "00000000:18:00.0"
    minor: int = 0
    memory_total: int = 81559 * 1024 * 1024
    memory_used: int = 0
    memory_reserved: int = 512 * 1024 * 1024
    util_gpu: int = 0
    util_memory: int = 0
    util_encoder: int = 0
    util_decoder: int = 0
    sm_clock: int = 1980
    mem_clock: int = 2619
    temperature: int = 34
    power_mw: int = 72000
    power_limit_mw: int = 700000
    clock_reasons: int = 0
    violation_power_ns: int = 0
    violation_thermal_ns: int = 0
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)
    # NVML field id -> value (absent: NOT_SUPPORTED)
    field_values: dict[int, float] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)  # function names -> NOT_SUPPORTED
    xid_events: bool = True
    gpm: dict[int, float] | None = None  # GPM metric id -> value; None: not supported
    lost: bool = False
    pcie_gen: int = 5
    pcie_gen_max: int = 5
    pcie_width: int = 16
    pcie_width_max: int = 16
    power_limit_default_mw: int = 700000
    remapped_rows: tuple[int, int, int, int] = (1, 0, 0, 0)  # corr, unc, pending, failure


def h100(index: int) -> FakeGpu:
    """A healthy H100 SXM under load."""
    return FakeGpu(
        uuid=f"GPU-{index:08x}-1111-2222-3333-444444444444",
        pci_bus_id=f"00000000:{0x18 + index * 0x10:02X}:00.0",
        minor=index,
        memory_used=(40_000 + index) * 1024 * 1024,
        util_gpu=90 + index % 10,
        util_memory=40,
        temperature=60 + index,
        power_mw=550_000 + index * 1000,
        field_values={
            real.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: 0,
            real.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: 0,
            real.NVML_FI_DEV_ECC_SBE_AGG_TOTAL: 3,
            real.NVML_FI_DEV_ECC_DBE_AGG_TOTAL: 0,
            real.NVML_FI_DEV_RETIRED_SBE: 0,
            real.NVML_FI_DEV_RETIRED_DBE: 0,
            real.NVML_FI_DEV_RETIRED_PENDING: 0,
            real.NVML_FI_DEV_REMAPPED_COR: 1,
            real.NVML_FI_DEV_REMAPPED_UNC: 0,
            real.NVML_FI_DEV_REMAPPED_FAILURE: 0,
            real.NVML_FI_DEV_PCIE_REPLAY_COUNTER: 0,
            real.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: 123_456_789,
            real.NVML_FI_DEV_MEMORY_TEMP: 70,
            real.NVML_FI_DEV_NVLINK_BANDWIDTH_C0_TOTAL: 987_654,
        },
        gpm={
            real.NVML_GPM_METRIC_GRAPHICS_UTIL: 93.0,
            real.NVML_GPM_METRIC_SM_UTIL: 88.0,
            real.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 51.0,
            real.NVML_GPM_METRIC_DRAM_BW_UTIL: 62.0,
            real.NVML_GPM_METRIC_PCIE_TX_PER_SEC: 100.0,
            real.NVML_GPM_METRIC_PCIE_RX_PER_SEC: 200.0,
        },
    )


def consumer_gpu() -> FakeGpu:
    """A GeForce card: no ECC, no remapping, no memory temperature, no profiling, no
    encoder stats, and power limit reading refused without privileges."""
    return FakeGpu(
        name="NVIDIA GeForce RTX 3060",
        uuid="GPU-3060aaaa-0000-0000-0000-000000000000",
        memory_total=12288 * 1024 * 1024,
        memory_used=900 * 1024 * 1024,
        util_gpu=7,
        power_mw=35000,
        power_limit_mw=170000,
        field_values={
            real.NVML_FI_DEV_PCIE_REPLAY_COUNTER: 0,
            real.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: 5_000_000,
        },
        unsupported={
            "nvmlDeviceGetEncoderUtilization",
            "nvmlDeviceGetViolationStatus",
            "nvmlDeviceGetEnforcedPowerLimit",
            "nvmlDeviceGetRemappedRows",
        },
        xid_events=False,
    )


def _raise(code: int) -> None:
    raise real.NVMLError(code)


class FakeNvml(types.ModuleType):
    """Install with ``NvmlSource(nvml=FakeNvml([...]))``."""

    def __init__(self, gpus: list[FakeGpu], *, driver_version: str = "550.54.15",
                 old_driver: bool = False, cuda_version: int = 12040) -> None:
        super().__init__("pynvml")
        for name in dir(real):
            if name.startswith(("NVML", "nvmlClocks", "nvmlEventType", "nvmlMemory", "c_",
                                "struct_")) and not callable(getattr(self, name, None)):
                value = getattr(real, name)
                if not (callable(value) and name.startswith("nvml")):
                    setattr(self, name, value)
        self.gpus = gpus
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.old_driver = old_driver  # lacks the *_v2/_v3 and "ClocksEvent" entry points
        self.driver_loaded = True
        self.initialised = 0
        self.generation = 0
        self.calls: dict[str, int] = {}
        self._handles: dict[int, tuple[int, int]] = {}  # address -> (generation, index)
        self._keep: list[Any] = []
        self._events: queue.Queue[tuple[int, int]] = queue.Queue()
        self._event_sets: dict[int, set[int]] = {}
        self._gpm_samples: dict[int, tuple[int, dict[int, float]]] = {}
        self._lock = threading.Lock()
        for name in _FUNCTIONS:
            setattr(self, name, self._wrap(name, getattr(self, "_" + name)))

    # -- scenario controls -----------------------------------------------------------------

    def unload_driver(self) -> None:
        self.driver_loaded = False

    def load_driver(self) -> None:
        self.driver_loaded = True
        self.generation += 1  # every handle and init from before is stale

    def inject_xid(self, index: int, xid: int) -> None:
        self._events.put((index, xid))

    # -- plumbing --------------------------------------------------------------------------

    def _wrap(self, name: str, impl: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            if not self.driver_loaded:
                _raise(real.NVML_ERROR_DRIVER_NOT_LOADED)
            if name != "nvmlInit" and self.initialised <= 0:
                _raise(real.NVML_ERROR_UNINITIALIZED)
            return impl(*args, **kwargs)

        call.__name__ = name
        return call

    def _gpu(self, handle: Any, function: str) -> FakeGpu:
        try:
            address = ctypes.addressof(handle.contents)
        except (AttributeError, TypeError, ValueError):
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        generation, index = self._handles.get(address, (-1, -1))
        if index < 0:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        if generation != self.generation:
            _raise(real.NVML_ERROR_UNINITIALIZED)
        gpu = self.gpus[index]
        if gpu.lost:
            _raise(real.NVML_ERROR_GPU_IS_LOST)
        if function in gpu.unsupported:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _new_driver_only(self) -> None:
        if self.old_driver:
            _raise(real.NVML_ERROR_FUNCTION_NOT_FOUND)

    # -- library ---------------------------------------------------------------------------

    def _nvmlInit(self) -> None:
        if self.initialised and self._init_generation != self.generation:
            self.initialised = 0
        self.initialised += 1
        self._init_generation = self.generation

    def _nvmlShutdown(self) -> None:
        self.initialised -= 1

    def _nvmlSystemGetDriverVersion(self) -> str:
        return self.driver_version

    def _nvmlDeviceGetCount(self) -> int:
        if self._init_generation != self.generation:
            _raise(real.NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def _nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if not 0 <= index < len(self.gpus):
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        handle = ctypes.pointer(real.struct_c_nvmlDevice_t())
        self._keep.append(handle)
        self._handles[ctypes.addressof(handle.contents)] = (self.generation, index)
        return handle

    def _nvmlDeviceGetIndex(self, handle: Any) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetIndex")
        return self.gpus.index(gpu)

    # -- identity --------------------------------------------------------------------------

    def _nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def _nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def _nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetPciInfo")
        info = real.nvmlPciInfo_t()
        info.busId = gpu.pci_bus_id.encode()
        return info

    def _nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetMinorNumber").minor

    # -- readings --------------------------------------------------------------------------

    def _nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        util = real.c_nvmlUtilization_t()
        util.gpu, util.memory = gpu.util_gpu, gpu.util_memory
        return util

    def _nvmlDeviceGetEncoderUtilization(self, handle: Any) -> list[int]:
        return [self._gpu(handle, "nvmlDeviceGetEncoderUtilization").util_encoder, 167000]

    def _nvmlDeviceGetDecoderUtilization(self, handle: Any) -> list[int]:
        return [self._gpu(handle, "nvmlDeviceGetDecoderUtilization").util_decoder, 167000]

    def _nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetClockInfo")
        if type == real.NVML_CLOCK_SM:
            return gpu.sm_clock
        if type == real.NVML_CLOCK_MEM:
            return gpu.mem_clock
        _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return 0

    def _nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTemperature")
        if sensor != real.NVML_TEMPERATURE_GPU:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature

    def _nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_mw

    def _nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def _nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerManagementDefaultLimit").power_limit_default_mw

    def _nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda_version

    def _nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrPcieLinkGeneration").pcie_gen

    def _nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetMaxPcieLinkGeneration").pcie_gen_max

    def _nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width

    def _nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetMaxPcieLinkWidth").pcie_width_max

    def _nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        return self._gpu(handle, "nvmlDeviceGetRemappedRows").remapped_rows

    def _nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        if version:
            self._new_driver_only()  # nvmlDeviceGetMemoryInfo_v2 is missing on old drivers
            if version != real.nvmlMemory_v2:
                _raise(real.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
            mem = real.c_nvmlMemory_v2_t()
            mem.version = version
            mem.reserved = gpu.memory_reserved
            mem.used = gpu.memory_used
            mem.free = gpu.memory_total - gpu.memory_used - gpu.memory_reserved
        else:
            mem = real.c_nvmlMemory_t()
            mem.used = gpu.memory_used + gpu.memory_reserved
            mem.free = gpu.memory_total - mem.used
        mem.total = gpu.memory_total
        return mem

    def _nvmlDeviceGetViolationStatus(self, device: Any, perfPolicyType: int) -> Any:
        gpu = self._gpu(device, "nvmlDeviceGetViolationStatus")
        value = real.c_nvmlViolationTime_t()
        value.referenceTime = 1
        value.violationTime = (
            gpu.violation_power_ns if perfPolicyType == real.NVML_PERF_POLICY_POWER
            else gpu.violation_thermal_ns
        )
        return value

    def _nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        self._new_driver_only()
        return gpu.clock_reasons

    def _nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").clock_reasons

    def _nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[int]) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
        values = (real.c_nvmlFieldValue_t * len(fieldIds))()
        for i, fid in enumerate(fieldIds):
            values[i].fieldId = fid
            if fid in gpu.field_values:
                values[i].nvmlReturn = real.NVML_SUCCESS
                values[i].valueType = real.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                values[i].value.ullVal = int(gpu.field_values[fid])
            else:
                values[i].nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
        return values

    def _processes(self, handle: Any, function: str) -> list[Any]:
        gpu = self._gpu(handle, function)
        return [
            real.nvmlFriendlyObject({"pid": pid, "usedGpuMemory": used, "gpuInstanceId": 0xFFFFFFFF,
                                     "computeInstanceId": 0xFFFFFFFF})
            for pid, used in gpu.processes
        ]

    def _nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        if self.old_driver:  # the _v3 entry point is missing: pynvml re-raises it like this
            raise real.NVMLLibraryMismatchError("Unversioned function called and the pyNVML "
                                                "version does not match the NVML lib version.")
        return self._processes(handle, "nvmlDeviceGetComputeRunningProcesses")

    def _nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any) -> list[Any]:
        return self._processes(handle, "nvmlDeviceGetComputeRunningProcesses")

    def _nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]:
        if self.old_driver:
            raise real.NVMLLibraryMismatchError("Unversioned function called and the pyNVML "
                                                "version does not match the NVML lib version.")
        return []

    def _nvmlDeviceGetGraphicsRunningProcesses_v2(self, handle: Any) -> list[Any]:
        return []

    # -- events ----------------------------------------------------------------------------

    def _nvmlEventSetCreate(self) -> Any:
        event_set = ctypes.pointer(real.struct_c_nvmlEventSet_t())
        self._keep.append(event_set)
        self._event_sets[ctypes.addressof(event_set.contents)] = set()
        return event_set

    def _nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        gpu = self._gpu(handle, "nvmlDeviceRegisterEvents")
        if eventTypes & real.nvmlEventTypeXidCriticalError and not gpu.xid_events:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        self._event_sets[ctypes.addressof(eventSet.contents)].add(self.gpus.index(gpu))

    def _nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any:
        registered = self._event_sets.get(ctypes.addressof(eventSet.contents))
        if registered is None:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        try:
            index, xid = self._events.get(timeout=timeoutms / 1000.0)
        except queue.Empty:
            _raise(real.NVML_ERROR_TIMEOUT)
        if not self.driver_loaded:
            _raise(real.NVML_ERROR_DRIVER_NOT_LOADED)
        if index not in registered:
            _raise(real.NVML_ERROR_TIMEOUT)
        data = real.c_nvmlEventData_t()
        handle = self._nvmlDeviceGetHandleByIndex(index)
        data.device = handle
        data.eventType = real.nvmlEventTypeXidCriticalError
        data.eventData = xid
        return data

    def _nvmlEventSetFree(self, eventSet: Any) -> None:
        self._event_sets.pop(ctypes.addressof(eventSet.contents), None)

    # -- GPM -------------------------------------------------------------------------------

    def _nvmlGpmQueryDeviceSupport(self, device: Any) -> Any:
        gpu = self._gpu(device, "nvmlGpmQueryDeviceSupport")
        support = real.c_nvmlGpmSupport_t()
        support.version = real.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = 1 if gpu.gpm is not None else 0
        return support

    def _nvmlGpmSampleAlloc(self) -> Any:
        sample = ctypes.pointer(real.struct_c_nvmlGpmSample_t())
        self._keep.append(sample)
        self._gpm_samples[ctypes.addressof(sample.contents)] = (-1, {})
        return sample

    def _nvmlGpmSampleGet(self, device: Any, gpmSample: Any) -> Any:
        gpu = self._gpu(device, "nvmlGpmSampleGet")
        if gpu.gpm is None:
            _raise(real.NVML_ERROR_NOT_SUPPORTED)
        self._gpm_samples[ctypes.addressof(gpmSample.contents)] = (self.gpus.index(gpu),
                                                                dict(gpu.gpm))
        return gpmSample

    def _nvmlGpmMetricsGet(self, metricsGet: Any) -> Any:
        if metricsGet.version != real.NVML_GPM_METRICS_GET_VERSION:
            _raise(real.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        first = self._gpm_samples.get(ctypes.addressof(metricsGet.sample1.contents))
        second = self._gpm_samples.get(ctypes.addressof(metricsGet.sample2.contents))
        if first is None or second is None or first[0] < 0 or first[0] != second[0]:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)
        for i in range(metricsGet.numMetrics):
            metric = metricsGet.metrics[i]
            if metric.metricId in second[1]:
                metric.nvmlReturn = real.NVML_SUCCESS
                metric.value = second[1][metric.metricId]
            else:
                metric.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
        return metricsGet

    def _nvmlGpmSampleFree(self, gpmSample: Any) -> None:
        if self._gpm_samples.pop(ctypes.addressof(gpmSample.contents), None) is None:
            _raise(real.NVML_ERROR_INVALID_ARGUMENT)


_FUNCTIONS = [
    name[1:]
    for name in vars(FakeNvml)
    if name.startswith("_nvml")
]
