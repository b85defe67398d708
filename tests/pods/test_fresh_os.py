"""The pod bootstrap on machines that start with nothing: each "pod" is an overlay of a
minimal Debian (:mod:`tests.pods.rootfs`: Slurm, munge, Python, no package of ours)
chrooted in its own mount, PID, UTS and network namespace, on a bridge this test makes
(no route anywhere else).  Each runs the RunPod provider's start command with the
environment the provider builds, installs gpuwarden from a wheel of this checkout and
every dependency through the hash-pinned path (``runpod.install.requirements``: a
requirements file of the wheelhouse's hashes; the files from an index served on the
bridge), gets its secrets through the enrollment path, and the pods form one Slurm cluster
that a ``serve`` on this host scrapes.  A pod given a tampered wheel, and one given a
tampered requirements file, stop at their download step with nothing installed."""

from __future__ import annotations

import contextlib
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gpuwarden import __version__
from gpuwarden.providers.base import NodeRecord, Workspace
from gpuwarden.providers.enroll import deliver_secrets
from gpuwarden.providers.health import probe
from gpuwarden.providers.install import pinned_requirements, project_name
from gpuwarden.providers.registry import upsert_provider_nodes
from gpuwarden.providers.runpod.provider import START_COMMAND, RunPodProvider
from gpuwarden.providers.spec import ClusterDescription
from tests.pods import rootfs
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SUBNET = "10.213.0"
BRIDGE_ADDR = f"{SUBNET}.1"
GPUS = 2
NODE_PORT = 9400
POD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_LOG = "var/log/gpuwarden-bootstrap.log"
HASH_STEP = "download gpuwarden (hash-checked)"
REQUIREMENTS_STEP = "download the requirements (hash-checked)"

# PID 1 of a pod (argv: merged lower upper work hostname gpus): the overlay, /proc, /sys
# (the netns's, read-only) with this host's cgroups, a minimal /dev with fake GPUs, then
# the start command in the chroot with the pod's env
POD_INIT = r"""
set -eu
M=$1
mount -t overlay overlay -o "lowerdir=$2,upperdir=$3,workdir=$4" "$M"
mount -t proc proc "$M/proc"
mount -t sysfs -o ro sysfs "$M/sys"
mount --rbind /sys/fs/cgroup "$M/sys/fs/cgroup"  # this host's, as a container sees it
mount -t tmpfs -o mode=755,size=16m tmpfs "$M/dev"
for d in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  read -r n a b <<<"$d"; mknod -m 666 "$M/dev/$n" c "$a" "$b"
done
for i in $(seq 0 $(($6 - 1))); do mknod -m 666 "$M/dev/nvidia$i" c 195 "$i"; done
mkdir "$M/dev/shm" "$M/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$M/dev/shm"
ln -s /proc/self/fd "$M/dev/fd"
hostname "$5"
cd "$M"
exec chroot "$M" /bin/sh -c "$POD_START_COMMAND"
"""


def wait_for(what: str, check, timeout: float, on_fail=lambda: ""):
    """The shared wait helper, failing with ``on_fail()`` (a pod's log tail)."""
    return wait_until(what, check, timeout, interval=0.5, detail=on_fail)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr}")
    return proc


# ---- the artifacts the pods install ----------------------------------------------------


def build_wheel(out: Path) -> Path:
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
       "--no-build-isolation", "-w", str(out), str(rootfs.REPO))
    (wheel,) = out.glob("gpuwarden-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert any(n.startswith("gpuwarden/web/dist/") for n in z.namelist()), \
            "the wheel has no web UI: build it first (make web)"
    return wheel


def tampered_copy(wheel: Path, out: Path) -> Path:
    """The same wheel with one byte more in a file: another sha256."""
    out.mkdir(parents=True)
    bad = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "gpuwarden/__init__.py":
                data += b"\n# tampered\n"
            dst.writestr(item, data)
    return bad


def venv_packages(pod: Pod) -> set[str]:
    """The (normalized) names of the distributions in the pod's gpuwarden venv."""
    return {project_name(d.name.split("-")[0]) for d in (
        pod.upper / "opt/gpuwarden/venv/lib").glob("python3*/site-packages/*.dist-info")}


def failed_bootstrap(http: httpx.Client, pod: Pod):
    """The pod's failed bootstrap as its node port reports it (None: not failed yet)."""
    seen = probe(http, pod.url)
    return seen if seen.bootstrap == "failed" else None


def simple_index(root: Path, wheelhouse: Path) -> None:
    """A PEP 503 index of the wheelhouse under ``root/simple``."""
    by_project: dict[str, list[str]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        by_project.setdefault(project, []).append(wheel.name)
    (root / "files").symlink_to(wheelhouse)
    for project, files in by_project.items():
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True)
        page.write_text("".join(f'<a href="../../files/{html.escape(f)}">{html.escape(f)}</a>\n'
                                for f in files))
    (root / "simple" / "index.html").write_text(
        "".join(f'<a href="{p}/">{p}</a>\n' for p in by_project))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


# ---- pods --------------------------------------------------------------------------------


@dataclass
class Pod:
    name: str           # its RunPod id and hostname
    addr: str
    dir: Path
    netns: str
    veth: str
    proc: subprocess.Popen[bytes] | None = None
    init_pid: int = 0
    pid_ns: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{NODE_PORT}"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        logs = [self.upper / BOOT_LOG, self.dir / "console.log",
                *sorted((self.upper / "var/log/slurm").glob("*.log"))]
        for path in logs:
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {self.name}: {path.name} ---\n"
                         + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def processes(self) -> list[str]:
        """Command lines of every process in the pod's PID namespace (seen from here)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/pid") != self.pid_ns:
                    continue
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
        return found

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command inside the pod (its namespaces and root)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-n", "-p", "-r", "-w", "--",
             "/usr/bin/env", "-i", f"PATH={POD_PATH}", "SLURM_CONF=/etc/slurm/slurm.conf",
             *argv], capture_output=True, text=True, timeout=timeout)


class Network:
    """A bridge with this host's address, and a netns + veth pair per pod."""

    def __init__(self, tag: str) -> None:
        self.bridge = f"gwpbr{tag}"
        self.tag = tag
        self.netns: list[str] = []
        self.veths: list[str] = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add(self, index: int) -> tuple[str, str, str]:
        netns, veth, addr = f"gwpod-{self.tag}-{index}", f"gwp{self.tag}v{index}", \
            f"{SUBNET}.{10 + index}"
        sh("ip", "netns", "add", netns)
        self.netns.append(netns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        self.veths.append(veth)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        for cmd in (["addr", "add", f"{addr}/24", "dev", "eth0"], ["link", "set", "eth0", "up"],
                    ["link", "set", "lo", "up"]):
            sh("ip", "-n", netns, *cmd)
        return netns, veth, addr

    def down(self) -> None:
        # the pairs first: a deleted netns takes its end with it only when the kernel gets
        # round to destroying the namespace, later
        for veth in self.veths:
            sh("ip", "link", "del", veth, check=False)
        for netns in self.netns:
            sh("ip", "netns", "del", netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


def start_pod(pod: Pod, base: Path, env: dict[str, str]) -> None:
    merged, work = pod.dir / "merged", pod.dir / "work"
    for d in (merged, work, pod.upper / "etc"):
        d.mkdir(parents=True, exist_ok=True)
    console = (pod.dir / "console.log").open("wb")
    pod.proc = subprocess.Popen(
        # nsenter, not `ip netns exec`: that one remounts /sys and so hides the cgroups
        ["nsenter", f"--net=/run/netns/{pod.netns}", "--", "unshare", "--mount", "--pid",
         "--uts", "--fork",
         "--propagation", "private", "--", "bash", "-c", POD_INIT, "pod-init", str(merged),
         str(base), str(pod.upper), str(work), pod.name, str(GPUS)],
        env={"PATH": POD_PATH, "HOME": "/root", "LANG": "C.UTF-8",
             "POD_START_COMMAND": START_COMMAND, **env},
        stdout=console, stderr=subprocess.STDOUT)
    console.close()

    def init_pid() -> int | None:
        try:
            children = Path(f"/proc/{pod.proc.pid}/task/{pod.proc.pid}/children").read_text()
        except OSError:
            return None
        return int(children.split()[0]) if children.split() else None

    pod.init_pid = wait_for(f"{pod.name}'s PID 1", init_pid, 10, pod.log_tail)
    pod.pid_ns = os.readlink(f"/proc/{pod.init_pid}/ns/pid")


def stop_pod(pod: Pod) -> None:
    """Kill the pod's PID 1: the kernel kills everything in its PID namespace, and its
    mount namespace (the overlay and all) goes with the last process."""
    if pod.proc is None:
        return
    if pod.init_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pod.init_pid, 9)
    try:
        pod.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pod.proc.kill()
        pod.proc.wait(timeout=10)


# ---- the test ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> Path:
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("needs root and debootstrap (make test-pods installs it)")
    path, took = rootfs.base_rootfs()
    if took:
        print(f"\nbuilt the base root filesystem in {took:.0f} s: {path}")
    return path


def test_fresh_pods_form_a_cluster_scraped_by_serve(base, tmp_path, db, serve_factory):
    house, took = rootfs.wheelhouse()
    if took:
        print(f"\ndownloaded the dependencies' wheelhouse in {took:.0f} s: {house}")
    served = tmp_path / "served"
    (served / "wheel").mkdir(parents=True)
    wheel = build_wheel(served / "wheel")
    bad = tampered_copy(wheel, served / "tampered")
    simple_index(served, house)
    # every dependency pinned by hash; the tampered copy drops its last requirement
    requirements = pinned_requirements(house)
    (served / "requirements.txt").write_text(requirements)
    entries = re.split(r"\n(?=\S)", requirements.strip())
    (served / "tampered/requirements.txt").write_text("\n".join(entries[:-1]) + "\n")
    house_mb = sum(f.stat().st_size for f in house.glob("*.whl")) / 2**20
    print(f"\nwheel {wheel.stat().st_size / 2**20:.1f} MiB; dependencies "
          f"{len(list(house.glob('*.whl')))} wheels, {house_mb:.1f} MiB")

    tag = f"{os.getpid() % 10000}"
    net = Network(tag)
    pods: list[Pod] = []
    server = None
    try:
        server = ThreadingHTTPServer((BRIDGE_ADDR, 0),
                                     partial(_Quiet, directory=str(served)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        index_url = f"http://{BRIDGE_ADDR}:{server.server_port}"

        # the env the RunPod provider gives its pods (it downloads the wheel and pins its hash)
        home = db.path.parent
        spec = ClusterDescription.model_validate({
            "name": "fresh", "provider": "runpod", "nodes": 3, "gpus_per_node": GPUS,
            "gpu_type": "NVIDIA H100 80GB HBM3",
            "runpod": {"node_port": NODE_PORT, "install": {
                "wheel": f"{index_url}/wheel/{wheel.name}",
                "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
                "requirements": f"{index_url}/requirements.txt",
                "requirements_sha256": hashlib.sha256(requirements.encode()).hexdigest(),
                "index_url": f"{index_url}/simple"}}})
        http = httpx.Client()
        provider = RunPodProvider(client=None, home=home, http=http)  # type: ignore[arg-type]
        # three pods of the cluster, a fourth with a tampered wheel, a fifth with a tampered
        # requirements file
        for index in range(1, 6):
            netns, veth, addr = net.add(index)
            pods.append(Pod(f"gwpod{tag}x{index}", addr, tmp_path / f"pod{index}", netns, veth))
        # RunPod's global networking: <pod id>.runpod.internal resolves to the pod
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{p.addr} {p.name}.runpod.internal {p.name}\n" for p in pods)
        for index, pod in enumerate(pods, start=1):
            env = provider._env(spec, min(index, 3), None if index == 1 else pods[0].name)
            env.update({"RUNPOD_POD_ID": pod.name, "GPUWARDEN_GPU_BACKEND": "sim"})
            assert env["GPUWARDEN_INSTALL_REQUIREMENTS"] == f"{index_url}/requirements.txt"
            if index == 4:
                env["GPUWARDEN_INSTALL_WHEEL"] = f"{index_url}/tampered/{bad.name}"
            if index == 5:
                env["GPUWARDEN_INSTALL_REQUIREMENTS"] = f"{index_url}/tampered/requirements.txt"
            (pod.upper / "etc").mkdir(parents=True)
            (pod.upper / "etc/hosts").write_text(hosts)
            start_pod(pod, base, env)
        cluster = pods[:3]

        def all_logs() -> str:
            return "\n".join(p.log_tail() for p in pods)

        # each tampered pod stops at its download, says why, runs nothing of ours and has
        # installed nothing (its venv holds what `python3 -m venv` put there)
        for tampered, step, error in ((pods[3], HASH_STEP, "DO NOT MATCH THE HASHES"), (
                pods[4], REQUIREMENTS_STEP, "DOES NOT MATCH ITS HASH")):
            failed = wait_for(f"{tampered.name} to report its failed bootstrap",
                              partial(failed_bootstrap, http, tampered), 300, tampered.log_tail)
            assert failed.step == step, tampered.log_tail()
            assert error in failed.log, failed.log
            assert failed.version == __version__
            running = tampered.processes()
            assert not [c for c in running if re.search(r"slurm|munge|-m gpuwarden", c)], \
                running
            installed = venv_packages(tampered)
            assert "pip" in installed and installed <= {"pip", "setuptools"}, installed

        # the cluster's pods install, wait for their secrets, get them once, and come up
        ws = Workspace(home, spec.name)
        waiting = {p.name: p for p in cluster}
        started = time.monotonic()

        def deliver() -> bool:
            for pod in list(waiting.values()):
                seen = probe(http, pod.url)
                assert seen.bootstrap != "failed", pod.log_tail()
                if seen.bootstrap == "waiting":
                    deliver_secrets(http, ws, pod.url, pod.name)
                    del waiting[pod.name]
            return not waiting

        wait_for("the pods to install gpuwarden and wait for their secrets", deliver, 480,
                 all_logs)
        def node_up(pod: Pod) -> bool:
            seen = probe(http, pod.url)
            assert seen.bootstrap != "failed", pod.log_tail()
            return seen.healthy

        for pod in cluster:
            wait_for(f"{pod.name}'s node daemon", partial(node_up, pod), 240, pod.log_tail)
        print(f"\nthree pods bootstrapped in {time.monotonic() - started:.0f} s")
        # ...with gpuwarden and exactly the pinned dependencies in their venvs
        venv_own = {"pip", "setuptools"}
        pinned = {line.split("==")[0] for line in requirements.splitlines() if "==" in line}
        for pod in cluster:
            assert venv_packages(pod) - venv_own == (pinned | {"gpuwarden"}) - venv_own, \
                pod.name
        for pod in cluster:  # written 0600 by root, over the munge.key Debian's package made
            for secret in ("etc/gpuwarden/node.token", "etc/munge/munge.key"):
                st = (pod.upper / secret).stat()
                assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), (pod.name, secret)

        # one Slurm cluster across the namespaces: a 2-node job from the controller pod
        controller = cluster[0]
        wait_for("three idle Slurm nodes", lambda: controller.run(
            "sinfo", "-N", "-h", "-o", "%N %t").stdout.split() == [
                "node1", "idle", "node2", "idle", "node3", "idle"], 120, all_logs)
        job = controller.run("srun", "-N2", "-t", "1", "hostname", timeout=90)
        assert job.returncode == 0, job.stderr + all_logs()
        names = sorted(job.stdout.split())
        assert len(names) == 2 and len(set(names)) == 2, job.stdout
        assert set(names) <= {p.name for p in cluster}, job.stdout

        # a serve on this host scrapes each node daemon at its pod's address
        upsert_provider_nodes(db, spec.name, "runpod", [
            NodeRecord(f"fresh-node{i}", i, "controller" if i == 1 else "worker", "RUNNING",
                       url=p.url, token_file=ws.token_file(spec.name))
            for i, p in enumerate(cluster, start=1)])
        config = tmp_path / "gpuwarden.yaml"
        config.write_text("scrape:\n  interval: 1\n")
        serve = serve_factory(config, home)
        nodes = serve.wait(lambda: (lambda v: v if len(v) == 3 and all(
            n["up"] and n["gpus"] == GPUS for n in v) else None)(
                serve.get("/api/v1/nodes").json()), timeout=60, what="three pods scraped")
        assert {n["url"] for n in nodes} == {p.url for p in cluster}
        assert {n["version"] for n in nodes} == {__version__}
        assert [n["version_mismatch"] for n in nodes] == [None] * 3
        http.close()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        for pod in pods:
            stop_pod(pod)
        net.down()
    # down left nothing: no process, mount, namespace or link of the pods
    for pod in pods:
        if pod.pid_ns:
            assert not pod.processes(), (pod.name, pod.processes())
    mounts = Path("/proc/mounts").read_text()
    assert str(tmp_path) not in mounts and f"gwpod-{tag}-" not in mounts, mounts
    assert f"gwpod-{tag}-" not in sh("ip", "netns", "list").stdout
    links = sh("ip", "-o", "link", "show").stdout
    assert net.bridge not in links and f"gwp{tag}v" not in links, links
