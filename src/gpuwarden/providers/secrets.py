"""Per-cluster secrets kept under the cluster's directory (mode 0600), never logged."""

from __future__ import annotations

import os
from pathlib import Path

from gpuwarden.bearer import new_token, read_token_file


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_token(path: Path) -> str:
    """The node daemon token at ``path``, created on first use."""
    if not path.exists():
        _write_private(path, (new_token() + "\n").encode())
    return read_token_file(path, f"node token file {path}")


def ensure_munge_key(path: Path) -> bytes:
    """The cluster's munge key at ``path``, created on first use (1024 random bytes)."""
    if not path.exists():
        _write_private(path, os.urandom(1024))
    return path.read_bytes()
