"""The local cluster's ports: chosen where no outgoing connection takes them, and a port
taken anyway between choosing and binding starts the cluster over on others."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden import processes
from gpuwarden.slurm import LocalSlurmCluster
from gpuwarden.slurm.errors import LocalClusterError


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = processes.free_ports(8, "")
    assert len(set(ports)) == 8
    assert all(1024 <= p < low for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("", port))


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port in use the way an outgoing connection uses its source port: a connected
    client socket on it, nothing listening."""
    with socket.socket() as listener, socket.socket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = processes.free_port()
        client.bind(("127.0.0.1", port))
        client.connect(listener.getsockname())
        assert port not in processes.free_ports(64, "")
        yield port


@pytest.mark.slow
def test_a_port_taken_before_slurmd_binds_it_starts_the_cluster_over(
        tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    real = processes.free_ports
    handed: list[list[int]] = []

    def first_with_a_taken_node_port(count: int = 1, host: str = "") -> list[int]:
        ports = real(count, host)
        if not handed:  # [slurmctld, node1]: node1's port is the taken one
            ports[1] = taken_port
        handed.append(ports)
        return ports

    monkeypatch.setattr(processes, "free_ports", first_with_a_taken_node_port)
    notes: list[str] = []
    cluster = LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=1, accounting=False,
                                progress=notes.append)
    try:
        status = cluster.up()
        assert status.running
        assert len(handed) == 2 and taken_port not in handed[1]
        retry = [n for n in notes if "starting again on other ports" in n]
        assert retry and f"({taken_port})" in retry[0], notes
        assert cluster.adapter().run("sinfo", ["-h", "-o", "%t"]).stdout.strip() == "idle"
    finally:
        cluster.down()


@pytest.mark.slow
def test_a_daemon_that_dies_at_start_fails_at_once_with_its_log_line(
        tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "free_ports", lambda count=1, host="": [taken_port] * count)
    cluster = LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=1, accounting=False)
    try:
        with pytest.raises(LocalClusterError) as err:
            cluster.up()
        message = str(err.value)
        assert "slurmctld" in message and "in use" in message and "3 tries" in message
        assert cluster.leftover_pids() == []
    finally:
        cluster.down()
