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
    rich_markup_mode="markdown",  # a docstring's wrapped lines make one paragraph
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
    sim_fault: Annotated[
        str | None,
        typer.Option(help="Hardware fault of the simulated GPUs, for the node health checks: "
                     "pcie-degraded, row-remap-pending, gpu-missing, slow, ecc-storm, xid-79; or "
                     "per GPU: 1=pcie-degraded."),
    ] = None,
    sim_fault_file: Annotated[
        Path | None,
        typer.Option(help="File holding the simulated faults (same syntax as --sim-fault), "
                     "read again whenever it changes; empty or missing: --sim-fault."),
    ] = None,
    interval: Annotated[float, typer.Option(
        help="Seconds between GPU polls (at least 0.1).")] = 5.0,
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
    hostname_label: Annotated[
        str, typer.Option(help="Name of the GPU series' host label: Hostname (dcgm-exporter's) "
                          "or hostname (dcgm-exporter's new name for it).")
    ] = "Hostname",
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
    slurm_interval: Annotated[float, typer.Option(
        help="Seconds between Slurm snapshots (at least 1).")] = 15.0,
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
            sim_fault=sim_fault,
            sim_fault_file=sim_fault_file,
            interval=interval,
            token_file=token_file,
            no_auth=no_auth,
            hostname=hostname,
            hostname_label=hostname_label,
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
    from gpuwarden.providers.cli import (
        down_command,
        replace_command,
        status_command,
        up_command,
    )

    app.command("up")(up_command)
    app.command("status")(status_command)
    app.command("down")(down_command)
    app.command("replace")(replace_command)


_mount_providers()

@app.command()
def demo(
    nodes: Annotated[int, typer.Option(help="Nodes in the local cluster.")] = 3,
    gpus_per_node: Annotated[int, typer.Option(help="Simulated GPUs per node.")] = 4,
    port: Annotated[int, typer.Option(
        help="Port of the control plane and web UI. A second demo on this machine needs its "
             "own port and its own GPUWARDEN_HOME.")] = 8080,
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


token_app = typer.Typer(help="API tokens (viewer, operator, admin) of the running control plane.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")

UrlOption = Annotated[str | None, typer.Option(
    "--url", envvar="GPUWARDEN_URL", show_envvar=True,
    help="The control plane's URL (default: the one running under $GPUWARDEN_HOME).")]
TokenFileOption = Annotated[Path | None, typer.Option(
    help="File holding an API token (default: $GPUWARDEN_TOKEN; with neither, the local "
    "control plane's own admin token).")]


def _api(url: str | None, token_file: Path | None):  # -> ApiClient
    """The running control plane's API: --url/GPUWARDEN_URL, else its runtime file."""
    from gpuwarden.apiclient import connect
    from gpuwarden.config import Settings

    return connect(Settings().home, url=url, token_file=token_file)


def _when(ts: float | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).isoformat(" ", "seconds") if ts else "never"


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="viewer (reads), operator (acts), admin (manages).")]
    = "viewer",
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")] = "",
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Create an API token (needs an admin token); it is printed once, alone on the last
    line."""
    with _api(url, token_file) as api:
        created = api.request("POST", "/tokens", json={"role": role, "name": name},
                              what="token create", needs="admin",
                              options={"role": "--role", "name": "--name"})
    print(f"created a {created['role']} token; it is shown once:", file=sys.stderr)
    print(created["token"])


@token_app.command("list")
def token_list(url: UrlOption = None, token_file: TokenFileOption = None) -> None:
    """List API tokens (never the tokens themselves; needs an admin token)."""
    from rich.console import Console
    from rich.table import Table

    with _api(url, token_file) as api:
        tokens = api.request("GET", "/tokens", what="token list", needs="admin")
    table = Table("id", "name", "role", "prefix", "last used", "revoked")
    for t in tokens:
        table.add_row(str(t["id"]), t["name"], t["role"], t["prefix"] + "…",
                      _when(t["last_used_at"]), "yes" if t["revoked"] else "")
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The id from `token list`.")],
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Revoke an API token (needs an admin token)."""
    with _api(url, token_file) as api:
        api.request("DELETE", f"/tokens/{token_id}", what="token revoke", needs="admin",
                    options={"token_id": "TOKEN_ID"}, not_found="see `gpuwarden token list`")
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
    target: Annotated[str, typer.Option(
        help="prometheus, or victoriametrics (victoria-metrics -promscrape.config=prometheus.yml"
        " scrapes; vmalert -rule=... evaluates the rules).")] = "prometheus",
) -> None:
    """A Prometheus configuration that scrapes every node of the inventory (bearer tokens
    from files, never inline), loads the watchdog's alerting rules and the cost recording
    rules. Check with promtool check config."""
    from gpuwarden.config import Settings
    from gpuwarden.services.export import export_prometheus as export

    paths = export(_serve_config(config), Settings().home, out, scrape_interval=scrape_interval,
                   target=target)
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


@app.command()
def alerts(
    state: Annotated[str | None, typer.Option(
        help="pending, firing, resolved or all (default: open ones)")] = None,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """List the running control plane's alerts."""
    from rich.console import Console
    from rich.table import Table

    if state not in (None, "pending", "firing", "resolved", "all"):
        raise GpuwardenError(f"--state {state!r}: use pending, firing, resolved or all")
    with _api(url, token_file) as api:
        found = api.request("GET", "/alerts", params={"state": state} if state else None,
                            what="alerts")
    table = Table("id", "state", "severity", "since", "summary", "silenced")
    for a in found:
        table.add_row(str(a["id"]), a["state"], a["severity"],
                      _when(a["fired_at"] or a["started_at"]), a["summary"],
                      "yes" if a["silenced"] else "")
    Console().print(table)


VERDICT_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@app.command()
def check(
    nodes: Annotated[list[str] | None, typer.Argument(
        help="Nodes to check (default: every node of the inventory).")] = None,
    level: Annotated[str, typer.Option(
        help="quick (passive, seconds), standard (adds the GPU burn and dcgmi diag where "
        "installed) or long (adds dcgmi diag -r 3 and the NCCL all-reduce: across the "
        "nodes checked when two or more, through srun; inside one node otherwise).")
    ] = "quick",
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Run the node health checks through the running control plane: one row per check
    with its verdict, the measured figure and the expected one; exits 1 when one fails."""
    from rich.console import Console
    from rich.table import Table

    from gpuwarden.checks import check_level

    check_level(level)
    console = Console()
    failed = False
    with _api(url, token_file) as api:
        # one call for them all: on two or more nodes the NCCL check runs across them;
        # the long level runs for minutes (dcgmi diag -r 3, the GPU burn)
        results = api.request("POST", "/checks", json={"level": level, "nodes": nodes or []},
                              what="checks", needs="operator", timeout=CHECK_TIMEOUT[level])
        for result in results:
            name = result["node"]
            table = Table("check", "verdict", "figure", "expected",
                          title=f"{name} ({level})", title_justify="left")
            run = result["runs"][0] if result["runs"] else None
            if run is not None and run["error"]:
                console.print(f"[bold red]{name}: the node did not answer: {run['error']}")
                failed = True
                continue
            for r in run["results"] if run else []:
                table.add_row(r["name"], f"[{VERDICT_STYLE[r['verdict']]}]{r['verdict']}",
                              r["figure"], r["expected"])
                failed = failed or r["verdict"] == "fail"
            console.print(table)
            if result.get("reaction"):
                console.print(f"  {name}: {result['reaction']}")
    if failed:
        raise typer.Exit(1)


# how long `gpuwarden check` waits for the control plane's answer, by level (seconds)
CHECK_TIMEOUT = {"quick": 120.0, "standard": 3600.0, "long": 3 * 3600.0}


@app.command()
def jobstats(
    job_id: Annotated[int, typer.Argument(help="The Slurm job id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """A GPU job's report, as Princeton's `jobstats` prints one, with $: Slurm's times,
    each GPU's utilization and memory over the job's life, GPU-hours, $ and $ wasted,
    grades and notes (from the running control plane)."""
    import json

    from rich.console import Console

    from gpuwarden.reportview import job_report

    with _api(url, token_file) as api:
        report = api.request("GET", f"/slurm/jobs/{job_id}/report", what="jobstats",
                             options={"job_id": "JOB_ID"},
                             not_found="check the id with `squeue` or `sacct`")
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        Console().print(job_report(report))


@app.command()
def report(
    since: Annotated[str, typer.Option(help="How far back: 24h, 7d, 2w.")] = "7d",
    by: Annotated[str, typer.Option(help="user, account or partition.")] = "user",
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """GPU efficiency of the jobs that ended in a window, per user (or account or
    partition): GPU-hours, mean utilization, $ spent and wasted, and each one's rank."""
    from rich.console import Console

    from gpuwarden.reportview import efficiency_report

    if by not in ("user", "account", "partition"):
        raise GpuwardenError(f"--by {by!r}: use user, account or partition")
    params = {"since": since, "by": by, **({"format": "csv"} if csv else {})}
    with _api(url, token_file) as api:
        found = api.request("GET", "/reports/efficiency", what="report", params=params,
                            options={"since": "--since", "by": "--by"}, raw=csv)
    if csv:
        sys.stdout.write(found)
    else:
        Console().print(efficiency_report(found))


silence_app = typer.Typer(help="Silence alerts (notifications stop; alerts are still recorded).",
                          no_args_is_help=True)
app.add_typer(silence_app, name="silence")


@silence_app.command("add")
def silence_add(
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")] = "2h",
    rule: Annotated[str | None, typer.Option(help="Only this rule (default: all).")] = None,
    subject: Annotated[str, typer.Option(help="Subject glob, e.g. node1/*.")] = "*",
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Silence matching alerts for a while (needs an operator token; the token's name is
    recorded as the author)."""
    with _api(url, token_file) as api:
        s = api.request("POST", "/silences", what="silence add", needs="operator",
                        json={"rule": rule, "subject": subject, "duration": duration,
                              "comment": comment},
                        options={"duration": "--for", "rule": "--rule", "subject": "--subject",
                                 "comment": "--comment"})
    print(f"silence {s['id']}: rule {s['rule'] or '*'} subject {s['subject']} "
          f"until {_when(s['expires_at'])}")


@silence_app.command("list")
def silence_list(url: UrlOption = None, token_file: TokenFileOption = None) -> None:
    """Active silences."""
    with _api(url, token_file) as api:
        for s in api.request("GET", "/silences", what="silence list"):
            print(f"{s['id']}\t{s['rule'] or '*'}\t{s['subject']}\t{s['author']}\t{s['comment']}")


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="The id from `silence list`.")],
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """End a silence now (needs an operator token)."""
    with _api(url, token_file) as api:
        api.request("DELETE", f"/silences/{silence_id}", what="silence expire",
                    needs="operator", options={"silence_id": "SILENCE_ID"},
                    not_found="see `gpuwarden silence list`")
    print(f"silence {silence_id} expired")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help='e.g. "why is job 42 pending?"')],
    url: UrlOption = None,
    token_file: TokenFileOption = None,
) -> None:
    """Ask the ops agent of the running control plane. Answers stream; each action it
    proposes is shown exactly and asked y/N. Without agent.model configured, the analyzers
    answer."""
    from gpuwarden.agent.terminal import Asker, terminal_confirm
    from gpuwarden.apiclient import find_endpoint
    from gpuwarden.config import Settings

    endpoint = find_endpoint(Settings().home, url=url, token_file=token_file)

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    run = Asker(endpoint, out, terminal_confirm()).ask(question)
    if run["status"] == "failed":
        raise typer.Exit(1)


reclaim_app = typer.Typer(
    help="Reclaim idle GPUs: the warning ladder for idle Slurm jobs (see README, Reclaim).",
    no_args_is_help=True)
app.add_typer(reclaim_app, name="reclaim")


def _at(ts: float | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else ""


@reclaim_app.command("plan")
def reclaim_plan(url: UrlOption = None, token_file: TokenFileOption = None) -> None:
    """What reclaim would do now and next, per job (like `terraform plan`)."""
    from rich.console import Console
    from rich.table import Table

    with _api(url, token_file) as api:
        plan = api.request("GET", "/reclaim", what="the reclaim plan")
    console = Console()
    if plan.get("mode"):
        ladder = ", ".join(f"warn at {int(s)}s" for s in plan["warn_after_s"])
        console.print(f"reclaim: mode [bold]{plan['mode']}[/], action {plan['action']}, "
                      f"idle below {plan['idle_below']:g} %: {ladder}, act at "
                      f"{int(plan['act_after_s'])}s of idleness")
    if plan.get("paused"):
        console.print(f"[yellow]standing still: {plan['paused']}[/]")
    console.print(f"saved today ${plan['saved_today']:.2f}, this month "
                  f"${plan['saved_month']:.2f}")
    table = Table("job", "user", "GPUs", "status", "idle since", "warned", "next", "at",
                  "$/hr", "$ idle", "why")
    for c in plan["candidates"]:
        table.add_row(c["key"], c["user"], str(len(c["gpus"])), c["status"],
                      _at(c["idle_since"]), str(c["warnings_sent"]), c["next_event"] or "",
                      _at(c["next_at"]), f"{c['rate_per_hour']:.2f}", f"{c['burned']:.2f}",
                      c["why"])
    console.print(table)


@reclaim_app.command("history")
def reclaim_history(
    job: Annotated[str | None, typer.Argument(help="Only this job's events.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    url: UrlOption = None, token_file: TokenFileOption = None,
) -> None:
    """What reclaim did: warnings, actions (with what they save), pauses, exemptions."""
    from rich.console import Console
    from rich.table import Table

    params: dict[str, str | int] = {"limit": limit}
    if job:
        params["key"] = job
    with _api(url, token_file) as api:
        events = api.request("GET", "/reclaim/history", params=params,
                             what="the reclaim history")
    table = Table("when", "job", "event", "mode", "detail")
    for e in events:
        d = e["detail"]
        text = ", ".join(f"{k}={d[k]}" for k in ("why", "warning", "action", "result", "by",
                                                 "burned") if d.get(k) is not None)
        table.add_row(_when(e["at"]), e["key"], e["event"], e["mode"], text)
    Console().print(table)


@reclaim_app.command("pause")
def reclaim_pause(url: UrlOption = None, token_file: TokenFileOption = None) -> None:
    """The kill switch: no warning and no action until `gpuwarden reclaim resume`."""
    with _api(url, token_file) as api:
        api.request("POST", "/reclaim/pause", what="pausing reclaim", needs="operator")
    print("reclaim paused: no warnings, no actions (`gpuwarden reclaim resume` resumes)")


@reclaim_app.command("resume")
def reclaim_resume(url: UrlOption = None, token_file: TokenFileOption = None) -> None:
    """Resume reclaim after `pause` (idle streaks start again from now)."""
    with _api(url, token_file) as api:
        api.request("POST", "/reclaim/resume", what="resuming reclaim", needs="operator")
    print("reclaim resumed")


@reclaim_app.command("exempt")
def reclaim_exempt(
    job: Annotated[str, typer.Argument(help="The Slurm job id (42, or 42_3 for an array task).")],
    url: UrlOption = None, token_file: TokenFileOption = None,
) -> None:
    """Keep a job, whatever its GPUs do, until it ends."""
    with _api(url, token_file) as api:
        api.request("POST", f"/reclaim/jobs/{job}/exempt", what=f"exempting job {job}",
                    needs="operator")
    print(f"job {job}: exempt from reclaim until it ends")


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
