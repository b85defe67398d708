from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpuwarden import __version__
from gpuwarden.cli import app


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpuwarden", *args], capture_output=True,
                          text=True, timeout=30)


def test_version():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"gpuwarden {__version__}"


def _commands(typer_app, prefix=()):
    import typer.main

    group = typer.main.get_command(typer_app)
    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))
    yield from walk(group, prefix)


@pytest.mark.parametrize("path", list(_commands(app)), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path):
    result = cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def _without_control_plane(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPUWARDEN_URL", "GPUWARDEN_TOKEN", "GPUWARDEN_CONFIG")}
    return {**env, "GPUWARDEN_HOME": str(home)}


CONTROL_PLANE_COMMANDS = [("alerts",), ("silence", "list"), ("silence", "add", "--for", "1h"),
                          ("silence", "expire", "1"), ("token", "list"),
                          ("token", "create"), ("token", "revoke", "1"), ("ask", "hi")]


@pytest.mark.parametrize("args", CONTROL_PLANE_COMMANDS, ids=" ".join)
def test_no_running_control_plane_is_one_clear_error(args, tmp_path):
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "gpuwarden", *args], capture_output=True,
                            text=True, timeout=30, env=_without_control_plane(home))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"gpuwarden: error: no running control plane found under {home} ($GPUWARDEN_HOME); "
        "start `gpuwarden serve`, or set GPUWARDEN_URL and GPUWARDEN_TOKEN")
    assert not home.exists()  # no empty state database made on the side


def test_a_stale_runtime_file_is_no_control_plane(tmp_path):
    from gpuwarden import runtime

    home = tmp_path / "home"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    home.mkdir()
    (home / runtime.FILENAME).write_text(json.dumps({
        "kind": "serve", "url": "http://127.0.0.1:9", "pid": gone.pid, "home": str(home),
        "token": "gw_stale", "started_at": 0.0}))
    (home / "demo").mkdir()
    result = subprocess.run([sys.executable, "-m", "gpuwarden", "token", "list"],
                            capture_output=True, text=True, timeout=30,
                            env=_without_control_plane(home))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no running control plane found under" in result.stderr
    assert sorted(p.name for p in home.rglob("*")) == ["control-plane.json", "demo"]
