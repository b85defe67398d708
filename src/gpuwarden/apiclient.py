"""The CLI's way to a running control plane: find it, then call its API.

Every command that reads or changes control-plane state (tokens, alerts, silences, ``ask``)
goes through the API of the control plane that is running, never through a state database
of its own.  Where it is:

1. ``--url`` / ``GPUWARDEN_URL``, with a token from ``--token-file`` or ``GPUWARDEN_TOKEN``;
2. else the runtime file of the one control plane running under ``$GPUWARDEN_HOME``
   (``serve``'s own, or the demo's in ``$GPUWARDEN_HOME/demo``) with its local admin token —
   a token from ``--token-file`` or ``GPUWARDEN_TOKEN`` is used instead when given.

An API error becomes one :class:`GpuwardenError` line that says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gpuwarden import runtime
from gpuwarden.bearer import check_token, read_token_file
from gpuwarden.errors import GpuwardenError


@dataclass(frozen=True)
class Endpoint:
    url: str          # base URL, without /api/v1
    token: str
    where: str        # how the URL was found, for messages
    token_from: str   # where the token came from, for messages
    local: bool = False  # found through a runtime file (a local control plane)


def _token(token_file: Path | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    if token_file is not None:
        source = f"--token-file {token_file}"
        return read_token_file(token_file, source), source
    token = environ.get("GPUWARDEN_TOKEN", "").strip()
    return (check_token(token, "GPUWARDEN_TOKEN"), "GPUWARDEN_TOKEN") if token else None


def find_endpoint(home: Path, *, url: str | None = None, token_file: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> Endpoint:
    """Where the CLI talks to; ``url`` is ``--url`` (Typer fills it from GPUWARDEN_URL)."""
    environ = os.environ if environ is None else environ
    url = (url if url is not None else environ.get("GPUWARDEN_URL", "")).strip()
    given = _token(token_file, environ)
    if url:
        if not url.startswith(("http://", "https://")):
            raise GpuwardenError(f"--url / GPUWARDEN_URL {url!r} is not an http:// or "
                                 "https:// URL; write e.g. http://127.0.0.1:8080")
        if given is None:
            raise GpuwardenError(f"no API token for {url} (--url / GPUWARDEN_URL): set "
                                 "GPUWARDEN_TOKEN or pass --token-file")
        base = url.rstrip("/").removesuffix("/api/v1")
        return Endpoint(base, given[0], "GPUWARDEN_URL", given[1])
    running = runtime.find_running(home)
    if not running:
        raise GpuwardenError(f"no running control plane found under {home} ($GPUWARDEN_HOME); "
                             "start `gpuwarden serve`, or set GPUWARDEN_URL and GPUWARDEN_TOKEN")
    if len(running) > 1:
        listed = "; ".join(f"{r.kind} at {r.url} (pid {r.pid}, {r.path})" for r in running)
        raise GpuwardenError(f"{len(running)} control planes are running under {home}: {listed}; "
                             "choose one with GPUWARDEN_URL (and GPUWARDEN_TOKEN)")
    [info] = running
    where = f"the running {info.kind} (pid {info.pid}, {info.path})"
    if given is not None:
        return Endpoint(info.url, given[0], where, given[1], local=True)
    return Endpoint(info.url, info.token, where, f"{info.kind}'s local admin token", local=True)


def problem_detail(response: httpx.Response) -> str:
    """The ``detail`` of a problem+json answer, or the start of whatever came instead."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    text = " ".join(response.text.split())
    return text[:200] or response.reason_phrase


def explain(endpoint: Endpoint, response: httpx.Response, *, what: str, needs: str = "viewer",
            options: Mapping[str, str] | None = None, sent: Mapping[str, Any] | None = None,
            not_found: str = "") -> str:
    """One line for a 4xx/5xx answer that names the fix.

    ``what``: the command, e.g. ``token create``; ``needs``: the role it needs; ``options``:
    API field -> CLI option, so a 422 (or a 404 naming a field) names the option (and
    the value ``sent`` for it);
    ``not_found``: the hint for a 404.
    """
    status, detail = response.status_code, problem_detail(response)
    given = endpoint.token_from.startswith(("GPUWARDEN_TOKEN", "--token-file"))
    drop = "unset GPUWARDEN_TOKEN" if endpoint.token_from == "GPUWARDEN_TOKEN" else \
        "leave out --token-file"
    own = f"{drop} to use the local control plane's own admin token"
    if status == 401:
        if not given:
            fix = "restart the control plane for a fresh local token"
        elif endpoint.local:
            fix = f"make one with `gpuwarden token create`, or {own}"
        else:
            fix = "make one with `gpuwarden token create` where the control plane runs"
        return (f"{endpoint.url} answered 401 ({detail}): check the token from "
                f"{endpoint.token_from}; {fix}")
    if status == 403:
        article = "an" if needs[0] in "aeiou" else "a"
        fix = own if endpoint.local else (
            f"pass one with GPUWARDEN_TOKEN or --token-file (an admin makes one with "
            f"`gpuwarden token create --role {needs}`)")
        return f"`gpuwarden {what}` needs {article} {needs} token ({detail}); {fix}"
    if status == 404 and not_found:
        return f"{detail}; {not_found}"
    if status in (404, 422):  # a 404 naming a field: what it names does not exist
        for field, option in (options or {}).items():
            if detail.startswith(f"{field}:"):
                rest = detail[len(field):]
                value = (sent or {}).get(field)
                if value is not None and repr(value) not in rest:
                    option = f"{option} {value!r}"
                return option + rest
        if status == 422:
            return detail
    hint = "; is that a gpuwarden control plane?" if status == 404 else ""
    return f"{endpoint.url} answered {status} to `gpuwarden {what}`: {detail}{hint}"


class ApiClient:
    """Calls under ``/api/v1`` of one control plane."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self._client = httpx.Client(base_url=endpoint.url + "/api/v1", timeout=timeout,
                                    headers={"Authorization": f"Bearer {endpoint.token}"})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, what: str, needs: str = "viewer",
                params: Mapping[str, Any] | None = None, json: Any = None,
                options: Mapping[str, str] | None = None, not_found: str = "",
                raw: bool = False, timeout: float | None = None) -> Any:
        """The decoded JSON answer (None for an empty one; with ``raw``, the body's text,
        e.g. CSV); a GpuwardenError otherwise.  ``timeout``: this call's, in seconds, for
        one that takes long (the checks)."""
        limit = self._client.timeout.read if timeout is None else timeout
        try:
            response = self._client.request(method, path, params=params, json=json,
                                            timeout=limit)
        except httpx.ConnectError as exc:
            raise GpuwardenError(unreachable(self.endpoint, exc)) from None
        except httpx.TimeoutException:
            raise GpuwardenError(f"{self.endpoint.url} ({self.endpoint.where}) did not answer "
                                 f"within {limit} s; is serve running?"
                                 ) from None
        except httpx.HTTPError as exc:
            raise GpuwardenError(f"{self.endpoint.url} ({self.endpoint.where}): {exc}; is "
                                 "serve running?") from None
        if response.status_code >= 400:
            raise GpuwardenError(explain(self.endpoint, response, what=what, needs=needs,
                                         options=options, sent=json or params,
                                         not_found=not_found))
        if raw:
            return response.text
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise GpuwardenError(f"{self.endpoint.url} ({self.endpoint.where}) answered "
                                 f"{method} /api/v1{path} with something that is not JSON; "
                                 "is that a gpuwarden control plane?") from None


def unreachable(endpoint: Endpoint, exc: Exception) -> str:
    reason = "connection refused" if "refused" in str(exc).lower() else str(exc) or "no answer"
    return (f"cannot reach the control plane at {endpoint.url} ({endpoint.where}): {reason}; "
            "is serve running?")


def connect(home: Path, *, url: str | None = None, token_file: Path | None = None) -> ApiClient:
    return ApiClient(find_endpoint(home, url=url, token_file=token_file))
