"""The base root filesystem of the test "pods": Debian bookworm (``debootstrap
--variant=minbase``) with what a pod image would hold (Slurm, munge, Python) and no Python
package of ours; and the wheelhouse of gpuwarden's runtime dependencies that the test's
index serves.  Both are cached under :data:`CACHE` (built under a lock, reused when
present): ``python -m tests.pods.rootfs`` builds them and prints how long it took."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

CACHE = Path(os.environ.get("GPUWARDEN_TEST_PODS_CACHE", "/var/cache/gpuwarden-test-pods"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("slurm-wlm", "munge", "python3", "python3-venv", "python3-pip",
            "ca-certificates", "iproute2")
REPO = Path(__file__).resolve().parents[2]


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


@contextmanager
def _locked(name: str):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(*argv: str, **kw) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:6])} ... exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def base_rootfs() -> tuple[Path, float]:
    """The cached base root filesystem and the seconds it took to build now (0: cached)."""
    target = CACHE / f"{SUITE}-{_key(SUITE, MIRROR, *PACKAGES)}"
    with _locked(target.name):
        if (target / ".complete").exists():
            return target, 0.0
        started = time.monotonic()
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        _run("debootstrap", "--variant=minbase", SUITE, str(tmp), MIRROR)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LANG": "C.UTF-8"}
        # no daemon starts while installing (policy-rc.d), as in a container image build
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        _run("chroot", str(tmp), "apt-get", "install", "-y", "-q", "--no-install-recommends",
             *PACKAGES, env=env)
        _run("chroot", str(tmp), "apt-get", "clean", env=env)
        policy.unlink()
        (tmp / ".complete").write_text(" ".join(PACKAGES) + "\n")
        tmp.rename(target)
        return target, time.monotonic() - started


def runtime_requirements() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def wheelhouse(pip: str = sys.executable) -> tuple[Path, float]:
    """gpuwarden's runtime dependencies as wheels for CPython 3.11 on manylinux x86_64
    (the pods' python), from the registry this machine reaches; cached by requirement set."""
    reqs = runtime_requirements()
    target = CACHE / f"wheelhouse-cp311-{_key(*reqs)}"
    with _locked(target.name):
        if (target / ".complete").exists():
            return target, 0.0
        started = time.monotonic()
        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # the pip, setuptools and wheel a venv may ask for are left to the pods' own copies
        _run(pip, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
             "3.11", "--implementation", "cp", "--abi", "cp311", "--platform",
             "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform",
             "manylinux_2_28_x86_64", "--platform", "linux_x86_64", "-d", str(tmp), *reqs)
        (tmp / ".complete").write_text("\n".join(reqs) + "\n")
        tmp.rename(target)
        return target, time.monotonic() - started


if __name__ == "__main__":
    root, took = base_rootfs()
    print(f"{root}: " + (f"built in {took:.0f} s" if took else "cached"))
    house, took = wheelhouse()
    print(f"{house}: " + (f"downloaded in {took:.0f} s" if took else "cached"))
