"""`gpuwarden export grafana`: provisioning files Grafana reads (datasource, a file provider
pointing at the dashboards, the dashboards) and the dashboards' structure.  Grafana itself
does not install here (not in Debian), so its loading is not run: the structure is checked
against what Grafana requires, and every query runs in test_dashboards_promql.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from gpuwarden.metrics.grafana import DATASOURCE_UID, dashboards
from tests.conftest import ROOT
from tests.deploy.stack import (
    BUILTINS,
    load_dashboards,
    panels,
    query_variables,
    run_cli,
    targets,
    variable_query,
)

VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def test_provisioning_layout(tmp_path: Path) -> None:
    out = tmp_path / "provisioning"
    run_cli("export", "grafana", "--out", str(out), "--prometheus-url",
            "http://prometheus:9090/", "--grafana-path", "/etc/grafana/provisioning",
            "--default-datasource", "--scrape-interval", "30", home=tmp_path / "home")
    sources = yaml.safe_load((out / "datasources" / "gpuwarden.yml").read_text())
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert source == {**source, "type": "prometheus", "uid": DATASOURCE_UID, "access": "proxy",
                      "url": "http://prometheus:9090", "isDefault": True}
    assert source["jsonData"]["timeInterval"] == "30s"
    providers = yaml.safe_load((out / "dashboards" / "gpuwarden.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "gpuwarden"
    # the path Grafana reads, mapped back onto --out, holds the dashboards
    path = provider["options"]["path"]
    assert path.startswith("/etc/grafana/provisioning/")
    local = out / path.removeprefix("/etc/grafana/provisioning/")
    assert sorted(p.name for p in local.glob("*.json")) == sorted(dashboards())
    assert load_dashboards(local) == dashboards()


def test_defaults_and_dashboards_only(tmp_path: Path) -> None:
    out = tmp_path / "p"
    run_cli("export", "grafana", "--out", str(out), "--no-datasource", home=tmp_path / "h")
    assert not (out / "datasources").exists()
    provider = yaml.safe_load((out / "dashboards" / "gpuwarden.yml").read_text())["providers"][0]
    assert Path(provider["options"]["path"]) == (out / "dashboards" / "gpuwarden").resolve()
    assert len(list(Path(provider["options"]["path"]).glob("*.json"))) == 4


def test_bad_prometheus_url_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gpuwarden", "export", "grafana", "--out",
                             str(tmp_path), "--prometheus-url", "prometheus:9090"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "prometheus:9090" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_structure(name: str) -> None:
    board = dashboards()[name]
    assert board["uid"] == name.removesuffix(".json") and len(board["uid"]) <= 40
    assert board["title"].startswith("gpuwarden / ") and "gpuwarden" in board["tags"]
    assert board["id"] is None and board["schemaVersion"] >= 36
    variables = (board["templating"])["list"]
    names = [v["name"] for v in variables]
    assert len(names) == len(set(names))
    (ds,) = [v for v in variables if v["type"] == "datasource"]
    assert ds["name"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == DATASOURCE_UID
    defined = set(names) | set(BUILTINS)
    all_panels = panels(board)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        where = f"{name}: panel {panel['title']!r}"
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, where
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{where} overlaps another panel"
        cells |= mine
        assert panel["type"] in {"stat", "timeseries", "table", "bargauge", "gauge", "text"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where
    for where, expr in targets(board) + [(v["name"], variable_query(v))
                                         for v in query_variables(board)]:
        used = {m.group(1) or m.group(2) for m in VARIABLE.finditer(expr)}
        assert used <= defined, f"{name} {where}: undefined {used - defined}"
    # variables are defined before the ones whose queries use them
    for var in query_variables(board):
        used = {m.group(1) or m.group(2) for m in VARIABLE.finditer(variable_query(var))}
        assert used <= set(names[:names.index(var["name"])]) | set(BUILTINS), var["name"]


def test_dashboard_uids_are_unique() -> None:
    uids = [b["uid"] for b in dashboards().values()]
    assert len(uids) == len(set(uids)) == 4


def test_the_wheel_ships_the_dashboards_and_the_built_ui(tmp_path: Path) -> None:
    """The images install gpuwarden from exactly what their Dockerfiles COPY (pyproject.toml,
    README.md, src/ with the built UI): the wheel of that holds the dashboards and the UI."""
    pytest.importorskip("hatchling", reason="hatchling is a test dependency (pip install -e "
                        "'.[test]')")
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", ".gitignore"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(ROOT / "src", context / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "dist"))
    dist = context / "src" / "gpuwarden" / "web" / "dist"
    dist.mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>gpuwarden</title>\n")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
                            str(context)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "wheel").glob("gpuwarden-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"gpuwarden/metrics/dashboards/{n}" for n in dashboards()} <= names
    assert "gpuwarden/web/dist/index.html" in names  # git-ignored, shipped as an artifact
