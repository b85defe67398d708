"""A small RunPod REST v2 client on httpx.

Retries: reads and deletes are retried with exponential backoff on 5xx and transport
errors; every request waits out a 429 (``Retry-After``) and an exhausted ``RateLimit``
window before the next call.  A create is never repeated blindly: a 5xx or a lost answer
raises :class:`AmbiguousCreate`, and the caller looks the resource up by name first.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpuwarden.bearer import read_secret_file
from gpuwarden.errors import GpuwardenError
from gpuwarden.providers.base import Clock, ProviderError, SystemClock

DEFAULT_BASE_URL = "https://api.runpod.io"
_WINDOW = re.compile(r'"?(\w+)"?\s*;\s*r=(\d+)\s*;\s*t=(\d+)')


class ApiKey:
    """The API key; its repr and str never show it."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__


def load_api_key(env: Mapping[str, str] | None = None, key_file: Path | None = None) -> ApiKey:
    """``RUNPOD_API_KEY``, else ``runpod.api_key_file``."""
    env = os.environ if env is None else env
    if env.get("RUNPOD_API_KEY", "").strip():
        return ApiKey(env["RUNPOD_API_KEY"].strip())
    if key_file is not None:
        return ApiKey(read_secret_file(key_file, f"runpod.api_key_file {key_file}",
                                       "the API key"))
    raise GpuwardenError("RunPod API key: set RUNPOD_API_KEY or runpod.api_key_file: PATH "
                         "(create a key in the RunPod console)")


class RunPodProblem(ProviderError):
    """An RFC 9457 problem document from RunPod, as one readable line."""

    def __init__(self, status: int, title: str, detail: str, errors: list[str]) -> None:
        self.status, self.title, self.detail, self.errors = status, title, detail, errors
        text = f"RunPod {status} {title}: {detail}".rstrip(": ")
        if errors:
            text += " (" + "; ".join(errors) + ")"
        super().__init__(text)

    @classmethod
    def from_response(cls, response: httpx.Response) -> RunPodProblem:
        try:
            doc = response.json()
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        title = str(doc.get("title") or response.reason_phrase or "error")
        detail = str(doc.get("detail") or response.text[:200].strip())
        errors = [str(e) for e in doc.get("errors") or []]
        return cls(response.status_code, title, " ".join(detail.split()), errors)


class AmbiguousCreate(Exception):
    """A create whose outcome is unknown (5xx or no answer): look before creating again."""


@dataclass
class RunPodClient:
    http: httpx.Client
    api_key: ApiKey
    base_url: str = DEFAULT_BASE_URL
    clock: Clock = field(default_factory=SystemClock)
    max_attempts: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    calls: Counter[str] = field(default_factory=Counter)
    _not_before: float = 0.0

    # ---- pods -------------------------------------------------------------------------
    def list_pods(self, include_cluster_pods: bool = False) -> list[dict[str, Any]]:
        params = {"includeClusterPods": "true"} if include_cluster_pods else None
        return self._json("GET", "/v2/pods", "listPods", params=params)["pods"]

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v2/pods", "createPod", body=body, create=True)

    def delete_pod(self, pod_id: str) -> bool:
        """Terminate a pod; False when it was already gone."""
        return self._delete(f"/v2/pods/{pod_id}", "deletePod")

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        """The pod, or None when it is gone."""
        try:
            return self._json("GET", f"/v2/pods/{pod_id}", "getPod")
        except RunPodProblem as exc:
            if exc.status == 404:
                return None
            raise

    def pod_action(self, pod_id: str, action: str) -> dict[str, Any] | None:
        """``POST /v2/pods/{id}/action`` with ``start``, ``stop``, ``restart`` or
        ``terminate``: the updated pod (200), or None for ``terminate`` (204).  An action the
        pod's status does not allow is a 409 :class:`RunPodProblem`."""
        response = self._request("POST", f"/v2/pods/{pod_id}/action", "podAction",
                                 body={"action": action})
        return response.json() if response.status_code == 200 else None

    # ---- clusters ---------------------------------------------------------------------
    def list_clusters(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v2/clusters", "listClusters")["clusters"]

    def create_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/v2/clusters", "createCluster", body=body, create=True)

    def cluster_pods(self, cluster_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v2/clusters/{cluster_id}/pods", "listClusterPods")["pods"]

    def delete_cluster(self, cluster_id: str) -> bool:
        return self._delete(f"/v2/clusters/{cluster_id}", "deleteCluster")

    # ---- catalog and billing ------------------------------------------------------------
    def gpu_types(self, count: int, cloud: str) -> list[dict[str, Any]]:
        params = {"include": "AVAILABILITY", "product": "POD", "count": str(count),
                  "cloud": cloud}
        return self._json("GET", "/v2/catalog/gpus", "listGpuTypes", params=params)["gpus"]

    def pod_billing(self, days: int = 31) -> dict[str, Any]:
        params = {"bucketSize": "day", "lastN": str(days)}
        return self._json("GET", "/v2/billing/pods", "listPodBilling", params=params)

    # ---- plumbing -----------------------------------------------------------------------
    def _json(self, method: str, path: str, operation: str, *, params: dict[str, str] | None
              = None, body: dict[str, Any] | None = None, create: bool = False) -> Any:
        return self._request(method, path, operation, params=params, body=body,
                             create=create).json()

    def _delete(self, path: str, operation: str) -> bool:
        try:
            self._request("DELETE", path, operation)
        except RunPodProblem as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _request(self, method: str, path: str, operation: str, *,
                 params: dict[str, str] | None = None, body: dict[str, Any] | None = None,
                 create: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_quota()
            self.calls[operation] += 1
            try:
                response = self.http.request(
                    method, self.base_url + path, params=params, json=body,
                    headers={"Authorization": f"Bearer {self.api_key.reveal()}"})
            except httpx.TransportError as exc:
                if create:
                    raise AmbiguousCreate(f"{operation}: no answer ({type(exc).__name__})"
                                          ) from None
                if attempt >= self.max_attempts:
                    raise ProviderError(f"RunPod API unreachable at {self.base_url} "
                                        f"({type(exc).__name__}); check the network") from None
                self._backoff(attempt)
                continue
            self._note_quota(response)
            if response.status_code == 429 and attempt < self.max_attempts * 2:
                continue  # not processed: always safe to send again, after the wait
            if response.status_code >= 500:
                if create:
                    raise AmbiguousCreate(str(RunPodProblem.from_response(response)))
                if attempt < self.max_attempts:
                    self._backoff(attempt)
                    continue
            if response.status_code >= 400:
                raise RunPodProblem.from_response(response)
            return response

    def _backoff(self, attempt: int) -> None:
        self.clock.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))

    def _wait_for_quota(self) -> None:
        wait = self._not_before - self.clock.monotonic()
        if wait > 0:
            self.clock.sleep(wait)

    def _note_quota(self, response: httpx.Response) -> None:
        """Honour ``Retry-After`` and any ``RateLimit`` window with nothing left."""
        now = self.clock.monotonic()
        retry_after = response.headers.get("Retry-After", "")
        if response.status_code == 429:
            delay = float(retry_after) if retry_after.strip().isdigit() else self.backoff_s
            self._not_before = max(self._not_before, now + delay)
        for _, remaining, reset in _WINDOW.findall(response.headers.get("RateLimit", "")):
            if int(remaining) == 0:
                self._not_before = max(self._not_before, now + int(reset))
