"""Output-shape adapters: one module per shape, all producing :mod:`gpuwarden.slurm.model`.

A newer Slurm whose JSON differs gets one more module implementing
:class:`~gpuwarden.slurm.parsers.base.OutputShape`.
"""

from gpuwarden.slurm.parsers.base import OutputShape
from gpuwarden.slurm.parsers.data_parser import DataParserShape
from gpuwarden.slurm.parsers.sacct import parse_sacct, sacct_args
from gpuwarden.slurm.parsers.scontrol import parse_job_exit_codes, parse_job_gpu_details
from gpuwarden.slurm.parsers.sdiag import parse_sdiag
from gpuwarden.slurm.parsers.sshare import SSHARE_ARGS, parse_sshare
from gpuwarden.slurm.parsers.text import FieldFormatShape
from gpuwarden.slurm.parsers.v0_0_38 import V0038Shape

__all__ = [
    "SSHARE_ARGS",
    "DataParserShape",
    "FieldFormatShape",
    "OutputShape",
    "V0038Shape",
    "parse_job_exit_codes",
    "parse_job_gpu_details",
    "parse_sacct",
    "parse_sdiag",
    "parse_sshare",
    "sacct_args",
]
