"""Waiting for node daemons to answer ``/healthz``."""

from __future__ import annotations

import httpx


def healthy(client: httpx.Client, url: str, timeout: float = 3.0) -> bool:
    """True when the daemon at ``url`` answers /healthz (200, or 503 = up but degraded)."""
    try:
        return client.get(f"{url}/healthz", timeout=timeout).status_code in (200, 503)
    except httpx.HTTPError:
        return False
