"""The scenarios whose job ends by itself later than the live cluster's setup (``wait_ended``:
a time limit, which Slurm enforces a minute or more after the job starts) run last in the
session, so every other test runs while their job gets there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent


def _waiting() -> set[str]:
    return {p.parent.name for p in HERE.glob("*/scenario.yaml")
            if "wait_ended" in (yaml.safe_load(p.read_text()) or {})}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    waiting = _waiting()

    def late(item: pytest.Item) -> bool:
        spec = getattr(item, "callspec", None)
        return (item.path.parent == HERE and spec is not None
                and spec.params.get("name") in waiting)

    items[:] = [i for i in items if not late(i)] + [i for i in items if late(i)]
