"""Providers and the cluster lifecycle: ``up``, ``status``, ``down`` on ``local``,
``static`` and ``runpod`` (REST API v2), plus the node bootstrap script."""

from gpuwarden.providers.base import (
    Clock,
    ClusterReport,
    DownReport,
    NodeRecord,
    Progress,
    Provider,
    ProviderError,
    SystemClock,
)
from gpuwarden.providers.lifecycle import Runtime, down, list_clusters, open_provider, status, up
from gpuwarden.providers.spec import ClusterDescription, load_description, parse_description

__all__ = [
    "Clock",
    "ClusterDescription",
    "ClusterReport",
    "DownReport",
    "NodeRecord",
    "Progress",
    "Provider",
    "ProviderError",
    "Runtime",
    "SystemClock",
    "down",
    "list_clusters",
    "load_description",
    "open_provider",
    "parse_description",
    "status",
    "up",
]
