"""Configuration: one YAML file plus ``GPUWARDEN_*`` environment variables.

Errors name the key and the fix: ``gpuwarden.yaml: nodes[1].url: ...``.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuwarden.durations import Duration
from gpuwarden.errors import GpuwardenError
from gpuwarden.yamlfile import read_yaml


def default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "gpuwarden"


class Settings(BaseSettings):
    """Environment: ``GPUWARDEN_HOME`` (state and data), ``GPUWARDEN_CONFIG``."""

    model_config = SettingsConfigDict(env_prefix="GPUWARDEN_", extra="ignore")

    home: Path = Field(default_factory=default_home, validate_default=True)
    config: Path | None = None

    @field_validator("home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # absolute, so the paths under it mean the same to the daemons started elsewhere
        return value.expanduser().absolute()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
    url: str
    token_file: Path | None = None
    role: Literal["controller", "worker"] = "worker"
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.0
    provider: str = "static"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://10.0.0.5:9400")
        return value.rstrip("/")


class ScrapeConfig(_Strict):
    # seconds; the lower bounds keep a typo (1e-9) from becoming a busy loop
    interval: Annotated[Duration, Field(ge=0.1, le=3600)] = 15.0
    timeout: Annotated[Duration, Field(ge=0.1, le=300)] = 5.0
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 64


class StoreConfig(_Strict):
    kind: Literal["sqlite", "prometheus"] = "sqlite"
    url: str | None = None  # Prometheus / VictoriaMetrics query API base URL
    raw_retention_hours: Annotated[float, Field(ge=0.1)] = 2.0
    retention_days: Annotated[float, Field(ge=0.1)] = 30.0

    @model_validator(mode="after")
    def _needs_url(self) -> StoreConfig:
        if self.kind == "prometheus" and not self.url:
            raise ValueError("store.kind prometheus needs store.url, e.g. http://127.0.0.1:9090")
        return self


class PolicyConfig(_Strict):
    rule: str
    action: Literal["drain_node", "stop_pod", "cancel_job", "replace_node"]
    mode: Literal["dry-run", "approve", "auto"] = "dry-run"
    name: str = ""


class ClusterWatchConfig(_Strict):
    rules: dict[str, Any] = Field(default_factory=dict)


class WatchdogConfig(_Strict):
    enabled: bool = True
    interval: Annotated[Duration, Field(ge=0.1, le=3600)] = 15.0
    # Apprise URLs (they hold secrets: prefer notify_file, one URL a line)
    notify: list[str] = Field(default_factory=list)
    notify_file: Path | None = None
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 20
    rules: dict[str, Any] = Field(default_factory=dict)
    clusters: dict[str, ClusterWatchConfig] = Field(default_factory=dict)
    policies: list[PolicyConfig] = Field(default_factory=list)

    def notify_urls(self) -> list[str]:
        urls = list(self.notify)
        if self.notify_file is not None:
            try:
                text = self.notify_file.read_text()
            except OSError as exc:
                raise GpuwardenError(f"watchdog.notify_file {self.notify_file}: cannot read it "
                                     f"({exc.strerror})") from None
            urls += [line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#")]
        return urls


_SLURM_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


class OwnersConfig(_Strict):
    """Who a Slurm job's owner is to Apprise: ``notify`` is a template (``{user}`` is the
    Slurm user name), ``users`` overrides it per user, ``users_file`` (YAML ``user: URL``
    lines, kept out of the main file because URLs hold secrets) likewise.  Used by the
    end-of-job report and by reclaim's warnings.  A user with no URL gets no message."""

    notify: str | None = None  # e.g. "mailto://{user}@example.org"
    users: dict[str, str] = Field(default_factory=dict)
    users_file: Path | None = None

    @field_validator("notify")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            value.format(user="alice")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may hold only the placeholder {user}, e.g. "
                             "mailto://{user}@example.org (write {{ and }} for braces)") from None
        return value

    @model_validator(mode="after")
    def _readable(self) -> OwnersConfig:
        try:
            self._file_users()
        except GpuwardenError as exc:
            raise ValueError(str(exc).removeprefix("owners.users_file ")) from None
        return self

    def url_for(self, user: str) -> str | None:
        """The Apprise URL for ``user``, or None.  A name that is not a plain Unix/Slurm
        user name never reaches the template (it would be spliced into a URL)."""
        if not user or not _SLURM_USER.match(user):
            return None
        if user in self.users:
            return self.users[user]
        listed = self._file_users()
        if user in listed:
            return listed[user]
        return self.notify.format(user=user) if self.notify else None

    def _file_users(self) -> dict[str, str]:
        if self.users_file is None:
            return {}
        data = read_yaml(self.users_file, f"owners.users_file {self.users_file}") or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise GpuwardenError(f"owners.users_file {self.users_file}: must map user names "
                                 "to Apprise URLs, one `user: URL` a line")
        return {str(k): v for k, v in data.items()}


class InteractiveExempt(_Strict):
    """Interactive jobs (``salloc``, ``srun --pty``, notebooks) are kept while they are
    short and small.  squeue's format letters do not carry Slurm's BatchFlag, so an
    interactive job is recognised by its name (``names``, shell-style patterns)."""

    max_hours: Annotated[float, Field(gt=0)] = 8.0
    max_gpus: Annotated[int, Field(ge=1)] = 1
    names: list[str] = Field(default_factory=lambda: [
        "interactive", "bash", "sh", "zsh", "jupyter*", "sys/dashboard*", "spawner-jupyter*"])


class ReclaimExempt(_Strict):
    users: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    partitions: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)  # job-name patterns (fnmatch)
    interactive: InteractiveExempt | None = Field(default_factory=InteractiveExempt)
    # a job whose --comment holds this is kept (sbatch --comment gpuwarden:keep); null: the
    # policy refuses per-job opt-outs
    keep_comment: str | None = "gpuwarden:keep"


class JobReclaimConfig(_Strict):
    """The warning ladder for idle Slurm GPU jobs.  A GPU is idle over a stretch when its
    utilization stayed below ``idle_below`` % at every sample; a job is idle while fewer
    than ``busy_fraction`` of its GPUs are busy (unset: while none is)."""

    idle_below: Annotated[float, Field(gt=0, le=100)] = 5.0
    busy_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    warn_after: list[Duration] = Field(default_factory=lambda: [3600.0, 6300.0])
    act_after: Duration = 7200.0
    action: Literal["cancel", "requeue", "hold"] = "cancel"
    mode: Literal["dry-run", "approve", "auto"] = "dry-run"
    grace: Duration = 600.0
    exempt: ReclaimExempt = Field(default_factory=ReclaimExempt)

    @model_validator(mode="after")
    def _ladder(self) -> JobReclaimConfig:
        steps = [*self.warn_after, self.act_after]
        if self.act_after < 1:
            raise ValueError("act_after must be at least 1s")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("warn_after must rise and stay below act_after, e.g. "
                             "warn_after: [60m, 105m], act_after: 120m")
        return self


class ReclaimConfig(_Strict):
    """Reclaim idle GPUs (see README, "Reclaim").  ``enabled: false`` is the kill switch."""

    enabled: bool = True
    interval: Annotated[Duration, Field(ge=1)] = 30.0
    max_actions_per_cycle: Annotated[int, Field(ge=1, le=1000)] = 5
    stale_after: Annotated[Duration, Field(ge=1)] | None = None  # default: 3 scrape intervals
    jobs: JobReclaimConfig | None = None


class GradeThresholds(_Strict):
    """Jobstats' thresholds (its GPU_UTIL_RED / GPU_UTIL_BLACK, TIME_EFFICIENCY_RED /
    TIME_EFFICIENCY_BLACK), in %: a figure under ``*_poor`` is graded poor, under ``*_fair``
    fair, else good."""

    gpu_utilization_poor: Annotated[float, Field(ge=0, le=100)] = 15.0
    gpu_utilization_fair: Annotated[float, Field(ge=0, le=100)] = 25.0
    time_efficiency_poor: Annotated[float, Field(ge=0, le=100)] = 10.0
    time_efficiency_fair: Annotated[float, Field(ge=0, le=100)] = 60.0

    @model_validator(mode="after")
    def _ordered(self) -> GradeThresholds:
        for what in ("gpu_utilization", "time_efficiency"):
            if getattr(self, f"{what}_poor") > getattr(self, f"{what}_fair"):
                raise ValueError(f"{what}_poor must not be above {what}_fair, e.g. "
                                 f"{what}_poor: 10, {what}_fair: 25")
        return self


class ReportsConfig(_Strict):
    """Per-job reports (``gpuwarden jobstats``): when a GPU job ends its summary is stored
    (kept ``retention_days``) and, with ``end_of_job_message``, sent to its owner through
    the ``owners`` mapping.  ``min_runtime``: shorter jobs get no notes about unused GPUs
    (three times it: none about their time limit), as Jobstats' MIN_RUNTIME_SECONDS."""

    enabled: bool = True
    interval: Annotated[Duration, Field(ge=1)] = 30.0
    retention_days: Annotated[float, Field(ge=0.1)] = 365.0
    end_of_job_message: bool = False
    # write the summary to the job's AdminComment too (as Jobstats does, with sacctmgr:
    # needs slurmdbd): sacct then shows it
    admin_comment: bool = False
    min_runtime: Annotated[Duration, Field(ge=0)] = 300.0
    # peak GPU memory under this share of the GPU's: the report names the headroom
    memory_headroom_percent: Annotated[float, Field(ge=0, le=100)] = 50.0
    grades: GradeThresholds = Field(default_factory=GradeThresholds)


class AgentConfig(_Strict):
    """The ops agent's model.  Without ``model`` the agent answers from its deterministic
    analyzers only."""

    provider: Literal["openai", "anthropic"] = "openai"
    model: str | None = None  # e.g. gpt-4.1-mini, qwen2.5:14b on Ollama, claude-sonnet-4-5
    base_url: str | None = None  # any OpenAI-compatible endpoint: vLLM, Ollama, llama.cpp...
    api_key_env: str | None = None  # the name of the environment variable holding the key
    api_key_file: Path | None = None
    request_limit: Annotated[int, Field(ge=1, le=100)] = 12
    tool_calls_limit: Annotated[int, Field(ge=1, le=200)] = 30
    total_tokens_limit: Annotated[int, Field(ge=1000)] = 100_000
    timeout: Annotated[Duration, Field(ge=1, le=600)] = 120.0
    input_price_per_mtok: Annotated[float, Field(ge=0)] | None = None  # $ per 1M tokens
    output_price_per_mtok: Annotated[float, Field(ge=0)] | None = None

    def api_key(self) -> str | None:
        if self.api_key_file is not None:
            from gpuwarden.bearer import read_secret_file

            return read_secret_file(self.api_key_file,
                                    f"agent.api_key_file {self.api_key_file}", "the API key")
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise GpuwardenError(f"agent.api_key_env: ${self.api_key_env} is not set; "
                                     "export it or use agent.api_key_file")
            return key
        return None


CheckLevel = Literal["quick", "standard", "long"]  # node health check levels, cheapest first


class ChecksConfig(_Strict):
    """Node health checks (``checks:``): overrides of the shipped checks and what a failed
    check on a node in service does (the burn-in at ``up`` always keeps a failed node
    drained)."""

    checks: dict[str, Any] = Field(default_factory=dict)
    drain: Literal["dry-run", "approve", "auto"] = "dry-run"
    # and then: replace the failed node's machine (a pod `gpuwarden up` made; not the Slurm
    # controller, not static or Instant Cluster nodes), once no job runs on it
    replace: Literal["dry-run", "approve", "auto"] = "dry-run"
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    # periodic checks in `serve`: idle nodes, each held by an exclusive Slurm job meanwhile
    every: Annotated[Duration, Field(ge=1)] | None = None  # off unless set (e.g. 6h)
    max_parallel: Annotated[int, Field(ge=1, le=1000)] = 1
    level: CheckLevel = "quick"

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, Any]) -> dict[str, Any]:
        from gpuwarden.checks.spec import load_checks  # imports this module: not at the top

        try:
            load_checks(value)
        except GpuwardenError as exc:
            # the error names the field already ("checks.checks"): keep what follows it
            raise ValueError(str(exc).removeprefix("checks.checks").lstrip(".: ")) from None
        return value


class ServeConfig(_Strict):
    cluster: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")] = "default"
    nodes: list[NodeConfig] = Field(default_factory=list)
    scrape: ScrapeConfig = Field(default_factory=ScrapeConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    idle_utilization_percent: Annotated[float, Field(ge=0, le=100)] = 5.0
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    owners: OwnersConfig = Field(default_factory=OwnersConfig)
    reclaim: ReclaimConfig = Field(default_factory=ReclaimConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    # reverse proxies whose X-Forwarded-Proto/-For are believed (addresses or networks,
    # e.g. 127.0.0.1, 10.0.0.0/8); behind a TLS one the session cookie is marked Secure
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        normal = []
        for item in value:
            try:
                net = ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network; write e.g. "
                                 "127.0.0.1 or 10.0.0.0/8") from None
            normal.append(str(net) if "/" in item else str(net.network_address))
        return normal

    @model_validator(mode="after")
    def _unique_names(self) -> ServeConfig:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"node name {node.name!r} appears twice; names must be unique")
            seen.add(node.name)
        controllers = [n.name for n in self.nodes if n.role == "controller"]
        if len(controllers) > 1:
            raise ValueError(f"only one node can have role controller, found {controllers}")
        return self


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ""
        for item in err["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against the README's configuration reference"
        parts.append(f"{loc or '(top level)'}: {msg}")
    return f"{source}: " + "; ".join(parts)


def load_config(path: Path) -> ServeConfig:
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise GpuwardenError(f"{path}: the top level must be a mapping (keys like nodes:)")
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise GpuwardenError(format_validation_error(str(path), exc)) from None
