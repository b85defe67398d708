"""GRES strings in every form Slurm prints them.

``gpu:2``, ``gpu:a100:2``, ``gpu:a100:2(IDX:0-1)``, ``gpu:4(IDX:0,2-3)``,
``gpu:a100:2(S:0-1)``, untyped, and comma-separated lists mixing GPU types and other GRES
(``gpu:a100:2,gpu:v100:1,shard:8,mps:100``). TRES forms (``gres:gpu:2``, ``gres/gpu:2``,
``cpu=2,gres/gpu=4``) are read by :func:`gpus_in_tres`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gpuwarden.slurm.errors import ParseError

_EMPTY = {"", "(null)", "N/A", "none", "None"}
_SUFFIX = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_COUNT_RE = re.compile(r"^(\d+)([KMGT]?)$")


@dataclass(frozen=True)
class GresItem:
    """One GRES entry: ``name`` (gpu, shard, mps...), optional ``type``, ``count``, and the
    device indices (``IDX:``) or sockets (``S:``) when Slurm printed them."""

    name: str
    type: str | None = None
    count: int = 1
    indices: tuple[int, ...] | None = None
    sockets: tuple[int, ...] | None = None

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def __str__(self) -> str:
        text = self.name + (f":{self.type}" if self.type else "") + f":{self.count}"
        if self.indices is not None:
            text += f"(IDX:{format_index_list(self.indices)})"
        elif self.sockets is not None:
            text += f"(S:{format_index_list(self.sockets)})"
        return text


def parse_gres(text: str | None) -> tuple[GresItem, ...]:
    """Parse a GRES list such as ``gpu:a100:2(IDX:0-1),shard:8``."""
    if text is None:
        return ()
    text = text.strip()
    if text in _EMPTY:
        return ()
    return tuple(parse_gres_item(part) for part in split_top_level(text) if part.strip())


def parse_gres_item(text: str) -> GresItem:
    """Parse one entry: ``name[:type][:count][(IDX:list|S:list)]``."""
    raw = text.strip()
    body, extra = raw, ""
    if "(" in raw:
        if not raw.endswith(")"):
            raise ParseError(f"GRES {raw!r}: unbalanced parenthesis")
        body, extra = raw[:-1].split("(", 1)
    parts = body.split(":")
    if parts and parts[0] == "gres":  # TRES spelling gres:gpu:2
        parts = parts[1:]
    if not parts or not parts[0]:
        raise ParseError(f"GRES {raw!r}: missing name")
    name = parts[0].removeprefix("gres/")
    gtype: str | None = None
    count = 1
    if len(parts) == 2:
        if _COUNT_RE.match(parts[1]):
            count = _count(parts[1], raw)
        else:
            gtype = parts[1]
    elif len(parts) == 3:
        gtype = parts[1] or None
        count = _count(parts[2], raw)
    elif len(parts) > 3:
        raise ParseError(f"GRES {raw!r}: too many ':' fields")
    indices, sockets = _parse_extra(extra, raw)
    return GresItem(name=name, type=gtype, count=count, indices=indices, sockets=sockets)


def _count(text: str, raw: str) -> int:
    m = _COUNT_RE.match(text)
    if not m:
        raise ParseError(f"GRES {raw!r}: count {text!r} is not a number")
    return int(m.group(1)) * _SUFFIX.get(m.group(2), 1)


def _parse_extra(extra: str, raw: str) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    indices = sockets = None
    for chunk in extra.split(")(") if extra else ():
        key, _, value = chunk.partition(":")
        if key == "IDX":
            indices = () if value.strip() in _EMPTY else parse_index_list(value)
        elif key == "S":
            sockets = () if value.strip() in _EMPTY else parse_index_list(value)
        else:
            raise ParseError(f"GRES {raw!r}: unknown detail {key!r}")
    return indices, sockets


def parse_index_list(text: str) -> tuple[int, ...]:
    """``0,2-3`` -> (0, 2, 3)."""
    out: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        lo, sep, hi = piece.partition("-")
        try:
            if sep:
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(lo))
        except ValueError as exc:
            raise ParseError(f"index list {text!r}: {piece!r} is not a number or range") from exc
    return tuple(out)


def format_index_list(indices: Iterable[int]) -> str:
    """(0, 2, 3) -> ``0,2-3``."""
    values = sorted(set(indices))
    pieces: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        pieces.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(pieces)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses and brackets."""
    out: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def gpu_count(items: Iterable[GresItem]) -> int:
    """Total GPUs in a parsed GRES list (``shard``/``mps`` are not GPUs)."""
    return sum(item.count for item in items if item.is_gpu)


def gpus_in_tres(text: str | None) -> int:
    """GPUs in a TRES string: ``gres:gpu:2``, ``gres/gpu:a100:2``, ``cpu=2,gres/gpu=4``,
    ``gres/gpu:a100=2``. Typed and untyped entries for the same GPUs are not added twice."""
    if text is None or text.strip() in _EMPTY:
        return 0
    untyped = 0
    typed = 0
    for part in split_top_level(text.strip()):
        part = part.strip()
        if "=" in part:
            key, _, value = part.partition("=")
            if not key.startswith("gres/gpu"):
                continue
            n = _count(value.strip(), text)
            if key == "gres/gpu":
                untyped += n
            else:
                typed += n
            continue
        norm = part.removeprefix("gres:").removeprefix("gres/")
        if not (norm == "gpu" or norm.startswith("gpu:") or norm.startswith("gpu(")):
            continue
        item = parse_gres_item(norm)
        if item.type:
            typed += item.count
        else:
            untyped += item.count
    return untyped or typed
