"""Talking to a node daemon's API (the control plane's side of it): snapshot, the Slurm
data of the controller's daemon, and the Slurm actions it performs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gpuwarden.bearer import read_token_file
from gpuwarden.errors import GpuwardenError


class NodeError(GpuwardenError):
    """The node refused or failed; ``status`` is its HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def read_token(token_file: Path | None) -> str | None:
    if token_file is None:
        return None
    try:
        return read_token_file(token_file, f"token_file {token_file}")
    except GpuwardenError as exc:
        raise NodeError(str(exc)) from None


class NodeClient:
    def __init__(self, client: httpx.AsyncClient, url: str, token_file: Path | None,
                 timeout: float = 30.0) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._token_file = token_file
        self._timeout = timeout

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        token = read_token(self._token_file)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self._client.request(method, self._url + path, json=json,
                                                  headers=headers, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise NodeError(f"node {self._url} unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:300]
            raise NodeError(str(detail), response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def slurm_jobs(self) -> tuple[Any, ...]:
        """The jobs Slurm has now (the controller's daemon runs squeue for this: neither a
        scrape nor its last Slurm cycle, which can be seconds old), decoded into
        :class:`~gpuwarden.slurm.model.SlurmJob`; NodeError when the list is malformed."""
        from gpuwarden.gpu.wire import SnapshotRefused
        from gpuwarden.slurm.wire import decode_jobs

        found = await self.request("GET", "/api/v1/slurm/jobs?live=1")
        try:
            return decode_jobs(found)
        except SnapshotRefused as exc:
            raise NodeError(f"the controller's job list is malformed: {exc.reason}") from None

    async def slurm_drain(self, node: str, reason: str) -> Any:
        return await self.request("POST", f"/api/v1/slurm/nodes/{node}/drain",
                                  {"reason": reason})

    async def slurm_resume(self, node: str) -> Any:
        return await self.request("POST", f"/api/v1/slurm/nodes/{node}/resume")

    async def slurm_job_action(self, job_id: str, action: str) -> Any:
        return await self.request("POST", f"/api/v1/slurm/jobs/{job_id}/{action}")

    async def slurm_submit(self, body: dict[str, Any]) -> Any:
        return await self.request("POST", "/api/v1/slurm/jobs", body)
