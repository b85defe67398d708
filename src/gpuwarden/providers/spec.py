"""The cluster description (``gpuwarden up CLUSTER.yaml``), validated with pydantic.

Smallest form::

    name: dev
    provider: local
    nodes: 2
    gpus_per_node: 2

Errors name the field and the fix, on one line (:class:`GpuwardenError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gpuwarden.config import format_validation_error
from gpuwarden.durations import Duration, parse_duration
from gpuwarden.errors import GpuwardenError
from gpuwarden.yamlfile import read_yaml

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _minutes(value: object) -> object:
    """``idle_minutes``: a number of minutes (``60``, ``"60"``) or a duration with its unit
    (``"90s"``, ``"30m"``, ``"2h"``), so tests can use seconds."""
    if isinstance(value, str) and value.strip() and not value.strip().replace(".", "", 1
                                                                              ).isdigit():
        return parse_duration(value) / 60
    return value


class Autostop(_Strict):
    """Stop (or terminate) a node after all its GPUs have been idle (and, with Slurm, no job
    has run on it) this long.  Enforced by ``gpuwarden serve``'s reclaim engine through
    ``lifecycle.stop_node``.  ``stop`` ends GPU billing and keeps the disk (``gpuwarden up``
    starts the node again); ``terminate`` removes the node, disk included."""

    idle_minutes: Annotated[float, BeforeValidator(_minutes),
                            Field(gt=0, le=7 * 24 * 60)] = 60.0
    action: Literal["stop", "terminate"] = "stop"
    # dry-run (the default) records what would be stopped; approve waits for an operator;
    # auto stops.  The admins are told warn_before the stop (capped at half the idle time).
    mode: Literal["dry-run", "approve", "auto"] = "dry-run"
    warn_before: Duration = 600.0

    @property
    def idle_s(self) -> float:
        return self.idle_minutes * 60

    @property
    def warn_at_s(self) -> float:
        """Idle seconds at which the warning goes out."""
        return self.idle_s - min(self.warn_before, self.idle_s / 2)


def cannot_stop(spec: ClusterDescription) -> str | None:
    """Why the nodes of ``spec`` cannot be stopped or removed one by one (None: they can).
    The one wording for the cluster file's ``autostop`` check and the providers' refusal."""
    if spec.provider == "static":
        return ("the static provider cannot stop machines (they are yours, not rented through "
                "gpuwarden); set autostop only for local or runpod clusters, and stop a "
                "static machine yourself")
    if spec.provider == "runpod" and spec.runpod.mode == "cluster":
        return ("runpod.mode cluster: RunPod manages an Instant Cluster's pods through the "
                "cluster and cannot stop or remove them one by one; use runpod.mode: pods for "
                "autostop, or `gpuwarden down` the whole cluster")
    return None


class Machine(_Strict):
    """A machine the user already has (``provider: static``)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    address: str
    token_file: Path | None = None
    role: Literal["controller", "worker"] = "worker"
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be the node daemon's URL, e.g. http://10.0.0.5:9400")
        return value.rstrip("/")


class InstallSource(_Strict):
    """Where the pods get gpuwarden (``runpod.install``), exactly one of: ``image``, a pod
    image that already holds it (built from ``deploy/node.Dockerfile``), or ``wheel``, the
    URL of a wheel you host, with an optional ``sha256`` that ``gpuwarden up`` checks
    (it computes the hash either way and the pods install only those bytes), and an
    optional ``requirements``: the URL of a requirements file that pins every dependency
    by hash (``name==version --hash=sha256:...``, as ``pip-compile --generate-hashes`` or
    ``python -m gpuwarden.providers.install requirements WHEELHOUSE`` write it), with an
    optional ``requirements_sha256`` (without ``requirements`` the dependencies are
    installed by name), and an optional ``index_url``: the package index (PEP 503 "simple"
    API) the pods' pip takes gpuwarden's dependencies from (default: PyPI).  See
    :mod:`gpuwarden.providers.install`."""

    image: Annotated[str | None, Field(min_length=1)] = None
    wheel: str | None = None
    sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    requirements: str | None = None
    requirements_sha256: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    index_url: str | None = None

    @field_validator("index_url")
    @classmethod
    def _index_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
            raise ValueError("must be the http(s) URL of a package index (PEP 503 simple "
                             "API), e.g. https://pypi.org/simple")
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
            raise ValueError("must be the http(s) URL of a requirements file that pins every "
                             "dependency by hash, e.g. https://example.com/requirements.txt "
                             "(make it with pip-compile --generate-hashes)")
        return value

    @field_validator("wheel")
    @classmethod
    def _wheel(cls, value: str | None) -> str | None:
        if value is None:
            return value
        name = value.split("?")[0].rsplit("/", 1)[-1]
        if not value.startswith(("https://", "http://")) or not (
                name.startswith("gpuwarden-") and name.endswith(".whl")):
            raise ValueError("must be the http(s) URL of a gpuwarden wheel, e.g. "
                             "https://example.com/gpuwarden-0.1.0-py3-none-any.whl")
        return value

    @model_validator(mode="after")
    def _one(self) -> InstallSource:
        if (self.image is None) == (self.wheel is None):
            raise ValueError("set exactly one of image (a pod image with gpuwarden inside) "
                             "and wheel (the URL of a gpuwarden wheel you host)")
        if self.sha256 and not self.wheel:
            raise ValueError("sha256 pins a wheel; with image, drop sha256")
        if self.index_url and not self.wheel:
            raise ValueError("index_url is where a wheel's dependencies come from; with "
                             "image, drop index_url")
        if self.requirements and not self.wheel:
            raise ValueError("requirements pins a wheel's dependencies; with image, drop "
                             "requirements")
        if self.requirements_sha256 and not self.requirements:
            raise ValueError("requirements_sha256 pins the requirements file; set "
                             "requirements (its URL) or drop requirements_sha256")
        return self


class RunPodOptions(_Strict):
    """RunPod specifics (``provider: runpod``)."""

    mode: Literal["pods", "cluster"] = "pods"
    cloud: Literal["SECURE", "COMMUNITY"] = "SECURE"
    api_key_file: Path | None = None
    node_port: Annotated[int, Field(ge=1, le=65535)] = 9400
    install: InstallSource | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_version_pin(cls, data: object) -> object:
        if isinstance(data, dict) and "gpuwarden_version" in data:
            if data["gpuwarden_version"] is not None:
                raise ValueError("gpuwarden_version: removed (it installed gpuwarden by name "
                                 "from PyPI, where no such package of ours exists); set "
                                 "runpod.install to an image or a wheel instead")
            data = {k: v for k, v in data.items() if k != "gpuwarden_version"}
        return data


class ClusterDescription(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    provider: Literal["local", "static", "runpod"]
    nodes: Annotated[int, Field(ge=1, le=250)] = 1
    gpus_per_node: Annotated[int, Field(ge=1, le=16)] = 1
    gpu_type: str | None = None
    image: str = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
    region: list[str] = Field(default_factory=list)
    disk_gb: Annotated[int, Field(ge=1, le=4096)] = 50
    volume_gb: Annotated[int | None, Field(ge=10, le=4096)] = None
    network_volume: str | None = None
    market: Literal["on-demand", "spot"] = "on-demand"
    slurm: bool = True
    budget_per_hour: Annotated[float | None, Field(gt=0)] = None
    # local: what one GPU-hour costs you, so idle GPUs show the money they waste
    price_per_gpu_hour: Annotated[float, Field(ge=0)] = 0.0
    autostop: Autostop | None = None
    machines: list[Machine] = Field(default_factory=list)
    runpod: RunPodOptions = Field(default_factory=RunPodOptions)

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterDescription:
        if self.provider == "static":
            if not self.machines:
                raise ValueError("provider static needs machines: (a list of name, address, "
                                 "token_file, role)")
            names = [m.name for m in self.machines]
            if len(set(names)) != len(names):
                raise ValueError("machines: every machine needs a unique name")
            if sum(m.role == "controller" for m in self.machines) > 1:
                raise ValueError("machines: at most one machine can have role controller")
        elif self.machines:
            raise ValueError(f"machines: only provider static lists machines; provider "
                             f"{self.provider} creates its own (use nodes: N)")
        if self.provider == "runpod":
            if not self.gpu_type:
                raise ValueError("gpu_type: provider runpod needs a GPU type id, e.g. "
                                 "'NVIDIA GeForce RTX 4090' (see the RunPod catalog)")
            if self.market == "spot":
                raise ValueError("market: RunPod's REST API v2 cannot create spot "
                                 "(interruptible) pods; use market: on-demand")
            if self.volume_gb and self.network_volume:
                raise ValueError("volume_gb and network_volume: RunPod mounts one or the "
                                 "other; drop one of them")
            install = self.runpod.install
            default_image = type(self).model_fields["image"].default
            if install and install.image and self.image not in (install.image, default_image):
                raise ValueError("image and runpod.install.image: the pods run "
                                 "runpod.install.image; drop image")
            if self.runpod.mode == "cluster" and self.nodes < 2:
                raise ValueError("runpod.mode: an Instant Cluster has at least 2 nodes; set "
                                 "nodes: 2 or more, or use runpod.mode: pods")
        return self

    @property
    def pod_image(self) -> str:
        """The image the pods run: ``runpod.install.image`` when set, else ``image``."""
        install = self.runpod.install
        return install.image if install and install.image else self.image

    @property
    def node_count(self) -> int:
        return len(self.machines) if self.provider == "static" else self.nodes

    @property
    def node_names(self) -> list[str]:
        """The nodes' inventory names, node 1 first: ``<name>-node<i>``, or the machines'."""
        if self.provider == "static":
            return [m.name for m in self.machines]
        return [f"{self.name}-node{i}" for i in range(1, self.nodes + 1)]


def parse_description(data: object, source: str = "cluster description") -> ClusterDescription:
    if not isinstance(data, dict):
        raise GpuwardenError(f"{source}: the top level must be a mapping "
                             "(keys like name:, provider:, nodes:)")
    try:
        spec = ClusterDescription.model_validate(data)
    except ValidationError as exc:
        raise GpuwardenError(format_validation_error(source, exc)) from None
    # here, not in the model: a description saved before this check still loads for `down`
    if spec.autostop is not None and (why := cannot_stop(spec)):
        raise GpuwardenError(f"{source}: autostop: {why}")
    return spec


def load_description(path: Path) -> ClusterDescription:
    """Read and validate a cluster description from a YAML file."""
    return parse_description(read_yaml(path), str(path))
