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
  default PyPI: by name, unless
* ``requirements`` (+ optional ``requirements_sha256``), with ``wheel``: the URL of a
  requirements file that pins every dependency by hash (``name==version
  --hash=sha256:...``: ``pip-compile --generate-hashes`` writes one, and so does
  ``python -m gpuwarden.providers.install requirements WHEELHOUSE_DIR`` for a directory of
  wheels).  ``up`` downloads it, computes its SHA-256 (refused when it is not a pinned
  ``requirements_sha256``), refuses it unless every requirement in it is pinned by hash
  and none is gpuwarden, and hands URL and hash to the pods, which check the file's bytes
  and install gpuwarden and every dependency in one ``pip install --require-hashes
  --only-binary=:all:``: nothing that is not pinned by hash is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from gpuwarden import __version__
from gpuwarden.providers.base import ProviderError
from gpuwarden.providers.spec import ClusterDescription

MAX_WHEEL_BYTES = 256 * 1024 * 1024
# a hash-pinned requirements file; the pods' bootstrap reads no more than this either
MAX_REQUIREMENTS_BYTES = 4 * 1024 * 1024

HOW_TO_CHOOSE = (
    "runpod.install: say where the pods get gpuwarden (no package named gpuwarden on a "
    "public index is trusted): an image that contains it, built from deploy/node.Dockerfile "
    "(`runpod: {install: {image: ghcr.io/you/gpuwarden-node:" + __version__ + "}}`), or a "
    "wheel you host, pinned by its hash (`runpod: {install: {wheel: "
    "https://example.com/gpuwarden-" + __version__ + "-py3-none-any.whl, sha256: <sha256sum "
    "of the file>}}`; build it with `python -m build --wheel`); nothing was created")

# pip's requirements-file syntax: a comment starts a line or follows whitespace
_COMMENT = re.compile(r"(^|\s+)#.*$")
_HASH = re.compile(r"--hash[=\s]sha256:[0-9a-f]{64}(\s|$)")
_PINNED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(===?|@)")
# options that only say where the pinned files come from (the hashes still pin the bytes)
_WHERE_FROM = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f",
               "--trusted-host", "--no-index", "--prefer-binary", "--only-binary",
               "--no-binary")


def wheel_version(url: str) -> str:
    """The version in a wheel URL's file name (``gpuwarden-0.1.0-py3-none-any.whl``)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name.split("-")[1] if name.count("-") >= 4 else ""


def project_name(name: str) -> str:
    """A distribution's normalized name (PEP 503): ``Pydantic_Core`` -> ``pydantic-core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_of(http: httpx.Client, url: str, *, field: str = "runpod.install.wheel",
              what: str = "the gpuwarden wheel", limit: int = MAX_WHEEL_BYTES,
              into: bytearray | None = None) -> str:
    """SHA-256 of what ``url`` serves (at most ``limit`` bytes, appended to ``into`` when
    given); errors name ``field``."""
    digest, size = hashlib.sha256(), 0
    try:
        with http.stream("GET", url, follow_redirects=True, timeout=120) as response:
            if response.status_code != 200:
                raise ProviderError(f"{field}: GET {url} answered HTTP "
                                    f"{response.status_code}; give the URL of {what} the "
                                    "pods can download (nothing was created)")
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ProviderError(f"{field}: {url} is over {limit >> 20} MiB; is it "
                                        f"{what}? (nothing was created)")
                digest.update(chunk)
                if into is not None:
                    into += chunk
    except httpx.HTTPError as exc:
        raise ProviderError(f"{field}: cannot download {url} "
                            f"({type(exc).__name__}: {exc}); check the URL (nothing was "
                            "created)") from None
    return digest.hexdigest()


def requirement_lines(text: str) -> list[tuple[int, str]]:
    """The logical lines of a requirements file, as pip reads them: continuations joined,
    comments and blank lines dropped; each with the number of its first line."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if line.endswith("\\") and not _COMMENT.match(line):
            pending.append(line[:-1])
            continue
        if _COMMENT.match(line):  # as pip: a comment line ends a continuation
            line = " " + line
        logical = _COMMENT.sub("", "".join([*pending, line])).strip()
        pending = []
        if logical:
            out.append((start, logical))
    if pending and (logical := _COMMENT.sub("", "".join(pending)).strip()):
        out.append((start, logical))
    return out


def check_requirements(text: str, url: str) -> None:
    """Refuse (a :class:`ProviderError` naming the first bad line) a requirements file in
    which a requirement is not pinned by hash, that names gpuwarden, or that reaches past
    itself (``-r``/``-c`` another file, ``-e`` an editable: any option but where the
    files come from)."""
    field = "runpod.install.requirements"
    fix = ("every requirement must read `name==version --hash=sha256:...` (`pip-compile "
           "--generate-hashes` or `python -m gpuwarden.providers.install requirements "
           "WHEELHOUSE_DIR` writes such a file); nothing was created")
    lines = requirement_lines(text)
    if not any(not line.startswith("-") for _, line in lines):
        raise ProviderError(f"{field}: {url} lists no requirement; {fix}")
    for number, line in lines:
        shown = " ".join(line.split())
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        if line.startswith("-"):
            option = re.split(r"[=\s]", line, maxsplit=1)[0]
            if option not in _WHERE_FROM:
                raise ProviderError(
                    f"{field}: {url} line {number} ({shown!r}): {option} is not allowed in a "
                    "hash-pinned requirements file (only options saying where the files come "
                    f"from, such as --index-url); {fix}")
            continue
        pinned = _PINNED.match(line)
        if pinned is None or not _HASH.search(line):
            raise ProviderError(f"{field}: {url} line {number} ({shown!r}) is not pinned to "
                                f"one version by hash; {fix}")
        if project_name(pinned.group("name")) == "gpuwarden":
            raise ProviderError(
                f"{field}: {url} line {number} ({shown!r}) names gpuwarden itself, which "
                "runpod.install.wheel and sha256 pin; drop that line (nothing was created)")


def pinned_requirements(directory: Path) -> str:
    """A hash-pinned requirements file for the wheels in ``directory`` (one line per
    project and version, with the hash of each of its wheels); gpuwarden's own wheels are
    left out (``runpod.install.wheel`` pins those)."""
    wheels: dict[tuple[str, str], list[str]] = {}
    for path in sorted(directory.glob("*.whl")):
        parts = path.name.split("-")
        if len(parts) < 5:
            raise ValueError(f"{path}: not a wheel's file name (name-version-python-abi-"
                             "platform.whl)")
        project = project_name(parts[0])
        if project == "gpuwarden":
            continue
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        wheels.setdefault((project, parts[1]), []).append(digest)
    versions: dict[str, list[str]] = {}
    for project, version in wheels:
        versions.setdefault(project, []).append(version)
    if twice := {p: v for p, v in versions.items() if len(v) > 1}:
        raise ValueError(f"{directory}: more than one version of "
                         + ", ".join(f"{p} ({', '.join(v)})" for p, v in twice.items())
                         + "; keep one version of each project")
    if not wheels:
        raise ValueError(f"{directory}: no wheel in it (make one with `pip download -d "
                         f"{directory} ...` or `pip wheel -w {directory} ...`)")
    return "".join(f"{project}=={version}" + "".join(f" \\\n    --hash=sha256:{h}"
                                                    for h in hashes) + "\n"
                   for (project, version), hashes in sorted(wheels.items()))


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
    if source.requirements:
        env.update(requirements_env(http, source.requirements, source.requirements_sha256))
    if source.index_url:
        env["GPUWARDEN_INSTALL_INDEX_URL"] = source.index_url
    return env


def requirements_env(http: httpx.Client, url: str, pinned: str | None) -> dict[str, str]:
    """Download and check a hash-pinned requirements file; the pods' env for it."""
    data = bytearray()
    computed = sha256_of(http, url, field="runpod.install.requirements",
                         what="a hash-pinned requirements file",
                         limit=MAX_REQUIREMENTS_BYTES, into=data)
    if pinned and pinned != computed:
        raise ProviderError(
            f"runpod.install.requirements_sha256: {url} has sha256 {computed}, not the "
            f"{pinned} the cluster file pins; the file changed or is not the one you made: "
            "check it, then fix requirements_sha256 (nothing was created)")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ProviderError(f"runpod.install.requirements: {url} is not a text file (UTF-8); "
                            "give the URL of a hash-pinned requirements file (nothing was "
                            "created)") from None
    check_requirements(text, url)
    return {"GPUWARDEN_INSTALL_REQUIREMENTS": url,
            "GPUWARDEN_INSTALL_REQUIREMENTS_SHA256": computed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuwarden.providers.install")
    sub = parser.add_subparsers(dest="command", required=True)
    reqs = sub.add_parser("requirements", help="print a hash-pinned requirements file for "
                          "the wheels in a directory (runpod.install.requirements)")
    reqs.add_argument("wheelhouse", type=Path, help="a directory of wheels, e.g. what "
                      "`pip download -d DIR --only-binary=:all: ...` filled")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(pinned_requirements(args.wheelhouse))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
