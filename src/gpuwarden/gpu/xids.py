"""What common XIDs mean and what to do about them, in plain words (from NVIDIA's XID
catalogue, docs.nvidia.com/deploy/xid-errors).  Shared by the ops agent's node doctor and
anything else that explains an XID to a person."""

from __future__ import annotations

from gpuwarden.gpu.model import is_application_xid

XID_MEANINGS: dict[int, str] = {
    13: "graphics engine exception: usually a bug in the application (bad memory access)",
    31: "GPU memory page fault: usually an application bug (illegal address)",
    43: "GPU stopped processing: the application hit an error; usually not the hardware",
    45: "preemptive cleanup after the application was killed or hung",
    48: "double-bit ECC error: uncorrectable memory error; drain the node and reset the GPU",
    61: "internal micro-controller breakpoint/warning: reset the GPU if it repeats",
    62: "internal micro-controller halt: reset the GPU",
    63: "ECC page retirement or row remapping recorded: watch for more; reset when convenient",
    64: "ECC page retirement or row remapping failed: the GPU needs service",
    68: "video processor exception: usually an application problem",
    74: "NVLink error: check the NVLink connections; reset the GPU, service if it repeats",
    79: "GPU has fallen off the bus: drain the node; power-cycle it and check the hardware",
    92: "high single-bit ECC error rate: memory degrading, plan service",
    94: "contained ECC error: the affected application was stopped; the GPU keeps working",
    95: "uncontained ECC error: all applications on the GPU are affected; reset the GPU",
    119: "GSP RPC timeout: reset the GPU; update the driver if it repeats",
    120: "GSP error: reset the GPU; update the driver if it repeats",
}


def describe_xid(xid: int) -> str:
    meaning = XID_MEANINGS.get(xid)
    kind = "application" if is_application_xid(xid) else "hardware/driver"
    if meaning is None:
        return f"XID {xid} ({kind}): see NVIDIA's XID catalogue"
    return f"XID {xid} ({kind}): {meaning}"
