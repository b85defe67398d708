"""$ wasted today, from the real embedded store's history."""

from __future__ import annotations

import time

import httpx
import pytest

from gpuwarden.config import NodeConfig, ServeConfig
from gpuwarden.metrics.model import Sample
from gpuwarden.metrics.scraper import Scraper, Target, TargetState
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.services.cluster import overview
from gpuwarden.services.context import ControlPlane
from gpuwarden.state.db import StateDB


def test_waste_today_counts_idle_gpu_minutes_at_their_price(tmp_path):
    noon = time.mktime((*time.localtime()[:3], 12, 0, 0, 0, 0, -1))
    now = [noon - 1800]
    store = SqliteStore(tmp_path / "metrics.db", clock=lambda: now[0])
    for i in range(121):  # 30 minutes of scrapes at 15 s: GPU 0 idle, GPU 1 busy
        now[0] = noon - 1800 + i * 15
        store.append([Sample("DCGM_FI_DEV_GPU_UTIL", {"node": "n1", "gpu": str(gpu)}, util,
                             now[0]) for gpu, util in ((0, 0.0), (1, 90.0))])
    config = ServeConfig(nodes=[NodeConfig(name="n1", url="http://127.0.0.1:1",
                                           cost_per_hour=8.0)])
    cp = ControlPlane(config=config, db=StateDB(tmp_path / "state.db"), store=store,
                      clock=lambda: noon)
    cp.inventory.sync_config(config.cluster, config.nodes)
    cp.scraper = Scraper(cp.targets, httpx.AsyncClient(), store)
    gpus = [{"index": i, "uuid": f"GPU-{i}", "name": "H100", "up": True, "fields": {
        "DCGM_FI_DEV_GPU_UTIL": u}} for i, u in ((0, 0.0), (1, 90.0))]
    cp.scraper.states["n1"] = TargetState(Target("n1", "http://127.0.0.1:1"), up=True,
                                          last_scrape=noon, snapshot={"gpus": gpus})
    o = overview(cp)
    # 30 minutes of one idle GPU whose share of the node is $4/hr: $2.00 (one minute's
    # rounding either way at the window's edges)
    assert o.waste_today == pytest.approx(2.0, abs=4.0 / 60 + 1e-9)
    assert o.waste_per_hour == pytest.approx(4.0)
    store.close()
