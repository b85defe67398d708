"""``gpuwarden up | status | down | replace``: Typer commands with Rich progress and tables.

Mount in ``gpuwarden/cli.py``::

    from gpuwarden.providers.cli import down_command, status_command, up_command
    app.command("up")(up_command)
    app.command("status")(status_command)
    app.command("down")(down_command)
app.command("replace")(replace_command)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpuwarden.errors import GpuwardenError

if TYPE_CHECKING:  # the CLI starts (and `gpuwarden node` runs) without the providers loaded
    from gpuwarden.providers.base import ClusterReport


def _db():  # -> StateDB
    from gpuwarden.config import Settings
    from gpuwarden.state.db import StateDB

    return StateDB(Settings().home / "state.db")


def up_command(
    description: Annotated[Path, typer.Argument(help="Cluster description (YAML).",
                                                metavar="CLUSTER.yaml")],
) -> None:
    """Create the cluster's nodes (only what is missing), wait until each is running and
    answering, and register them with the control plane."""
    from gpuwarden.providers.lifecycle import up
    from gpuwarden.providers.spec import load_description

    spec = load_description(description)
    console = Console(stderr=True, log_path=False)  # a timestamp, not cli.py:47
    with console.status(f"bringing up {spec.name}") as spinner:
        def progress(text: str) -> None:
            spinner.update(f"{spec.name}: {text}")
            console.log(text, highlight=False)

        report = up(spec, _db(), progress)
    Console().print(render_report(report))


def status_command(
    name: Annotated[str | None, typer.Argument(help="Cluster name (default: all).")] = None,
) -> None:
    """Nodes, their states, $/hr and the cost so far."""
    from gpuwarden.providers.lifecycle import list_clusters, status

    db = _db()
    names = [name] if name else list_clusters(db)
    console = Console()
    if not names:
        console.print("no clusters; bring one up with `gpuwarden up CLUSTER.yaml`")
        return
    for cluster in names:
        console.print(render_report(status(cluster, db)))


def down_command(
    name: Annotated[str, typer.Argument(help="Cluster name.")],
) -> None:
    """Terminate every node of the cluster (orphans included) and unregister it."""
    from gpuwarden.providers.lifecycle import down

    console = Console(stderr=True, log_path=False)  # a timestamp, not cli.py:47
    with console.status(f"taking down {name}") as spinner:
        def progress(text: str) -> None:
            spinner.update(f"{name}: {text}")
            console.log(text, highlight=False)

        report = down(name, _db(), progress)
    what = ", ".join(report.terminated) or "nothing was running"
    Console().print(f"{name}: down ({what}); unregistered {len(report.unregistered)} node(s)")


def replace_command(
    node: Annotated[str, typer.Argument(help="Node name (as `gpuwarden status` lists it).")],
    cluster: Annotated[str | None, typer.Option(
        help="Its cluster (default: the cluster that has a node of that name).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace it even while Slurm runs jobs on it (they are lost).")
    ] = False,
) -> None:
    """Terminate a node's machine and create a new one under the same name: drained in
    Slurm first, burned in, then back in service."""
    from gpuwarden.providers.lifecycle import list_clusters, replace_node
    from gpuwarden.providers.registry import home_of, load_saved

    db = _db()
    if cluster is None:
        home = home_of(db)
        owners = [c for c in list_clusters(db) if node in load_saved(home, c).node_names]
        if not owners:
            raise GpuwardenError(f"node {node!r} is not a node of any cluster `gpuwarden up` "
                                 "made; `gpuwarden status` lists them")
        cluster = owners[0]
    console = Console(stderr=True, log_path=False)  # a timestamp, not cli.py:47
    with console.status(f"replacing {node}") as spinner:
        def progress(text: str) -> None:
            spinner.update(f"{node}: {text}")
            console.log(text, highlight=False)

        report = replace_node(cluster, node, db, progress, force=force)
    Console().print(render_report(report))


def render_report(report: ClusterReport) -> Table:
    spent = "n/a" if report.cost_so_far is None else f"${report.cost_so_far:.2f}"
    table = Table(title=f"{report.name} ({report.provider}) — ${report.cost_per_hour:.2f}/hr, "
                        f"spent {spent}", title_justify="left")
    for column in ("node", "role", "state", "healthy", "GPUs", "$/hr", "id", "url"):
        table.add_column(column, justify="right" if column in ("GPUs", "$/hr") else "left")
    for n in report.nodes:
        state = f"[green]{n.status}[/]" if n.status == "RUNNING" else f"[yellow]{n.status}[/]"
        ok = {True: "yes", False: "[red]no[/]", None: "-"}[n.healthy]
        table.add_row(n.name, n.role, state, ok, "-" if n.gpus is None else str(n.gpus),
                      f"{n.cost_per_hour:.2f}", n.provider_id or "-", n.url or "-")
    if report.problems:
        table.caption = "; ".join(report.problems)
    return table


app = typer.Typer(help="Cluster lifecycle.", no_args_is_help=True)
app.command("up")(up_command)
app.command("status")(status_command)
app.command("down")(down_command)
app.command("replace")(replace_command)


def main() -> None:  # pragma: no cover - for `python -m gpuwarden.providers.cli`
    import sys

    try:
        app()
    except GpuwardenError as exc:
        print(f"gpuwarden: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
