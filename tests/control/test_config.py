from __future__ import annotations

import pytest

from gpuwarden.config import load_config
from gpuwarden.errors import GpuwardenError


def write(tmp_path, text):
    path = tmp_path / "gpuwarden.yaml"
    path.write_text(text)
    return path


def test_minimal_config(tmp_path):
    cfg = load_config(write(tmp_path, "nodes:\n  - name: node1\n    url: http://127.0.0.1:9400/\n"))
    assert cfg.nodes[0].url == "http://127.0.0.1:9400"
    assert cfg.scrape.interval == 15 and cfg.store.kind == "sqlite"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nodes:\n  - name: n1\n    url: ftp://x\n", "nodes[0].url: must be an http://"),
        ("nodes:\n  - name: n1\n", "nodes[0].url: Field required"),
        ("nodes:\n  - name: n1\n    url: http://a:1\n    cost_per_hour: -2\n",
         "nodes[0].cost_per_hour"),
        ("nodes:\n  - name: n1\n    url: http://a:1\n    tokenfile: /x\n",
         "nodes[0].tokenfile: unknown key"),
        ("nodes:\n  - {name: a, url: 'http://a:1'}\n  - {name: a, url: 'http://b:1'}\n",
         "appears twice"),
        ("store:\n  kind: prometheus\n", "store: store.kind prometheus needs store.url"),
        ("scrape:\n  interval: 0\n", "scrape.interval"),
        ("nodes: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_errors_name_the_field(tmp_path, text, expected):
    with pytest.raises(GpuwardenError) as exc:
        load_config(write(tmp_path, text))
    assert expected in str(exc.value)
    assert str(tmp_path) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(GpuwardenError, match="cannot read it"):
        load_config(tmp_path / "nope.yaml")
