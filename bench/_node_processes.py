"""Processes the node benchmark measures (run as ``python bench/_node_processes.py KIND PORT``):

* ``fake-nvml``: the real node daemon (NVML backend, poller, app, uvicorn) over the fake
  pynvml module with 8 H100s, as on a machine with GPUs;
* ``floor``: prometheus_client's own HTTP server rendering N static samples, the floor.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fake_nvml(port: int) -> None:
    import uvicorn

    from gpuwarden.gpu.nvml import NvmlSource
    from gpuwarden.node.app import create_app
    from gpuwarden.node.poller import GpuPoller
    from tests.fakes.fake_pynvml import FakeNvml, h100

    source = NvmlSource(FakeNvml([h100(i) for i in range(8)]))
    source.start()
    poller = GpuPoller(source, hostname="bench", interval=5.0)
    poller.start()
    app = create_app(poller.latest, token="bench")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="off")


def floor(port: int, samples: int) -> None:
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    labels = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname",
              "DCGM_FI_DRIVER_VERSION"]
    per_metric = 8
    for m in range(max(1, samples // per_metric)):
        gauge = Gauge(f"floor_metric_{m}", "static", labels, registry=registry)
        for g in range(per_metric):
            gauge.labels(str(g), f"GPU-{g:08x}-1111-2222-3333-444444444444",
                         f"00000000:{g:02X}:00.0", f"nvidia{g}", "NVIDIA H100 80GB HBM3",
                         "bench", "550.54.15").set(g * 1.5)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "fake-nvml":
        fake_nvml(port)
    else:
        floor(port, int(sys.argv[3]))
