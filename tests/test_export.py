from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="Debian's prometheus package (promtool) is not installed")
def test_export_prometheus_passes_promtool(tmp_path):
    token = tmp_path / "node.token"
    token.write_text("secret-token\n")
    config = tmp_path / "gpuwarden.yaml"
    config.write_text(yaml.safe_dump({"nodes": [
        {"name": "n1", "url": "http://10.0.0.1:9400", "token_file": str(token)},
        {"name": "n2", "url": "https://10.0.0.2:9400"}]}))
    out = tmp_path / "prom"
    result = subprocess.run([sys.executable, "-m", "gpuwarden", "export", "prometheus",
                             "--config", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = (out / "prometheus.yml").read_text()
    assert "secret-token" not in text and str(token) in text  # the file, never the token
    check = subprocess.run(["promtool", "check", "config", str(out / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout


def test_export_without_nodes_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gpuwarden", "export", "prometheus",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode != 0 and "no nodes to scrape" in result.stderr
    assert "Traceback" not in result.stderr
