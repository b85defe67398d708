"""Strict configuration: a repeated key, an interval too small to mean anything and a file
that is not UTF-8 are refused with one line that names the file, the line or field, and
the fix; the same reader serves every YAML file gpuwarden loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpuwarden.config import load_config
from gpuwarden.errors import GpuwardenError
from gpuwarden.providers.spec import load_description
from gpuwarden.slurm import load_cluster
from gpuwarden.slurm.errors import ValidationError
from gpuwarden.watchdog.rules import load_rules
from gpuwarden.yamlfile import parse_yaml


def write(tmp_path, text: str | bytes, name: str = "gpuwarden.yaml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("scrape:\n  interval: 5\ncluster: a\nscrape:\n  timeout: 2\n", "scrape", (1, 4)),
    ("scrape:\n  interval: 5\n  timeout: 1\n  interval: 30\n", "interval", (2, 4)),
    ("nodes:\n  - name: n1\n    url: http://a:1\n    name: n2\n", "name", (2, 4)),
    ("watchdog: {enabled: true, enabled: false}\n", "enabled", (1, 1)),
])
def test_a_repeated_key_names_both_lines(tmp_path, text, key, lines):
    path = write(tmp_path, text)
    with pytest.raises(GpuwardenError) as exc:
        load_config(path)
    assert str(exc.value) == (f"{path}: key {key!r} appears twice, at line {lines[0]} and at "
                              f"line {lines[1]}; keep one of them")


def test_merged_keys_may_still_be_overridden():
    data = parse_yaml("base: &b {interval: 5, timeout: 1}\nscrape:\n  <<: *b\n  interval: 9\n",
                      "x.yaml")
    assert data["scrape"] == {"interval": 9, "timeout": 1}
    assert parse_yaml("a: 1\nb: {a: 2}\n", "x.yaml") == {"a": 1, "b": {"a": 2}}  # other maps


def test_every_yaml_file_gpuwarden_reads_is_strict(tmp_path):
    cluster = write(tmp_path, "name: dev\nprovider: local\nnodes: 2\nnodes: 3\n", "dev.yaml")
    with pytest.raises(GpuwardenError, match=f"^{cluster}: key 'nodes' appears twice, at "
                                             "line 3 and at line 4"):
        load_description(cluster)
    slurm = write(tmp_path, "name: x\ncontroller_host: h\nname: y\n", "slurm.yaml")
    with pytest.raises(ValidationError) as err:
        load_cluster(slurm)
    assert err.value.field == "--cluster" and "line 1 and at line 3" in str(err.value)
    owners = write(tmp_path, "alice: mailto://a@x\nalice: mailto://b@x\n", "owners.yaml")
    config = write(tmp_path, f"owners:\n  users_file: {owners}\n")
    with pytest.raises(GpuwardenError, match=f"owners: {owners}: key 'alice' appears twice"):
        load_config(config)
    assert len(load_rules()) > 5  # the shipped rules pass the same reader


@pytest.mark.parametrize(("text", "field"), [
    ("scrape:\n  interval: 1e-9\n", "scrape.interval"),
    ("scrape:\n  interval: 1.0e-9\n", "scrape.interval: Input should be greater than or equal "
                                      "to 0.1"),
    ("scrape:\n  interval: 50ms\n", "scrape.interval: Input should be greater than or equal"),
    ("scrape:\n  timeout: 0.01\n", "scrape.timeout"),
    ("watchdog:\n  interval: 0.000001\n", "watchdog.interval"),
    ("reports:\n  interval: 10ms\n", "reports.interval"),
    ("store:\n  raw_retention_hours: 1.0e-6\n", "store.raw_retention_hours"),
    ("agent:\n  timeout: 0.001\n", "agent.timeout"),
])
def test_intervals_have_lower_bounds(tmp_path, text, field):
    with pytest.raises(GpuwardenError, match=f"gpuwarden.yaml: {field}"):
        load_config(write(tmp_path, text))


def test_intervals_read_as_durations(tmp_path):
    cfg = load_config(write(tmp_path, "scrape:\n  interval: 30s\n  timeout: 0.5\n"
                                      "watchdog:\n  interval: 1m\n"))
    assert (cfg.scrape.interval, cfg.scrape.timeout, cfg.watchdog.interval) == (30, 0.5, 60)


def test_a_file_that_is_not_utf8_gets_one_line(tmp_path):
    path = write(tmp_path, "cluster: caf\xe9\nscrape:\n  interval: 5\n".encode("latin-1"))
    with pytest.raises(GpuwardenError) as exc:
        load_config(path)
    assert str(exc.value) == (f"{path}: not UTF-8 text (byte 0xe9 at line 1); save the file "
                              "as UTF-8")
    # and the CLI prints just that, with no traceback
    env = {**os.environ, "GPUWARDEN_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-m", "gpuwarden", "serve", "--config", str(path),
                          "--port", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert "not UTF-8 text (byte 0xe9 at line 1)" in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) == 1, run.stderr
