"""The node daemon as a real subprocess, scraped over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def test_daemon_serves_metrics_and_snapshot_with_token(daemon_factory, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-123-0123456789abcdef\n")
    token_file.chmod(0o600)
    d = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "3", "--sim-profile",
                        "0=train,2=thermal-throttle", "--interval", "0.5",
                        "--token-file", str(token_file)], token="tok-123-0123456789abcdef")
    assert d.get("/metrics", token="nope").status_code == 401
    r = d.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    util = {s.labels["gpu"]: s.value for s in families["DCGM_FI_DEV_GPU_UTIL"].samples}
    assert util["0"] > 50 and util["1"] == 0
    first = d.get("/api/v1/snapshot").json()["collector"]["polls_total"]
    snap = wait_until("two more background polls", lambda: (
        lambda s: s if s["collector"]["polls_total"] >= first + 2 else None)(
            d.get("/api/v1/snapshot").json()), timeout=10)
    assert len(snap["gpus"]) == 3
    assert d.get("/healthz").json()["status"] == "ok"


def test_daemon_token_from_environment(daemon_factory):
    d = daemon_factory(["--gpu-backend", "sim", "--sim-gpus", "1"], token="envtok-0123456789abcdef",
                       env={"GPUWARDEN_NODE_TOKEN": "envtok-0123456789abcdef"})
    assert d.get("/metrics").status_code == 200
    assert d.get("/metrics", token="other").status_code == 401


def test_daemon_stops_cleanly_on_sigterm(daemon_factory):
    d = daemon_factory(["--gpu-backend", "sim", "--no-auth", "--sim-gpus", "1"])
    d.proc.terminate()
    assert d.proc.wait(timeout=10) in (0, -15)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "GPUWARDEN_NODE_TOKEN"}
    return subprocess.run([sys.executable, "-m", "gpuwarden", *args], capture_output=True,
                          text=True, timeout=30, env={**base, **(env or {})})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["node", "--gpu-backend", "sim"], "no token"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--host", "0.0.0.0"], "loopback"),
        (["node", "--gpu-backend", "sim", "--token-file", "/nonexistent/token"],
         "--token-file /nonexistent/token: cannot read it"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--sim-profile", "0=nap"],
         "unknown profile 'nap'"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--sim-model", "voodoo"],
         "unknown simulated GPU model"),
        (["node", "--gpu-backend", "cuda", "--no-auth"], "--gpu-backend 'cuda'"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--interval", "0"], "--interval"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--interval", "0.001"],
         "--interval 0.001: give at least 0.1 seconds"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--slurm", "--slurm-interval", "0.2"],
         "--slurm-interval 0.2: give at least 1 second"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--port", "70000"], "--port 70000"),
        (["node", "--gpu-backend", "sim", "--no-auth", "--hostname-label", "host"],
         "--hostname-label 'host': use Hostname"),
    ],
)
def test_bad_input_is_one_clear_line(args, expected):
    result = run_cli(*args)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_empty_token_file_is_refused(tmp_path):
    empty = tmp_path / "t"
    empty.write_text("\n")
    result = run_cli("node", "--gpu-backend", "sim", "--token-file", str(empty))
    assert result.returncode != 0 and "empty" in result.stderr


def test_auto_without_gpu_never_falls_back_silently():
    result = run_cli("node", "--no-auth")
    assert result.returncode != 0
    assert "--gpu-backend sim" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_line(daemon_factory):
    d = daemon_factory(["--gpu-backend", "sim", "--no-auth", "--sim-gpus", "1"])
    busy = d.url.rsplit(":", 1)[1]
    result = run_cli("node", "--gpu-backend", "sim", "--no-auth", "--port", busy)
    assert result.returncode != 0 and f"--port {busy}" in result.stderr
    assert "Traceback" not in result.stderr


def test_secret_files_are_read_by_one_reader_that_warns_of_loose_modes(tmp_path, caplog):
    """Tokens, the RunPod key and the LLM key: stripped, an empty or unreadable file an error
    that names the setting, and a file other users may read warned about once, by path."""
    import logging

    from gpuwarden.bearer import read_secret_file, read_token_file
    from gpuwarden.config import AgentConfig
    from gpuwarden.errors import GpuwardenError
    from gpuwarden.providers.runpod.client import load_api_key

    tight, loose, empty = tmp_path / "tight", tmp_path / "loose", tmp_path / "empty"
    tight.write_text("k" * 32 + "\n")
    tight.chmod(0o600)
    loose.write_text("rpa_" + "x" * 20 + "\n")
    loose.chmod(0o644)
    empty.write_text("\n")
    with caplog.at_level(logging.WARNING, logger="gpuwarden.bearer"):
        assert read_token_file(tight, "--token-file tight") == "k" * 32
        assert caplog.records == []
        assert load_api_key({}, loose).reveal() == "rpa_" + "x" * 20
        assert load_api_key({}, loose).reveal() == "rpa_" + "x" * 20
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"runpod.api_key_file {loose}: other users can read it (mode 644); "
                      f"chmod 600 {loose}"]  # once, whatever the number of reads
    with pytest.raises(GpuwardenError, match=r"agent.api_key_file .*empty: the file is empty; "
                                             "write the API key into it"):
        AgentConfig(api_key_file=empty).api_key()
    with pytest.raises(GpuwardenError, match="the token is empty"):
        read_token_file(empty, "--token-file empty")
    with pytest.raises(GpuwardenError, match=r"cannot read it .*holding the token"):
        read_secret_file(tmp_path / "absent", "--token-file absent")
