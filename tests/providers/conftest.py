from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpuwarden.providers import Runtime
from gpuwarden.state.db import StateDB
from tests.conftest import reference_file
from tests.providers.fake_runpod import FakeRunPod


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    state = StateDB(tmp_path / "home" / "state.db")
    yield state
    state.close()


@pytest.fixture
def fake_runpod() -> Iterator[FakeRunPod]:
    server = FakeRunPod(reference_file("runpod", "openapi-v2.json")).start()
    yield server
    server.stop()


@pytest.fixture
def runtime(fake_runpod: FakeRunPod) -> Iterator[Runtime]:
    with httpx.Client(timeout=10) as http:
        yield Runtime(http=http, env={"RUNPOD_API_KEY": fake_runpod.api_key},
                      runpod_base_url=fake_runpod.url, runpod_node_url=fake_runpod.node_url(),
                      runpod_poll_s=0.1, start_timeout_s=30)


def runpod_spec(name: str = "dev", nodes: int = 3, **extra: object) -> dict[str, object]:
    return {"name": name, "provider": "runpod", "nodes": nodes, "gpus_per_node": 2,
            "gpu_type": "NVIDIA GeForce RTX 4090", **extra}
