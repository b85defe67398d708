"""The series index narrows ``label=~"a|b|c"`` (an alternation of literals: how services
ask for a few nodes) through its label sets, and gives exactly what a regex match would."""

from __future__ import annotations

import re

from gpuwarden.metrics.model import parse_selector
from gpuwarden.metrics.series_index import SeriesIndex, _literals

NODES = ["a", "b", "c.d", "c-d", "cxd", "ab"]


def index() -> SeriesIndex:
    idx = SeriesIndex()
    for i, node in enumerate(NODES):
        labels = idx.label_set({"node": node, "gpu": "0"}, [])
        idx.add(i + 1, "DCGM_FI_DEV_GPU_UTIL", labels)
        idx.add(100 + i, "DCGM_FI_DEV_GPU_TEMP", labels)
    return idx


def nodes(idx: SeriesIndex, text: str) -> list[str]:
    return sorted(idx.labels(s)["node"] for s in idx.match(parse_selector(text)))


def test_literal_alternations_match_what_the_regex_matches():
    idx = index()
    for pattern in (r"a|c\\.d", "b", "a|b|zzz", "zzz", r"c\\-d|ab", "a.*", r"c.d", r"\\w+"):
        text = f'DCGM_FI_DEV_GPU_UTIL{{node=~"{pattern}"}}'
        regex = parse_selector(text).matchers[0].value
        assert nodes(idx, text) == sorted(n for n in NODES if re.fullmatch(regex, n)), pattern


def test_only_plain_alternations_take_the_fast_path():
    assert _literals("a|b") == ["a", "b"]
    assert _literals(r"n1\.x") == ["n1.x"]
    for regex in ("a.*", "a|", "(a|b)", r"\d", "[ab]", "a+"):
        assert _literals(regex) is None, regex
