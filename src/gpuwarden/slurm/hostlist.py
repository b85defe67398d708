"""Slurm host lists: ``node[1-3,7],gpu-a[01-02]`` <-> names."""

from __future__ import annotations

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.gres import split_top_level

_EMPTY = {"", "(null)", "N/A", "None assigned"}


def expand_hostlist(text: str | None) -> tuple[str, ...]:
    """Expand a host list expression into node names, in order."""
    if text is None or text.strip() in _EMPTY:
        return ()
    names: list[str] = []
    for part in split_top_level(text.strip()):
        part = part.strip()
        if part:
            names.extend(_expand_one(part))
    return tuple(names)


def _expand_one(part: str) -> list[str]:
    if "[" not in part:
        return [part]
    head, _, rest = part.partition("[")
    body, sep, tail = rest.partition("]")
    if not sep:
        raise ParseError(f"host list {part!r}: missing ']'")
    suffixes = _expand_one(tail) if tail else [""]
    out: list[str] = []
    for piece in body.split(","):
        lo, dash, hi = piece.partition("-")
        if not dash:
            values = [lo]
        else:
            if not (lo.isdigit() and hi.isdigit()):
                raise ParseError(f"host list {part!r}: bad range {piece!r}")
            width = len(lo) if lo.startswith("0") else 0
            values = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        for value in values:
            out.extend(f"{head}{value}{s}" for s in suffixes)
    return out
