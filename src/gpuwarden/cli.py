"""The ``gpuwarden`` command.  Heavy imports happen inside commands, so ``--help`` is fast
and the node daemon does not carry what it does not use."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from gpuwarden import __version__
from gpuwarden.errors import GpuwardenError

app = typer.Typer(
    name="gpuwarden",
    help="Provision GPU machines, run Slurm on them, export and watch their GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"gpuwarden {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def node(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 9400,
    gpu_backend: Annotated[
        str,
        typer.Option(help="auto (NVML, never a silent fallback), nvml, or sim (simulated GPUs)."),
    ] = "auto",
    sim_gpus: Annotated[int, typer.Option(help="Number of simulated GPUs.")] = 4,
    sim_model: Annotated[
        str, typer.Option(help="Simulated model: h100, h200, a100, l4, rtx4090.")
    ] = "h100",
    sim_profile: Annotated[
        str | None,
        typer.Option(
            help="Load profile for all simulated GPUs (idle, train, inference, thermal-throttle, "
            "xid-storm, lost) or per GPU: 0=train,3=idle."
        ),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between GPU polls.")] = 5.0,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token (else env GPUWARDEN_NODE_TOKEN)."),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve without a token; allowed on a loopback --host only."),
    ] = False,
    hostname: Annotated[
        str | None, typer.Option(help="Hostname label to export (default: this host's name).")
    ] = None,
) -> None:
    """Run the node daemon: export this machine's GPUs (dcgm-exporter compatible /metrics,
    JSON /api/v1/snapshot, /healthz)."""
    from gpuwarden.node.daemon import NodeOptions, run_node

    run_node(
        NodeOptions(
            host=host,
            port=port,
            gpu_backend=gpu_backend,
            sim_gpus=sim_gpus,
            sim_model=sim_model,
            sim_profile=sim_profile,
            interval=interval,
            token_file=token_file,
            no_auth=no_auth,
            hostname=hostname,
        )
    )


def main() -> None:
    try:
        app()
    except GpuwardenError as exc:
        print(f"gpuwarden: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
