from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gpuwarden import __version__
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


NODE_IMAGE = "ghcr.io/example/gpuwarden-node:0.1.0"  # deploy/node.Dockerfile's image


def runpod_spec(name: str = "dev", nodes: int = 3, **extra: object) -> dict[str, object]:
    """A RunPod cluster file; its pods run an image with gpuwarden inside unless
    ``runpod={"install": ...}`` says otherwise."""
    runpod = {"install": {"image": NODE_IMAGE}, **extra.pop("runpod", {})}  # type: ignore[dict-item]
    return {"name": name, "provider": "runpod", "nodes": nodes, "gpus_per_node": 2,
            "gpu_type": "NVIDIA GeForce RTX 4090", "runpod": runpod, **extra}


WHEEL = f"gpuwarden-{__version__}-py3-none-any.whl"  # a wheel file name of this version


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wheel_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server for wheels in a directory: (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
