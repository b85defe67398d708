"""Reclaim: stop paying for idle GPUs.  A warning ladder for Slurm jobs whose GPUs sit idle
(warn the owner, then cancel, requeue or hold under an explicit policy), and what it saved."""

from gpuwarden.reclaim.engine import Candidate, Reclaimer

__all__ = ["Candidate", "Reclaimer"]
