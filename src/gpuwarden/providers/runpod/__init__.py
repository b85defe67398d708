"""RunPod (REST API v2): a client that retries only where safe, and the provider."""

from gpuwarden.providers.runpod.client import (
    AmbiguousCreate,
    ApiKey,
    RunPodClient,
    RunPodProblem,
    load_api_key,
)
from gpuwarden.providers.runpod.provider import RunPodProvider

__all__ = ["AmbiguousCreate", "ApiKey", "RunPodClient", "RunPodProblem", "RunPodProvider",
           "load_api_key"]
