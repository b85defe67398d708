"""Small value parsers shared by the output-shape adapters."""

from __future__ import annotations

from datetime import datetime

from gpuwarden.slurm.errors import ParseError

_EMPTY = {"", "(null)", "N/A", "n/a", "None", "Unknown", "NONE"}
_UNLIMITED = {"UNLIMITED", "INFINITE", "infinite", "NOT_SET"}
# Suffix characters sinfo appends to a node state: * not responding, ~ powered off,
# # powering up, ! powering down, % powering down, $ maintenance reservation,
# @ reboot pending, ^ rebooting, - planned by backfill.
_STATE_SUFFIXES = "*~#!%$@^-"


def text_or_empty(value: str | None) -> str:
    if value is None:
        return ""
    value = value.strip()
    return "" if value in ("(null)", "N/A") else value


def parse_int(value: str | None, default: int = 0) -> int:
    if value is None:
        return default
    value = value.strip()
    if value in _EMPTY:
        return default
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError as exc:
            raise ParseError(f"{value!r} is not a number") from exc


def parse_optional_int(value: str | None) -> int | None:
    if value is None or value.strip() in _EMPTY:
        return None
    return parse_int(value)


def parse_timestamp(value: str | None) -> float | None:
    """Epoch seconds (``SLURM_TIME_FORMAT=%s``, what the adapter asks for) or
    ``2026-11-28T20:19:57`` (Slurm's standard format, local time) -> epoch seconds."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value) if value != "0" else None
    if value in _EMPTY:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise ParseError(f"{value!r} is not a Slurm timestamp") from exc


def parse_duration(value: str | None) -> int | None:
    """Slurm durations (``UNLIMITED``, ``30:00``, ``1:00:00``, ``2-12:00:00``, ``5``
    minutes) -> seconds; ``None`` when unlimited or unset."""
    if value is None:
        return None
    value = value.strip()
    if value in _EMPTY or value in _UNLIMITED:
        return None
    days = 0
    has_days = "-" in value
    try:
        if has_days:
            d, _, value = value.partition("-")
            days = int(d)
        parts = [int(p) for p in value.split(":")]
    except ValueError as exc:
        raise ParseError(f"{value!r} is not a Slurm duration") from exc
    if len(parts) == 1:
        seconds = parts[0] * 3600 if has_days else parts[0] * 60
    elif len(parts) == 2:
        seconds = parts[0] * 3600 + parts[1] * 60 if has_days else parts[0] * 60 + parts[1]
    elif len(parts) == 3:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    else:
        raise ParseError(f"{value!r} is not a Slurm duration")
    return days * 86400 + seconds


def split_node_state(state_long: str, state_complete: str = "") -> tuple[str, tuple[str, ...]]:
    """Base state (lower case, suffixes removed) and flags (upper case) of a node.

    ``state_long`` is sinfo's StateLong (``down*``, ``drained``, ``mixed``); the flags come
    from StateComplete (``IDLE+DRAIN+NOT_RESPONDING``) when given, else from the suffix.
    """
    raw = state_long.strip().lower()
    base = raw.rstrip(_STATE_SUFFIXES)
    flags: list[str] = []
    if state_complete:
        pieces = [p.strip().upper() for p in state_complete.split("+") if p.strip()]
        flags = pieces[1:]
    if raw.endswith("*") and "NOT_RESPONDING" not in flags:
        flags.append("NOT_RESPONDING")
    return base, tuple(flags)
