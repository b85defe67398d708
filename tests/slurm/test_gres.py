"""GRES strings in every form Slurm prints them."""

from __future__ import annotations

import pytest

from gpuwarden.slurm.errors import ParseError
from gpuwarden.slurm.gres import (
    GresItem,
    format_index_list,
    gpu_count,
    gpus_in_tres,
    parse_gres,
    parse_index_list,
)
from gpuwarden.slurm.hostlist import expand_hostlist


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu:2", [GresItem("gpu", None, 2)]),
        ("gpu:a100:2", [GresItem("gpu", "a100", 2)]),
        ("gpu:a100:2(IDX:0-1)", [GresItem("gpu", "a100", 2, indices=(0, 1))]),
        ("gpu:4(IDX:0,2-3)", [GresItem("gpu", None, 4, indices=(0, 2, 3))]),
        ("gpu:a100:2(S:0-1)", [GresItem("gpu", "a100", 2, sockets=(0, 1))]),
        ("gpu", [GresItem("gpu", None, 1)]),
        ("gpu:a100", [GresItem("gpu", "a100", 1)]),
        ("gpu:a100:0(IDX:N/A)", [GresItem("gpu", "a100", 0, indices=())]),
        ("gpu:0", [GresItem("gpu", None, 0)]),
        (
            "gpu:a100:2(IDX:0-1),gpu:v100:1(IDX:3),shard:8,mps:1K",
            [
                GresItem("gpu", "a100", 2, indices=(0, 1)),
                GresItem("gpu", "v100", 1, indices=(3,)),
                GresItem("shard", None, 8),
                GresItem("mps", None, 1024),
            ],
        ),
        (
            "gpu:h100:4(S:0-1),gpu:l4:2(S:1),nic:1",
            [
                GresItem("gpu", "h100", 4, sockets=(0, 1)),
                GresItem("gpu", "l4", 2, sockets=(1,)),
                GresItem("nic", None, 1),
            ],
        ),
        ("(null)", []),
        ("N/A", []),
        ("", []),
    ],
)
def test_parse_gres_forms(text: str, expected: list[GresItem]) -> None:
    assert list(parse_gres(text)) == expected


def test_gpu_count_ignores_shards_and_mps() -> None:
    assert gpu_count(parse_gres("gpu:a100:2,gpu:v100:1,shard:8,mps:100")) == 3


def test_round_trip() -> None:
    for text in ("gpu:a100:2(IDX:0-1)", "gpu:4(IDX:0,2-3)", "gpu:a100:2(S:0-1)"):
        assert ",".join(str(g) for g in parse_gres(text)) == text


@pytest.mark.parametrize("bad", ["gpu:a100:x", "gpu:2(IDX:0-1", "gpu:2(FOO:1)", ":2",
                                 "gpu:a:b:c:d", "gpu:2(IDX:a-b)"])
def test_malformed_gres_raises(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_gres(bad)


@pytest.mark.parametrize(
    ("text", "gpus"),
    [
        ("gres:gpu:2", 2),
        ("gres/gpu:a100:2", 2),
        ("gres:gpu:a100:1,gres:shard:4", 1),
        ("cpu=2,mem=1G,node=1,billing=2,gres/gpu=4", 4),
        ("cpu=8,gres/gpu=4,gres/gpu:a100=4", 4),
        ("cpu=8,gres/gpu:a100=2", 2),
        ("N/A", 0),
        ("cpu=2,node=1", 0),
    ],
)
def test_gpus_in_tres(text: str, gpus: int) -> None:
    assert gpus_in_tres(text) == gpus


def test_index_lists() -> None:
    assert parse_index_list("0,2-3,7") == (0, 2, 3, 7)
    assert format_index_list([3, 0, 2, 7, 1]) == "0-3,7"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("node[1-3]", ("node1", "node2", "node3")),
        ("gpu-a[01-02],cpu7", ("gpu-a01", "gpu-a02", "cpu7")),
        ("n[1,3-4]", ("n1", "n3", "n4")),
        ("rack[1-2]-n[1-2]", ("rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2")),
        ("", ()),
        ("(null)", ()),
    ],
)
def test_hostlists(text: str, names: tuple[str, ...]) -> None:
    assert expand_hostlist(text) == names
