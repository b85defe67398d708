"""gpuwarden: provision GPU machines, run Slurm on them, export and watch their GPUs."""

__version__ = "0.1.0"
