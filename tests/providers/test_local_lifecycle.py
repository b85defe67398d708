"""up -> status -> down on the local provider: node daemons on this machine, joined into a
real local Slurm cluster when Slurm is installed and we are root."""

from __future__ import annotations

import httpx
import pytest

from gpuwarden.providers import Runtime, down, parse_description, status, up
from gpuwarden.providers.local import slurm_available
from gpuwarden.state.inventory import Inventory

pytestmark = pytest.mark.slow


def test_local_up_status_down(db, tmp_path):
    spec = parse_description({"name": "loc", "provider": "local", "nodes": 2,
                              "gpus_per_node": 1})
    with httpx.Client(timeout=10) as http:
        rt = Runtime(http=http, env={})
        report = up(spec, db, runtime=rt)
        assert report.ready and [n.role for n in report.nodes] == ["controller", "worker"]
        pids = [n.provider_id for n in report.nodes]
        again = up(spec, db, runtime=rt)  # idempotent: the same processes
        assert [n.provider_id for n in again.nodes] == pids

        inv = {n.name: n for n in Inventory(db).nodes()}
        assert set(inv) == {"loc-node1", "loc-node2"}
        node = inv["loc-node1"]
        assert http.get(node.url + "/api/v1/snapshot").status_code == 401  # token required
        token = node.token_file.read_text().strip()
        snap = http.get(node.url + "/api/v1/snapshot",
                        headers={"Authorization": f"Bearer {token}"}).json()
        assert len(snap["gpus"]) == 1
        if slurm_available():
            summary = http.get(node.url + "/api/v1/slurm",
                               headers={"Authorization": f"Bearer {token}"}).json()
            # Slurm knows the nodes by their inventory names (so actions on alerts hit them)
            assert {n["name"] for n in summary["nodes"]} == {"loc-node1", "loc-node2"}

        st = status("loc", db, rt)
        assert [n.status for n in st.nodes] == ["RUNNING", "RUNNING"] and st.cost_so_far == 0

        result = down("loc", db, runtime=rt)
        assert sorted(result.terminated) == ["loc-node1", "loc-node2"]
        assert Inventory(db).nodes() == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                import os

                os.kill(int(pid), 0)


def test_local_budget_uses_the_price_status_shows(db, tmp_path):
    """budget_per_hour is checked against the same $/hr that `status` reports per node."""
    from gpuwarden.errors import GpuwardenError
    from gpuwarden.providers.local import LocalProvider

    spec = parse_description({"name": "pricey", "provider": "local", "nodes": 2,
                              "gpus_per_node": 2, "price_per_gpu_hour": 2.69,
                              "budget_per_hour": 1})
    with pytest.raises(GpuwardenError, match=r"would cost \$10\.76/hr, over the cap of \$1\.00"):
        up(spec, db, runtime=Runtime(env={}))
    assert Inventory(db).nodes() == []  # nothing was created
    provider = LocalProvider(tmp_path / "home", httpx.Client())
    per_node = [provider._record(spec, i, check=False).cost_per_hour for i in (1, 2)]
    assert provider.quote(spec) == pytest.approx(sum(per_node)) == pytest.approx(10.76)
