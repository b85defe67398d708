"""Checks as data: the shipped defaults (``default_checks.yaml``) with the config file's
overrides (``checks.checks`` in gpuwarden.yaml).  Each check names a ``kind``: the code in
:mod:`gpuwarden.checks.passive` or :mod:`gpuwarden.checks.active` that measures it."""

from __future__ import annotations

import difflib
import functools
from importlib import resources
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpuwarden.config import CheckLevel as Level
from gpuwarden.config import format_validation_error
from gpuwarden.errors import GpuwardenError
from gpuwarden.yamlfile import parse_yaml

LEVELS: tuple[str, ...] = get_args(Level)  # cheapest first
PASSIVE_KINDS = ("gpu_count", "gpu_model", "pcie_link", "row_remap", "retired_pages",
                 "ecc_uncorrectable", "xids", "clocks_idle", "power_limit", "versions")
ACTIVE_KINDS = ("gpu_burn", "dcgm_diag", "nccl")
KINDS = PASSIVE_KINDS + ACTIVE_KINDS


class CheckSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    kind: Literal[KINDS]  # type: ignore[valid-type]
    level: Level = "quick"
    enabled: bool = True
    needs: list[str] = Field(default_factory=list)
    severity: Literal["warn", "fail"] = "fail"
    description: str = ""
    threshold: float | None = None
    # the nccl check across nodes: its bus bandwidth floor (GB/s; the network's, where
    # threshold is the one inside a node over NVLink/PCIe); None: not judged
    threshold_across: float | None = Field(None, gt=0)
    xid_class: Literal["hardware", "application"] | None = None
    seconds: float = Field(20.0, gt=0, le=3600)
    diag_level: Literal[1, 2, 3, 4] = 2
    # the nccl check across nodes: Slurm's MPI plugin for its ranks (srun --mpi=pmix; None:
    # the cluster's MpiDefault); nccl-tests must be built with MPI=1 for ranks to join up
    mpi: str | None = Field(None, pattern=r"^[a-z0-9_]{1,32}$")

    @field_validator("needs")
    @classmethod
    def _needs(cls, value: list[str]) -> list[str]:
        for need in value:
            kind, _, what = need.partition(":")
            if need in ("gpu", "nvml") or (kind in ("binary", "python") and what):
                continue
            raise ValueError(f"{need!r} is not a need; write gpu, nvml, binary:NAME or "
                             "python:MODULE (python:torch|cupy for either)")
        return value


@functools.cache
def _defaults() -> dict[str, dict[str, Any]]:
    """The shipped checks, parsed once (callers copy before changing them)."""
    text = resources.files("gpuwarden.checks").joinpath("default_checks.yaml").read_text()
    return parse_yaml(text, "gpuwarden/checks/default_checks.yaml")


def load_checks(overrides: dict[str, Any] | None = None, *,
                source: str = "checks.checks") -> list[CheckSpec]:
    """The shipped checks, then ``overrides`` (changed fields, ``false`` to turn one off, or
    a new check with its ``kind``), validated; errors name the check and the field."""
    raw = {name: dict(fields) for name, fields in _defaults().items()}
    if not isinstance(overrides or {}, dict):
        raise GpuwardenError(f"{source}: must be a mapping of check name -> fields")
    for name, fields in (overrides or {}).items():
        if fields is False:
            fields = {"enabled": False}
        if not isinstance(fields, dict):
            raise GpuwardenError(f"{source}.{name}: must be a mapping of fields (or false)")
        if name not in raw and "kind" not in fields:
            close = difflib.get_close_matches(str(name), list(raw), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"the checks are: {', '.join(raw)}"
            raise GpuwardenError(f"{source}: unknown check {name}; {hint} (a check of your "
                                 f"own needs a kind: {', '.join(KINDS)})")
        raw[name] = {**raw.get(name, {}), **fields}
    checks = []
    for name, fields in raw.items():
        try:
            check = CheckSpec.model_validate({**fields, "name": name})
        except ValidationError as exc:
            raise GpuwardenError(format_validation_error(f"{source}.{name}", exc)) from None
        if check.kind == "xids" and check.xid_class is None:
            raise GpuwardenError(f"{source}.{name}: kind xids needs xid_class: hardware or "
                                 "application")
        checks.append(check)
    return checks


def check_level(level: str, source: str = "--level") -> str:
    if level not in LEVELS:
        raise GpuwardenError(f"{source} {level!r}: use one of {', '.join(LEVELS)}")
    return level


def selected(checks: list[CheckSpec], level: str) -> list[CheckSpec]:
    """The enabled checks a run at ``level`` runs: its own and every lower level's."""
    upto = LEVELS.index(check_level(level))
    return [c for c in checks if c.enabled and LEVELS.index(c.level) <= upto]
