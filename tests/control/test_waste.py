"""$ wasted today, from the real embedded store's history."""

from __future__ import annotations

import time

import httpx
import pytest

from gpuwarden.config import NodeConfig, ServeConfig
from gpuwarden.gpu.wire import snapshot_document
from gpuwarden.metrics.model import Sample, Target
from gpuwarden.metrics.scraper import Scraper, TargetState
from gpuwarden.metrics.sqlite_store import SqliteStore
from gpuwarden.services import waste
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.live import overview
from gpuwarden.state.db import StateDB


def _doc(now, gpus):
    return snapshot_document({"node": {"hostname": "n1"}, "timestamp": now, "gpus": gpus})


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
                                          last_scrape=noon, snapshot=_doc(noon, gpus))
    o = overview(cp)
    # 30 minutes of one idle GPU whose share of the node is $4/hr: $2.00 (one minute's
    # rounding either way at the window's edges)
    assert o.waste_today == pytest.approx(2.0, abs=4.0 / 60 + 1e-9)
    assert o.waste_per_hour == pytest.approx(4.0)
    store.close()


def test_waste_today_counted_incrementally_equals_a_full_recount(tmp_path):
    """Minutes that are final are counted once and kept; each refresh reads only the
    recent ones.  The figure stays what a full recount from midnight gives."""
    noon = time.mktime((*time.localtime()[:3], 12, 0, 0, 0, 0, -1))
    now = [noon - 3600]
    store = SqliteStore(tmp_path / "metrics.db", clock=lambda: now[0])
    config = ServeConfig(nodes=[NodeConfig(name="n1", url="http://127.0.0.1:1",
                                           cost_per_hour=8.0)])
    cp = ControlPlane(config=config, db=StateDB(tmp_path / "state.db"), store=store,
                      clock=lambda: now[0])
    cp.inventory.sync_config(config.cluster, config.nodes)
    cp.scraper = Scraper(cp.targets, httpx.AsyncClient(), store)
    gpus = [{"index": i, "uuid": f"GPU-{i}", "name": "H100", "up": True, "fields": {
        "DCGM_FI_DEV_GPU_UTIL": 0.0}} for i in range(2)]
    cp.scraper.states["n1"] = TargetState(Target("n1", "http://127.0.0.1:1"), up=True,
                                          last_scrape=noon, snapshot=_doc(noon, gpus))
    figures = []
    for i in range(240):  # an hour at 15 s: GPU 0 idle in bursts, GPU 1 idle every 4th
        now[0] = noon - 3600 + i * 15
        store.append([Sample("DCGM_FI_DEV_GPU_UTIL", {"node": "n1", "gpu": str(gpu)}, util,
                             now[0]) for gpu, util in ((0, 0.0 if i % 40 < 20 else 80.0),
                                                      (1, 0.0 if i % 16 < 4 else 95.0))])
        if i % 20 == 19:
            cp.views.waste_today = None  # the minute TTL passed
            incremental = waste.waste_today(cp)
            fresh = ControlPlane(config=config, db=cp.db, store=store, clock=lambda: now[0])
            fresh.scraper = cp.scraper
            full = waste.waste_today(fresh)
            figures.append(incremental)
            assert incremental == pytest.approx(full, rel=1e-12), i
    assert cp.views.waste_day is not None
    assert cp.views.waste_day.final_until > noon - 3600  # minutes were kept, not re-read
    assert figures[-1] > figures[0] > 0
    store.close()
