"""Where a running control plane can be found: one runtime file per home.

``serve`` and ``demo`` each publish ``$HOME/control-plane.json`` (mode 0600) while they run:
the URL, the process id, the kind (``serve`` | ``demo``) and a local admin token that only
this user can read (Jupyter's runtime files work the same way).  The CLI reads it to talk to
the running control plane instead of opening a state database of its own, and ``demo``
reads it to refuse to start over a demo that is still running.  A file whose process is gone
is stale and ignored (and removed by the next publisher).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gpuwarden import processes

FILENAME = "control-plane.json"


@dataclass(frozen=True)
class RuntimeInfo:
    kind: str          # "serve" or "demo"
    url: str           # base URL, e.g. http://127.0.0.1:8080
    pid: int
    home: str          # the GPUWARDEN_HOME this control plane keeps its state in
    token: str         # a local admin token (the file is 0600)
    started_at: float

    @property
    def path(self) -> Path:
        return Path(self.home) / FILENAME


def publish(home: Path, kind: str, url: str, token: str) -> RuntimeInfo:
    """Write this process's runtime file atomically, readable by this user only."""
    info = RuntimeInfo(kind=kind, url=url, pid=os.getpid(), home=str(home), token=token,
                       started_at=time.time())
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{FILENAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(info), f)
    os.replace(tmp, home / FILENAME)
    return info


def withdraw(home: Path) -> None:
    """Remove the runtime file if it is this process's own."""
    info = read(home, live_only=False)
    if info is not None and info.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (home / FILENAME).unlink()


def read(home: Path, *, live_only: bool = True) -> RuntimeInfo | None:
    """The runtime file in ``home``; None when absent, unreadable or (``live_only``) when
    its process has ended."""
    try:
        raw = json.loads((home / FILENAME).read_text())
        info = RuntimeInfo(**{k: raw[k] for k in RuntimeInfo.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if live_only and not processes.alive(info.pid):
        return None
    return info


def find_running(base: Path) -> list[RuntimeInfo]:
    """Live control planes under a GPUWARDEN_HOME: ``serve``'s own (``base``) and the
    demo's (``base/demo``)."""
    found = [read(base), read(base / "demo")]
    return [f for f in found if f is not None]
