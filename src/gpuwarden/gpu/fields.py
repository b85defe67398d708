"""The exported GPU metric catalogue.

Names, Prometheus types and help texts are dcgm-exporter's (its ``default-counters.csv``,
including the counters it ships commented out, which users enable for ECC, retired pages
and throttling), so NVIDIA's Grafana dashboard and existing alert rules work unchanged.
Units follow DCGM: MiB for framebuffer, W for power, mJ for energy, MHz for clocks, C for
temperature, % for utilization, ratios (0..1) for the DCP ``PROF`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str  # "gauge" | "counter"
    help: str


def _spec(name: str, type_: str, help_: str) -> FieldSpec:
    return FieldSpec(name, type_, help_)


FIELDS: tuple[FieldSpec, ...] = (
    # Clocks
    _spec("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    _spec("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    # Temperature
    _spec("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    _spec("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    # Power
    _spec("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    _spec("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W)."),
    _spec(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
    ),
    # PCIe
    _spec("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    # Utilization
    _spec("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    _spec("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    _spec("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %)."),
    _spec("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %)."),
    # Errors and violations
    _spec("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    _spec(
        "DCGM_FI_DEV_POWER_VIOLATION",
        "counter",
        "Throttling duration due to power constraints (in ns).",
    ),
    _spec(
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "counter",
        "Throttling duration due to thermal constraints (in ns).",
    ),
    # Memory usage
    _spec("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    _spec("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    _spec("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB)."),
    _spec("DCGM_FI_DEV_FB_TOTAL", "gauge", "Framebuffer memory total (in MiB)."),
    # ECC
    _spec(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "counter",
        "Total number of single-bit volatile ECC errors.",
    ),
    _spec(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "counter",
        "Total number of double-bit volatile ECC errors.",
    ),
    _spec(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "counter",
        "Total number of single-bit persistent ECC errors.",
    ),
    _spec(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "counter",
        "Total number of double-bit persistent ECC errors.",
    ),
    # Retired pages
    _spec(
        "DCGM_FI_DEV_RETIRED_SBE",
        "counter",
        "Total number of retired pages due to single-bit errors.",
    ),
    _spec(
        "DCGM_FI_DEV_RETIRED_DBE",
        "counter",
        "Total number of retired pages due to double-bit errors.",
    ),
    _spec("DCGM_FI_DEV_RETIRED_PENDING", "counter", "Total number of pages pending retirement."),
    # NVLink
    _spec(
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
    ),
    # Remapped rows
    _spec(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
    ),
    _spec(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for correctable errors",
    ),
    _spec("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),
    # Datacenter profiling (NVML GPM on Hopper and newer)
    _spec("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    _spec(
        "DCGM_FI_PROF_SM_ACTIVE",
        "gauge",
        "The ratio of cycles an SM has at least 1 warp assigned.",
    ),
    _spec(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
    ),
    _spec(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
    _spec(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "gauge",
        "The rate of data transmitted over the PCIe bus - including both protocol headers "
        "and data payloads - in bytes per second.",
    ),
    _spec(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "gauge",
        "The rate of data received over the PCIe bus - including both protocol headers "
        "and data payloads - in bytes per second.",
    ),
)

FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}

# Clock event (throttle) reasons, as exported in gpuwarden_clock_event_active{reason}.
# Bits are NVML's nvmlClocksEventReason* values.
CLOCK_EVENT_REASONS: tuple[tuple[str, int], ...] = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)


def clock_events_from_mask(mask: int) -> dict[str, bool]:
    return {name: bool(mask & bit) for name, bit in CLOCK_EVENT_REASONS}
