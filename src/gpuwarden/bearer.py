"""Bearer tokens, the node daemon's and the API's alike: how long one must be, how one is
made, read from a file and taken out of an ``Authorization`` header.  One place for the
rules, so the node, the control plane and the CLI agree."""

from __future__ import annotations

import secrets
from pathlib import Path

from gpuwarden.errors import GpuwardenError

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


def read_token_file(path: Path, source: str) -> str:
    """The token in ``path``, checked; ``source`` is how the user named the file
    (``--token-file /etc/gw/token``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise GpuwardenError(f"{source}: cannot read it ({exc.strerror}); point it at a "
                             "readable file holding the token") from None
    except UnicodeDecodeError:
        raise GpuwardenError(f"{source}: not a text file; {HOW_TO_MAKE}") from None
    return check_token(text, source)


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or "" for any other
    header.  The scheme is case-insensitive (RFC 7235 section 2.1)."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
