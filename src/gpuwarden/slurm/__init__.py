"""Slurm for gpuwarden: a command adapter, output-shape parsers into one model, a
background collector with Prometheus exposition, validated actions, configuration
generation and a local multi-node cluster. Usable as a library with no server running."""

from gpuwarden.slurm.actions import SlurmActions, SubmitOptions, validate_job_id
from gpuwarden.slurm.adapter import SlurmAdapter
from gpuwarden.slurm.allocation import JobRef, all_gpu_allocations, gpu_allocations
from gpuwarden.slurm.collector import SlurmCollector
from gpuwarden.slurm.config import (
    ClusterSpec,
    NodeSpec,
    PartitionSpec,
    RenderedConfig,
    cluster_from_dict,
    load_cluster,
    render_config,
)
from gpuwarden.slurm.errors import (
    AccountingDisabled,
    AuthError,
    BadRequest,
    CommandFailed,
    ControllerUnreachable,
    LocalClusterError,
    ParseError,
    SlurmError,
    SlurmNotInstalled,
    SlurmTimeout,
    ValidationError,
)
from gpuwarden.slurm.gres import GresItem, parse_gres
from gpuwarden.slurm.local import LocalClusterStatus, LocalSlurmCluster
from gpuwarden.slurm.metrics import SlurmMetricsCollector
from gpuwarden.slurm.model import (
    NodeInfo,
    SchedulerStats,
    SlurmJob,
    SlurmNode,
    SlurmPartition,
    SlurmSnapshot,
)
from gpuwarden.slurm.profiles import PROFILES, gpu_profiles, profile_from_comment
from gpuwarden.slurm.runner import CommandResult, Runner, SubprocessRunner

__all__ = [
    "PROFILES",
    "AccountingDisabled",
    "AuthError",
    "BadRequest",
    "ClusterSpec",
    "CommandFailed",
    "CommandResult",
    "ControllerUnreachable",
    "GresItem",
    "JobRef",
    "LocalClusterError",
    "LocalClusterStatus",
    "LocalSlurmCluster",
    "NodeInfo",
    "NodeSpec",
    "ParseError",
    "PartitionSpec",
    "RenderedConfig",
    "Runner",
    "SchedulerStats",
    "SlurmActions",
    "SlurmAdapter",
    "SlurmCollector",
    "SlurmError",
    "SlurmJob",
    "SlurmMetricsCollector",
    "SlurmNode",
    "SlurmNotInstalled",
    "SlurmPartition",
    "SlurmSnapshot",
    "SlurmTimeout",
    "SubmitOptions",
    "SubprocessRunner",
    "ValidationError",
    "all_gpu_allocations",
    "cluster_from_dict",
    "gpu_allocations",
    "gpu_profiles",
    "load_cluster",
    "parse_gres",
    "profile_from_comment",
    "render_config",
    "validate_job_id",
]
