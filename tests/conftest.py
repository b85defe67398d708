from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPUWARDEN_SHARED", ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"


def reference_file(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference file {path} is missing: the tests read ../shared/reference "
                    "(set GPUWARDEN_SHARED to its parent folder)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, proc: subprocess.Popen[str], url: str, token: str | None) -> None:
        self.proc = proc
        self.url = url
        self.token = token

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return httpx.get(self.url + path, headers=headers, timeout=5)


def start_daemon(args: list[str], token: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 20.0) -> Daemon:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "node", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code in (200, 503):
                return Daemon(proc, url, token)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("daemon did not answer /healthz in time")


@pytest.fixture
def daemon_factory() -> Iterator:
    started: list[Daemon] = []

    def factory(args: list[str], token: str | None = None, **kw) -> Daemon:
        d = start_daemon(args, token, **kw)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.proc.terminate()
        try:
            d.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            d.proc.kill()
