"""Compact, lossless encodings for the embedded store's chunks (pure functions, stdlib only).

A column of numbers is stored as 8-byte little-endian words, byte-shuffled (all first bytes,
then all second bytes, ...) and deflated.  Before that, the words are made small where that
is exact: timestamps (integer milliseconds) become deltas of deltas, which are zero for a
regular scrape; values that are integers, or decimals with at most four places (what GPU
counters and dcgm-exporter fields are), become deltas of scaled integers.  Anything else is
kept as raw IEEE doubles, so every value comes back bit for bit.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, islice, repeat
from operator import eq, mul, sub, truediv

_RAW, _SCALED = 0, 1
_SCALES = (1, 10, 100, 1000, 10000)
_MAX_EXACT = 2.0**52
_HEADER = struct.Struct("<BI")  # kind, count
_COLUMN = struct.Struct("<BBI")  # encoding, scale index, byte length
_LEVEL = 6


class CodecError(ValueError):
    """A stored chunk that does not decode (a bug or a damaged file)."""


def _shuffle(words: array) -> bytes:
    if sys.byteorder != "little":
        words = array(words.typecode, words)
        words.byteswap()
    raw = words.tobytes()
    return b"".join(raw[i::8] for i in range(8))


def _unshuffle(data: bytes, typecode: str) -> array:
    n = len(data) // 8
    out = bytearray(len(data))
    for i in range(8):
        out[i::8] = data[i * n:(i + 1) * n]
    words = array(typecode, bytes(out))
    if sys.byteorder != "little":
        words.byteswap()
    return words


def _deltas(xs: Sequence[int]) -> list[int]:
    return [xs[0], *map(sub, islice(xs, 1, None), xs)] if len(xs) else []


def _undeltas(ds: Iterable[int]) -> list[int]:
    return list(accumulate(ds))


def _scaled(values: Sequence[float]) -> tuple[int, list[int]] | None:
    """The smallest decimal scale index at which every value is an exact integer, with the
    integers, if any (the loops run in C: a flush encodes ~340,000 series of a big fleet)."""
    try:
        biggest = max(map(abs, values), default=0.0)
        for index, scale in enumerate(_SCALES):
            if biggest * scale >= _MAX_EXACT:
                return None
            back = map(truediv, map(round, map(mul, values, repeat(scale))), repeat(scale))
            if all(map(eq, back, values)):  # lazy: stops at the first value that is not
                return index, list(map(round, map(mul, values, repeat(scale))))
    except (OverflowError, ValueError):
        return None
    return None


def _scale_index(values: Sequence[float]) -> int | None:
    """The smallest decimal scale at which every value is an exact integer, if any."""
    found = _scaled(values)
    return None if found is None else found[0]


def _encode_values(values: Sequence[float]) -> bytes:
    found = _scaled(values)
    if found is None:
        body = _shuffle(array("d", values))
        return _COLUMN.pack(_RAW, 0, len(body)) + body
    index, ints = found
    body = _shuffle(array("q", _deltas(ints)))
    return _COLUMN.pack(_SCALED, index, len(body)) + body


def _decode_values(data: bytes, pos: int) -> tuple[list[float], int]:
    kind, index, length = _COLUMN.unpack_from(data, pos)
    pos += _COLUMN.size
    body = data[pos:pos + length]
    if len(body) != length:
        raise CodecError("chunk column is truncated")
    if kind == _RAW:
        return _unshuffle(body, "d").tolist(), pos + length
    if kind != _SCALED or index >= len(_SCALES):
        raise CodecError(f"unknown column encoding {kind}/{index}")
    scale = _SCALES[index]
    ints = accumulate(_unshuffle(body, "q"))
    if scale == 1:
        return list(map(float, ints)), pos + length
    return list(map(truediv, ints, repeat(scale))), pos + length  # i / scale, exactly


def _encode_times(ts_ms: Sequence[int]) -> bytes:
    body = _shuffle(array("q", _deltas(_deltas(ts_ms))))
    return _COLUMN.pack(_SCALED, 0, len(body)) + body


def _decode_times(data: bytes, pos: int) -> tuple[list[int], int]:
    _kind, _index, length = _COLUMN.unpack_from(data, pos)
    pos += _COLUMN.size
    return _undeltas(_undeltas(_unshuffle(data[pos:pos + length], "q"))), pos + length


def encode_columns(kind: int, times: Sequence[int], columns: Sequence[Sequence[float]]) -> bytes:
    """One deflated blob: integer times (ms or minutes) plus value columns of equal length."""
    parts = [_HEADER.pack(kind, len(times)), _encode_times(times)]
    parts.extend(_encode_values(col) for col in columns)
    return zlib.compress(b"".join(parts), _LEVEL)


def decode_columns(blob: bytes, kind: int, ncolumns: int) -> tuple[list[int], list[list[float]]]:
    try:
        data = zlib.decompress(blob)
        got_kind, count = _HEADER.unpack_from(data, 0)
    except (zlib.error, struct.error) as exc:
        raise CodecError(f"chunk does not decompress: {exc}") from None
    if got_kind != kind:
        raise CodecError(f"chunk kind {got_kind}, expected {kind}")
    times, pos = _decode_times(data, _HEADER.size)
    columns = []
    for _ in range(ncolumns):
        col, pos = _decode_values(data, pos)
        columns.append(col)
    if len(times) != count or any(len(c) != count for c in columns):
        raise CodecError("chunk columns disagree on their length")
    return times, columns


RAW_CHUNK = 1
ROLLUP_CHUNK = 2
BATCH = 3


def encode_raw(ts_ms: Sequence[int], values: Sequence[float]) -> bytes:
    return encode_columns(RAW_CHUNK, ts_ms, [values])


def decode_raw(blob: bytes) -> tuple[list[int], list[float]]:
    times, (values,) = decode_columns(blob, RAW_CHUNK, 1)
    return times, values


def encode_batch(series_ids: array, ts_ms: array, values: array) -> bytes:
    """An append() batch for the write-ahead table: fast (level 1), not tuned for size."""
    header = _HEADER.pack(BATCH, len(series_ids))
    body = b"".join((_shuffle(array("q", series_ids)), _shuffle(ts_ms), _shuffle(values)))
    return zlib.compress(header + body, 1)


def decode_batch(blob: bytes) -> tuple[array, array, array]:
    try:
        data = zlib.decompress(blob)
        kind, count = _HEADER.unpack_from(data, 0)
    except (zlib.error, struct.error) as exc:
        raise CodecError(f"batch does not decompress: {exc}") from None
    if kind != BATCH or len(data) != _HEADER.size + 24 * count:
        raise CodecError("batch blob is damaged")
    pos = _HEADER.size
    cols = [_unshuffle(data[pos + 8 * count * i:pos + 8 * count * (i + 1)], tc)
            for i, tc in enumerate("qqd")]
    return cols[0], cols[1], cols[2]
