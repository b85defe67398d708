"""Bearer tokens, the node daemon's and the API's alike: how long one must be, how one is
made, read from a file and taken out of an ``Authorization`` header; and the one reader of
secret files (tokens, the RunPod and LLM API keys), with its permission warning.  One place
for the rules, so the node, the control plane and the CLI agree."""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

from gpuwarden.errors import GpuwardenError

log = logging.getLogger(__name__)
_WARNED: set[Path] = set()  # files already warned about (once per process, not per read)

MIN_LENGTH = 16
HOW_TO_MAKE = "make one with `openssl rand -hex 32 > FILE` (256 random bits)"


def new_token() -> str:
    """A fresh random token: 256 bits, hex."""
    return secrets.token_hex(32)


def check_token(token: str, source: str) -> str:
    """``token`` (stripped) when it is long enough; ``source`` names where it came from."""
    token = token.strip()
    if not token:
        raise GpuwardenError(f"{source}: the token is empty; {HOW_TO_MAKE}")
    if len(token) < MIN_LENGTH:
        raise GpuwardenError(f"{source}: the token is {len(token)} characters, shorter than "
                             f"the {MIN_LENGTH} gpuwarden accepts; {HOW_TO_MAKE}")
    return token


def read_secret_file(path: Path, source: str, what: str = "the token") -> str:
    """The secret in ``path``, stripped; ``source`` is how the user named the file
    (``--token-file /etc/gw/token``), ``what`` what it holds.  A file that other users may
    read is read anyway, with a warning (once per file) that says how to fix it; an empty
    or unreadable one is an error that says so."""
    path = path.expanduser()
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as exc:
        raise GpuwardenError(f"{source}: cannot read it ({exc.strerror}); point it at a "
                             f"readable file holding {what}") from None
    except UnicodeDecodeError:
        raise GpuwardenError(f"{source}: not a text file; write {what} into it") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH) and path not in _WARNED:
        _WARNED.add(path)
        log.warning("%s: other users can read it (mode %o); chmod 600 %s", source,
                    stat.S_IMODE(mode), path)
    value = text.strip()
    if not value:
        raise GpuwardenError(f"{source}: the file is empty; write {what} into it")
    return value


def read_token_file(path: Path, source: str) -> str:
    """The token in ``path``, checked; ``source`` is how the user named the file
    (``--token-file /etc/gw/token``)."""
    try:
        text = read_secret_file(path, source)
    except GpuwardenError as exc:
        if "the file is empty" not in str(exc):
            raise
        text = ""
    return check_token(text, source)


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or "" for any other
    header.  The scheme is case-insensitive (RFC 7235 section 2.1)."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
