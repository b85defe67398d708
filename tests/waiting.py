"""The tests' one way to wait: poll a condition until it holds, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float = 30.0,
               interval: float = 0.2, detail: Callable[[], str] | None = None,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail the test after
    ``timeout`` seconds naming ``what``, with ``detail()`` (a log tail, say) when given.  An
    exception of a type in ``retry_on`` counts as "not yet" (the last one is shown)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except retry_on as exc:
            value, last = None, exc  # type: ignore[assignment]
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            more = f"\n{detail()}" if detail is not None else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
                        f"{more}")
        time.sleep(interval)
