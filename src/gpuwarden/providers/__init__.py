"""Providers and the cluster lifecycle: ``up``, ``status``, ``down`` (and one node's
``stop_node`` / ``start_node`` / ``replace_node``) on ``local``, ``static`` and ``runpod``
(REST API v2), plus the node bootstrap script.

Names are loaded on first use, so the ``gpuwarden`` command (and the node daemon it runs)
does not load pydantic models and HTTP clients it does not need."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Clock": "base", "ClusterReport": "base", "DownReport": "base", "NodeRecord": "base",
    "Progress": "base", "Provider": "base", "ProviderError": "base", "SystemClock": "base",
    "STOPPED": "base", "STOP_REASON": "base",
    "Runtime": "lifecycle", "down": "lifecycle", "list_clusters": "lifecycle",
    "open_provider": "lifecycle", "start_node": "lifecycle", "status": "lifecycle",
    "stop_node": "lifecycle", "up": "lifecycle", "replace_node": "lifecycle",
    "ClusterDescription": "spec", "cannot_stop": "spec", "load_description": "spec",
    "parse_description": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpuwarden.providers' has no attribute {name!r}")
    return getattr(import_module(f"gpuwarden.providers.{module}"), name)
