"""The OpenAPI document's selector pattern: what it admits always parses, and every regex it
admits compiles (so schema-valid input is never refused), while the regular expressions
people write in PromQL — classes, ranges, escapes, groups, alternatives — still pass."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuwarden.api.app import SELECTOR
from gpuwarden.metrics.model import parse_selector

PATTERN = re.compile(SELECTOR)


@pytest.mark.parametrize("selector", [
    "up", 'DCGM_FI_DEV_GPU_UTIL{gpu=~"[01]"}', 'up{node=~"n1|n2"}',
    r'up{node=~"gpu-node\\.[0-9]+"}', 'up{node=~"(a|b)*x{2,}?"}', 'up{node!~"^n[^a-z_]$"}',
    'up{node="x\\"y", gpu!="0",}', 'up{job=~".+"}'])
def test_what_people_write_is_admitted_and_parses(selector: str) -> None:
    assert PATTERN.match(selector), selector
    parse_selector(selector)


@pytest.mark.parametrize("selector", [
    'up{gpu=~"[1-0]"}', 'up{gpu=~"a**"}', 'up{gpu=~"(a"}', 'up{gpu=~"((a))"}', "up{",
    '1up', 'up{gpu~"0"}'])
def test_what_would_not_compile_or_parse_is_not_admitted(selector: str) -> None:
    assert not PATTERN.match(selector), selector


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.from_regex(SELECTOR))
def test_every_admitted_selector_parses_and_its_regexes_compile(selector: str) -> None:
    for matcher in parse_selector(selector).matchers:
        if matcher.op in ("=~", "!~"):
            re.compile(matcher.value)
