"""Secrets delivered once per boot instead of sitting in the pods' environment.

A cluster has an enrollment key (``$GPUWARDEN_HOME/clusters/<name>/enroll.key``, 0600);
its pods get only the key's SHA-256 (``GPUWARDEN_ENROLL_SHA256``).  On boot a pod's
bootstrap waits on the node port (:mod:`gpuwarden.providers.podagent` ``receive``) until
``gpuwarden up`` (or ``start``) posts the node token and munge key with the key as bearer
token; the agent checks the hash, writes the files 0600 and stops listening.  Someone who
can read the pod's environment (the RunPod API key, the console) learns no secret and
cannot deliver their own."""

from __future__ import annotations

import base64
import hashlib

import httpx

from gpuwarden.providers.base import ProviderError, Workspace
from gpuwarden.providers.podagent import SECRETS_PATH
from gpuwarden.providers.secrets import ensure_munge_key, ensure_token

ENV = "GPUWARDEN_ENROLL_SHA256"


def enrollment_key(ws: Workspace) -> str:
    return ensure_token(ws.directory / "enroll.key")


def enrollment_env(ws: Workspace) -> dict[str, str]:
    """What a pod's environment carries: the enrollment key's hash, no secret."""
    return {ENV: hashlib.sha256(enrollment_key(ws).encode()).hexdigest()}


def deliver_secrets(http: httpx.Client, ws: Workspace, url: str, pod: str) -> None:
    """Post the cluster's node token and munge key to the bootstrapping pod at ``url``."""
    body = {"node_token": ensure_token(ws.token_file(ws.name)),
            "munge_key_b64": base64.b64encode(
                ensure_munge_key(ws.directory / "munge.key")).decode()}
    try:
        response = http.post(url + SECRETS_PATH, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {enrollment_key(ws)}"})
    except httpx.HTTPError as exc:
        raise ProviderError(f"pod {pod}: delivering its secrets failed "
                            f"({type(exc).__name__}); `gpuwarden up` again retries") from None
    # 409: delivered already (a retried post that took effect)
    if response.status_code not in (204, 409):
        raise ProviderError(f"pod {pod}: it refused its secrets (HTTP "
                            f"{response.status_code}: {response.text[:200]}); was the "
                            "cluster's directory replaced? `gpuwarden down` then `up`")
