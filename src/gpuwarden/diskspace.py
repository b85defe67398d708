"""A full disk is a state, not a crash: tell a write that failed for want of space from
any other failure, and say how much space is left, in one line."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

_SQLITE_FULL = 13


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` says the disk (or the database's quota) is full: SQLite's SQLITE_FULL or an
    OSError ENOSPC / EDQUOT."""
    if isinstance(exc, sqlite3.DatabaseError):
        return (getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL
                or "database or disk is full" in str(exc))
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: Path) -> str:
    """``disk full (N MB free)`` for the file system holding ``path``."""
    where = path if path.is_dir() else path.parent
    try:
        free = shutil.disk_usage(where).free / 2**20
    except OSError:
        return "disk full"
    return f"disk full ({free:.0f} MB free)"
