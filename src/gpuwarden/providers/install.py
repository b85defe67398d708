"""Where RunPod pods get gpuwarden (``runpod.install`` in the cluster file), checked by
``gpuwarden up`` before any pod is created.  Never an unpinned name from a public index:
no package named ``gpuwarden`` on PyPI is ours.

* ``image``: the pod image already holds gpuwarden (``deploy/node.Dockerfile``); the
  bootstrap skips its install step.
* ``wheel`` (+ optional ``sha256``): a wheel the user hosts.  ``up`` downloads it, computes
  its SHA-256 (and compares it with ``sha256`` when the file pins one) and hands the hash
  to the pods, which fetch it with ``pip download --require-hashes`` and stop before
  running anything when the bytes differ.  The wheel's version must be this control
  plane's.  Its dependencies come from ``index_url`` (``GPUWARDEN_INSTALL_INDEX_URL``),
  default PyPI.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote, urlsplit

import httpx

from gpuwarden import __version__
from gpuwarden.providers.base import ProviderError
from gpuwarden.providers.spec import ClusterDescription

MAX_WHEEL_BYTES = 256 * 1024 * 1024

HOW_TO_CHOOSE = (
    "runpod.install: say where the pods get gpuwarden (no package named gpuwarden on a "
    "public index is trusted): an image that contains it, built from deploy/node.Dockerfile "
    "(`runpod: {install: {image: ghcr.io/you/gpuwarden-node:" + __version__ + "}}`), or a "
    "wheel you host, pinned by its hash (`runpod: {install: {wheel: "
    "https://example.com/gpuwarden-" + __version__ + "-py3-none-any.whl, sha256: <sha256sum "
    "of the file>}}`; build it with `python -m build --wheel`); nothing was created")


def wheel_version(url: str) -> str:
    """The version in a wheel URL's file name (``gpuwarden-0.1.0-py3-none-any.whl``)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name.split("-")[1] if name.count("-") >= 4 else ""


def sha256_of(http: httpx.Client, url: str) -> str:
    """SHA-256 of what ``url`` serves (at most :data:`MAX_WHEEL_BYTES`)."""
    digest, size = hashlib.sha256(), 0
    try:
        with http.stream("GET", url, follow_redirects=True, timeout=120) as response:
            if response.status_code != 200:
                raise ProviderError(f"runpod.install.wheel: GET {url} answered HTTP "
                                    f"{response.status_code}; give the URL of the wheel the "
                                    "pods can download (nothing was created)")
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_WHEEL_BYTES:
                    raise ProviderError(f"runpod.install.wheel: {url} is over "
                                        f"{MAX_WHEEL_BYTES >> 20} MiB; is it the gpuwarden "
                                        "wheel? (nothing was created)")
                digest.update(chunk)
    except httpx.HTTPError as exc:
        raise ProviderError(f"runpod.install.wheel: cannot download {url} "
                            f"({type(exc).__name__}: {exc}); check the URL (nothing was "
                            "created)") from None
    return digest.hexdigest()


def install_env(spec: ClusterDescription, http: httpx.Client) -> dict[str, str]:
    """The pods' environment for their install step, after checking the source; a
    :class:`ProviderError` saying how to choose one when the cluster file has none."""
    source = spec.runpod.install
    if source is None:
        raise ProviderError(HOW_TO_CHOOSE)
    if source.image:
        return {"GPUWARDEN_SKIP_INSTALL": "1"}
    assert source.wheel is not None  # the model holds exactly one of image and wheel
    version = wheel_version(source.wheel)
    if version != __version__:
        shown = version or "(no version in its file name)"
        raise ProviderError(
            f"runpod.install.wheel: the wheel is gpuwarden {shown}, this control plane is "
            f"{__version__}; every node runs the control "
            "plane's version: build the wheel from this version (nothing was created)")
    computed = sha256_of(http, source.wheel)
    if source.sha256 and source.sha256 != computed:
        raise ProviderError(
            f"runpod.install.sha256: {source.wheel} has sha256 {computed}, not the "
            f"{source.sha256} the cluster file pins; the file changed or is not the one you "
            "built: check it, then fix sha256 (nothing was created)")
    env = {"GPUWARDEN_INSTALL_WHEEL": source.wheel, "GPUWARDEN_INSTALL_SHA256": computed}
    if source.index_url:
        env["GPUWARDEN_INSTALL_INDEX_URL"] = source.index_url
    return env
