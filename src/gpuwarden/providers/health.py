"""Waiting for node daemons to answer ``/healthz``, and reading what a bootstrapping pod
says there (:mod:`gpuwarden.providers.podagent`)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from gpuwarden.providers.podagent import FAILED, WAITING


@dataclass(frozen=True)
class Probe:
    """One ``GET /healthz``: the daemon answers (``healthy``), or the pod's bootstrap is
    still running (``bootstrap`` "waiting": it waits for its secrets) or stopped
    (``bootstrap`` "failed", with the ``step`` and the tail of its ``log``)."""

    healthy: bool
    bootstrap: str | None = None
    step: str = ""
    log: str = ""
    version: str = ""


def probe(client: httpx.Client, url: str, timeout: float = 3.0) -> Probe:
    try:
        response = client.get(f"{url}/healthz", timeout=timeout)
    except httpx.HTTPError:
        return Probe(False)
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    status = body.get("status")
    version = str(body.get("version") or "")
    if status in (WAITING, FAILED):
        return Probe(False, "waiting" if status == WAITING else "failed",
                     str(body.get("step") or ""), str(body.get("log") or ""), version)
    # 200, or 503 = up but degraded
    return Probe(response.status_code in (200, 503), version=version)


def healthy(client: httpx.Client, url: str, timeout: float = 3.0) -> bool:
    """True when the daemon at ``url`` answers /healthz (200, or 503 = up but degraded)."""
    return probe(client, url, timeout).healthy
