"""``gpuwarden slurm ...``: config generation and the local multi-node cluster."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpuwarden.slurm.config import load_cluster, render_config
from gpuwarden.slurm.errors import SlurmError
from gpuwarden.slurm.local import LocalClusterStatus, LocalSlurmCluster

app = typer.Typer(name="slurm", help="Slurm: configuration and a local multi-node cluster.",
                  no_args_is_help=True)
local_app = typer.Typer(name="local", help="A real Slurm cluster on this machine.",
                        no_args_is_help=True)
app.add_typer(local_app, name="local")

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Cluster directory [default: $GPUWARDEN_HOME/slurm-local]"),
]


def default_local_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$GPUWARDEN_HOME/slurm-local`` (``GPUWARDEN_HOME`` defaults to
    ``~/.local/share/gpuwarden``)."""
    env = os.environ if env is None else env
    home = env.get("GPUWARDEN_HOME") or str(Path("~/.local/share/gpuwarden").expanduser())
    return Path(home) / "slurm-local"


def _console() -> Console:
    return Console()


def _fail(exc: Exception) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


@app.command("config")
def config_command(
    cluster: Annotated[Path, typer.Option("--cluster", help="Cluster description (YAML).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the files to.")],
) -> None:
    """Render slurm.conf, gres.conf (and cgroup.conf for real nodes) from a description."""
    try:
        spec = load_cluster(cluster)
        written = render_config(spec).write(out)
    except (SlurmError, OSError) as exc:
        raise _fail(exc) from None
    console = _console()
    for path in written:
        console.print(f"wrote [bold]{path}[/]")


@local_app.command("up")
def local_up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=64, help="Worker nodes.")] = 3,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=0, max=16,
                                               help="Fake GPUs per node.")] = 2,
    directory: DirOption = None,
    accounting: Annotated[bool | None, typer.Option(
        "--accounting/--no-accounting",
        help="slurmdbd on a private MariaDB, so sacct knows finished jobs (default: when "
             "mariadb-server and slurmdbd are installed).")] = None,
) -> None:
    """Start munged (and with accounting, MariaDB and slurmdbd), slurmctld and one slurmd
    per node; wait until all nodes are idle."""
    console = _console()
    cluster = LocalSlurmCluster(directory or default_local_dir(), nodes=nodes,
                                gpus_per_node=gpus_per_node, accounting=accounting)
    try:
        with console.status("starting Slurm") as status:
            cluster.progress = lambda text: status.update(text)
            result = cluster.up()
    except (SlurmError, OSError) as exc:
        raise _fail(exc) from None
    _print_status(console, result)
    console.print(f"client commands need: [bold]export SLURM_CONF={cluster.conf_path}[/]")


@local_app.command("status")
def local_status(directory: DirOption = None) -> None:
    """Show the local cluster's daemons and nodes."""
    cluster = LocalSlurmCluster(directory or default_local_dir())
    if not cluster.conf_path.exists():
        raise _fail(SlurmError(f"no local cluster in {cluster.directory}; "
                               "start one with `gpuwarden slurm local up`"))
    result = cluster.status()
    _print_status(_console(), result)
    if not result.running:
        raise typer.Exit(code=1)


@local_app.command("down")
def local_down(directory: DirOption = None) -> None:
    """Stop every process of the local cluster."""
    cluster = LocalSlurmCluster(directory or default_local_dir())
    try:
        stopped = cluster.down()
    except (SlurmError, OSError) as exc:
        raise _fail(exc) from None
    console = _console()
    if stopped:
        console.print(f"stopped {', '.join(stopped)}")
    else:
        console.print("nothing was running")


def _print_status(console: Console, status: LocalClusterStatus) -> None:
    procs = Table(title=f"Local Slurm cluster in {status.directory}")
    procs.add_column("process")
    procs.add_column("pid", justify="right")
    procs.add_column("state")
    for proc in status.processes:
        procs.add_row(proc.name, str(proc.pid or "-"),
                      "[green]running[/]" if proc.alive else "[red]stopped[/]")
    console.print(procs)
    if status.nodes:
        table = Table(title="Nodes")
        for column in ("node", "state", "CPUs alloc/total", "GPUs alloc/total", "reason"):
            table.add_column(column)
        for node in status.nodes:
            colour = "green" if node.state in ("idle", "mixed", "allocated") else "yellow"
            table.add_row(node.name, f"[{colour}]{node.state}[/]",
                          f"{node.cpus_alloc}/{node.cpus_total}",
                          f"{node.gpus_alloc}/{node.gpus_total}", node.reason)
        console.print(table)
    if status.error:
        console.print(f"[yellow]{status.error}[/]", highlight=False)
