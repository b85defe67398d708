"""A bare clone tests itself: every file a test reads is in the repository.

The repository's committed tree (HEAD) is cloned into an empty temporary directory, with
nothing beside it, and the tests that read reference files run there against the clone's
own source.  No test may skip or fail because a file is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# the tests that read tests/reference (dcgm-exporter's counters and dashboard, RunPod's spec)
# (one RunPod test is enough: every request and response of the fake is checked against the
# spec, so the spec must have been read)
READERS = ["tests/node/test_exposition.py",
           "tests/providers/test_runpod_lifecycle.py::test_up_status_down"]
# what a file may not say: a path outside the repository (the team's shared folder beside
# the checkout, or the variable that used to point at it), spelt in pieces so this file
# does not match itself
SHARED, OLD_VARIABLE = "sha" + "red", "GPUWARDEN_" + "SHARED"
OUTSIDE = re.compile(rf"\.\./{SHARED}|{OLD_VARIABLE}|parent\s*/\s*\"{SHARED}\"")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test clones the repository: it needs git and a git checkout")
    empty = tmp_path_factory.mktemp("bare")
    dest = empty / "gpuwarden"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)],
                   check=True, timeout=120)
    assert sorted(p.name for p in empty.iterdir()) == ["gpuwarden"]
    return dest


def test_no_file_reaches_outside_the_repository(clone: Path) -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.split()
    offenders = []
    for name in listed:
        if name.startswith("tests/reference/"):
            continue
        try:
            text = (clone / name).read_text()
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [f"{name}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert not offenders, offenders


def test_reference_readers_pass_in_a_bare_clone(clone: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != OLD_VARIABLE}
    env["PYTHONPATH"] = str(clone / "src")  # the clone's gpuwarden, not this checkout's
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *READERS],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert str(clone / "src" / "gpuwarden") in subprocess.run(
        [sys.executable, "-c", "import gpuwarden; print(gpuwarden.__file__)"], cwd=clone,
        env=env, capture_output=True, text=True).stdout
    summary = out.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "error" not in summary, out
