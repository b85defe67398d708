from __future__ import annotations

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
