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
    for noisy in ("httpx", "httpcore", "apprise"):  # a line per request is not a log
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


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
    slurm: Annotated[
        bool, typer.Option("--slurm", help="Map GPUs to the Slurm jobs allocated them (runs a "
                           "Slurm collector; simulated GPUs then follow their jobs).")
    ] = False,
    slurm_controller: Annotated[
        bool, typer.Option("--slurm-controller", help="On the Slurm controller's node: also "
                           "export Slurm metrics and serve the Slurm API and actions.")
    ] = False,
    slurm_node: Annotated[
        str | None, typer.Option(help="This machine's Slurm node name (default: --hostname).")
    ] = None,
    slurm_interval: Annotated[float, typer.Option(help="Seconds between Slurm snapshots.")] = 15.0,
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
            slurm=slurm,
            slurm_controller=slurm_controller,
            slurm_node=slurm_node,
            slurm_interval=slurm_interval,
        )
    )


@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Option(help="YAML configuration (nodes, scrape, store); else env GPUWARDEN_CONFIG."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
) -> None:
    """Run the control plane: inventory, scraper, metrics store and API."""
    from gpuwarden.server import ServeOptions, run_serve

    run_serve(ServeOptions(config=config, host=host, port=port))


def _mount_slurm() -> None:
    from gpuwarden.slurm.cli import app as slurm_app

    app.add_typer(slurm_app, name="slurm", help="Slurm: config generation and a local "
                  "multi-node cluster.")


_mount_slurm()


def _mount_providers() -> None:
    from gpuwarden.providers.cli import down_command, status_command, up_command

    app.command("up")(up_command)
    app.command("status")(status_command)
    app.command("down")(down_command)


_mount_providers()

@app.command()
def demo(
    nodes: Annotated[int, typer.Option(help="Nodes in the local cluster.")] = 3,
    gpus_per_node: Annotated[int, typer.Option(help="Simulated GPUs per node.")] = 4,
    port: Annotated[int, typer.Option(help="Port of the control plane and web UI.")] = 8080,
    duration: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds.")] = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="Plain log lines, for scripts and CI.")] = False,
) -> None:
    """The whole system on this machine: a local cluster with simulated GPUs (and real Slurm
    when installed), the control plane, the web UI and a workload. Ctrl-C stops it all."""
    from gpuwarden.demo import DemoOptions, run_demo

    run_demo(DemoOptions(nodes=nodes, gpus_per_node=gpus_per_node, port=port,
                         duration=duration, headless=headless))


token_app = typer.Typer(help="API tokens (viewer, operator, admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _tokens():  # -> TokenStore
    from gpuwarden.config import Settings
    from gpuwarden.state.db import StateDB
    from gpuwarden.state.tokens import TokenStore

    return TokenStore(StateDB(Settings().home / "state.db"))


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="viewer (reads), operator (acts), admin (manages).")]
    = "viewer",
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")] = "",
) -> None:
    """Create an API token; it is printed once, alone on the last line."""
    token = _tokens().create(role, name)
    print(f"created a {role} token; it is shown once:", file=sys.stderr)
    print(token)


@token_app.command("list")
def token_list() -> None:
    """List API tokens (never the tokens themselves)."""
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "role", "prefix", "last used", "revoked")
    for t in _tokens().list():
        used = dt.datetime.fromtimestamp(t.last_used_at).isoformat(" ", "seconds") if (
            t.last_used_at) else "never"
        table.add_row(str(t.id), t.name, t.role, t.prefix + "…", used, "yes" if t.revoked else "")
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id from `token list`.")],
) -> None:
    """Revoke an API token."""
    if not _tokens().revoke(token_id):
        raise GpuwardenError(f"no active token with id {token_id}; see `gpuwarden token list`")
    print(f"token {token_id} revoked")


export_app = typer.Typer(help="Export gpuwarden's configuration for other tools.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


def _serve_config(config: Path | None):  # -> ServeConfig
    from gpuwarden.config import ServeConfig, Settings, load_config

    path = config or Settings().config
    return load_config(path) if path else ServeConfig()


@export_app.command("prometheus-rules")
def export_prometheus_rules(
    config: Annotated[Path | None, typer.Option(help="gpuwarden.yaml (rule overrides).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """The watchdog's rules as Prometheus alerting rules (check with promtool check rules)."""
    from gpuwarden.services.export import alerting_rules

    text = alerting_rules(_serve_config(config))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


@export_app.command("prometheus")
def export_prometheus(
    out: Annotated[Path, typer.Option(help="Directory for prometheus.yml and the rules.")],
    config: Annotated[Path | None, typer.Option(help="gpuwarden.yaml (nodes, rules).")] = None,
    scrape_interval: Annotated[float | None, typer.Option(
        help="Seconds (default: the config's scrape.interval).")] = None,
) -> None:
    """A Prometheus configuration that scrapes every node of the inventory (bearer tokens
    from files, never inline), loads the watchdog's alerting rules and the cost recording
    rules. Check with promtool check config."""
    from gpuwarden.config import Settings
    from gpuwarden.services.export import export_prometheus as export

    paths = export(_serve_config(config), Settings().home, out, scrape_interval=scrape_interval)
    print("wrote " + ", ".join(str(p) for p in paths))


@export_app.command("grafana")
def export_grafana(
    out: Annotated[Path, typer.Option(help="Grafana provisioning directory to write.")],
    prometheus_url: Annotated[str, typer.Option(
        help="URL Grafana reaches Prometheus at.")] = "http://127.0.0.1:9090",
    grafana_path: Annotated[str | None, typer.Option(
        help="Where Grafana sees --out, e.g. /etc/grafana/provisioning in a container "
        "(default: --out).")] = None,
    datasource: Annotated[bool, typer.Option(
        help="Provision the Prometheus datasource (--no-datasource: dashboards only).")] = True,
    default_datasource: Annotated[bool, typer.Option(
        help="Make it Grafana's default datasource.")] = False,
    scrape_interval: Annotated[float, typer.Option(
        help="Prometheus' scrape interval in seconds (Grafana's $__rate_interval).")] = 15.0,
) -> None:
    """Grafana provisioning: a Prometheus datasource and gpuwarden's dashboards (cluster
    overview, GPUs, Slurm, waste and cost) in a `gpuwarden` folder."""
    from gpuwarden.services.export import export_grafana as export

    paths = export(out, prometheus_url=prometheus_url, grafana_path=grafana_path,
                   default_datasource=default_datasource, scrape_interval=scrape_interval,
                   with_datasource=datasource)
    print(f"wrote {len(paths)} files under {out}")


def _control_plane_offline(config: Path | None):  # -> ControlPlane, for local CLI reads
    from gpuwarden.config import Settings
    from gpuwarden.server import open_control_plane

    return open_control_plane(_serve_config(config), Settings().home, sync=False)


@app.command()
def alerts(
    state: Annotated[str | None, typer.Option(
        help="pending, firing, resolved or all (default: open ones)")] = None,
    config: Annotated[Path | None, typer.Option(help="gpuwarden.yaml")] = None,
) -> None:
    """List alerts from the control plane's state database (run where `serve` runs)."""
    import datetime as dt

    from rich.console import Console
    from rich.table import Table

    from gpuwarden.services import alerts as svc

    if state not in (None, "pending", "firing", "resolved", "all"):
        raise GpuwardenError(f"--state {state!r}: use pending, firing, resolved or all")
    cp = _control_plane_offline(config)
    table = Table("id", "state", "severity", "since", "summary", "silenced")
    for a in svc.list_alerts(cp, state):
        since = dt.datetime.fromtimestamp(a.fired_at or a.started_at).isoformat(" ", "seconds")
        table.add_row(str(a.id), a.state, a.severity, since, a.summary,
                      "yes" if a.silenced else "")
    Console().print(table)


silence_app = typer.Typer(help="Silence alerts (notifications stop; alerts are still recorded).",
                          no_args_is_help=True)
app.add_typer(silence_app, name="silence")


@silence_app.command("add")
def silence_add(
    author: Annotated[str, typer.Option(help="Who silences (recorded).")],
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")] = "2h",
    rule: Annotated[str | None, typer.Option(help="Only this rule (default: all).")] = None,
    subject: Annotated[str, typer.Option(help="Subject glob, e.g. node1/*.")] = "*",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    config: Annotated[Path | None, typer.Option(help="gpuwarden.yaml")] = None,
) -> None:
    """Silence matching alerts for a while."""
    import datetime as dt

    from gpuwarden.services import alerts as svc
    from gpuwarden.services.models import NewSilence

    cp = _control_plane_offline(config)
    s = svc.add_silence(cp, NewSilence(rule=rule, subject=subject, duration=duration,
                                       comment=comment), author)
    until = dt.datetime.fromtimestamp(s.expires_at).isoformat(" ", "seconds")
    print(f"silence {s.id}: rule {s.rule or '*'} subject {s.subject} until {until}")


@silence_app.command("list")
def silence_list(config: Annotated[Path | None, typer.Option(help="gpuwarden.yaml")] = None,
                 ) -> None:
    """Active silences."""
    from gpuwarden.services import alerts as svc

    for s in svc.list_silences(_control_plane_offline(config)):
        print(f"{s.id}\t{s.rule or '*'}\t{s.subject}\t{s.author}\t{s.comment}")


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="The id from `silence list`.")],
    author: Annotated[str, typer.Option(help="Who ends it (recorded).")],
    config: Annotated[Path | None, typer.Option(help="gpuwarden.yaml")] = None,
) -> None:
    """End a silence now."""
    from gpuwarden.services import alerts as svc

    svc.expire_silence(_control_plane_offline(config), silence_id, author)
    print(f"silence {silence_id} expired")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help='e.g. "why is job 42 pending?"')],
    url: Annotated[str, typer.Option(envvar="GPUWARDEN_URL", help="The control plane.")
                   ] = "http://127.0.0.1:8080",
    token_file: Annotated[Path | None, typer.Option(
        help="File holding an API token (default: $GPUWARDEN_TOKEN).")] = None,
) -> None:
    """Ask the ops agent (through a running `serve`). Answers stream; each action it proposes
    is shown exactly and asked y/N. Without agent.model configured, the analyzers answer."""
    import os

    from gpuwarden.agent.terminal import Asker, terminal_confirm

    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise GpuwardenError(f"--token-file {token_file}: cannot read it ({exc.strerror})"
                                 ) from None
    else:
        token = os.environ.get("GPUWARDEN_TOKEN", "")
    if not token:
        raise GpuwardenError("no API token: set GPUWARDEN_TOKEN or pass --token-file "
                             "(`gpuwarden token create --role viewer` makes one)")

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    run = Asker(url, token, out, terminal_confirm()).ask(question)
    if run["status"] == "failed":
        raise typer.Exit(1)


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
