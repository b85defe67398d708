"""slurm.conf / gres.conf / cgroup.conf generation and cluster descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.slurm import SlurmActions, SlurmAdapter, SubmitOptions
from gpuwarden.slurm.config import (
    ClusterSpec,
    NodeSpec,
    cluster_from_dict,
    load_cluster,
    render_config,
)
from gpuwarden.slurm.errors import ValidationError


def spec(**kw: object) -> ClusterSpec:
    nodes = (
        NodeSpec(name="gpu1", addr="10.0.0.2", cpus=32, memory_mb=250000, gpus=2,
                 gpu_type="h100"),
        NodeSpec(name="gpu2", addr="10.0.0.3", cpus=32, memory_mb=250000, gpus=2,
                 gpu_type="h100", gpu_files=("/dev/nvidia2", "/dev/nvidia3")),
    )
    base: dict[str, object] = {"name": "demo", "controller_host": "head",
                               "controller_addr": "10.0.0.1", "nodes": nodes}
    base.update(kw)
    return ClusterSpec(**base)  # type: ignore[arg-type]


def settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "NodeName", "PartitionName")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_real_cluster() -> None:
    rendered = render_config(spec(max_job_count=50000, munge_socket="/run/munge/munge.socket.2"))
    conf = settings(rendered.slurm_conf)
    assert conf["SlurmctldHost"] == "head(10.0.0.1)"
    assert conf["ProctrackType"] == "proctrack/cgroup"
    assert conf["TaskPlugin"] == "task/cgroup,task/affinity"
    assert conf["GresTypes"] == "gpu" and conf["MaxJobCount"] == "50000"
    assert conf["AuthInfo"] == "socket=/run/munge/munge.socket.2"
    assert "AccountingStorageTRES" not in conf
    assert ("NodeName=gpu1 NodeAddr=10.0.0.2 Port=6818 CPUs=32 RealMemory=250000 "
            "Gres=gpu:h100:2 State=UNKNOWN") in rendered.slurm_conf
    assert "PartitionName=gpu Nodes=gpu1,gpu2 Default=YES" in rendered.slurm_conf
    assert rendered.gres_conf.splitlines()[1:] == [
        "NodeName=gpu1 Name=gpu Type=h100 File=/dev/nvidia0",
        "NodeName=gpu1 Name=gpu Type=h100 File=/dev/nvidia1",
        "NodeName=gpu2 Name=gpu Type=h100 File=/dev/nvidia2",
        "NodeName=gpu2 Name=gpu Type=h100 File=/dev/nvidia3",
    ]
    assert rendered.cgroup_conf is not None and "ConstrainDevices=yes" in rendered.cgroup_conf


def test_local_cluster_settings() -> None:
    rendered = render_config(spec(mode="local"))
    conf = settings(rendered.slurm_conf)
    assert conf["ProctrackType"] == "proctrack/linuxproc"
    assert conf["TaskPlugin"] == "task/none"
    assert conf["JobAcctGatherType"] == "jobacct_gather/none"
    assert conf["AccountingStorageType"] == "accounting_storage/none"
    assert conf["ReturnToService"] == "2" and conf["MpiDefault"] == "none"
    assert conf["SlurmdSpoolDir"].endswith("/%n")
    assert rendered.cgroup_conf is None
    assert sorted(rendered.files()) == ["gres.conf", "slurm.conf"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"nodes": ()}, "nodes"),
        ({"nodes": (NodeSpec(name="a"), NodeSpec(name="a"))}, "nodes[1].name"),
        ({"nodes": (NodeSpec(name="a", gpus=2, gpu_files=("/dev/x",)),)}, "nodes[0].gpu_files"),
        ({"nodes": (NodeSpec(name="a", cpus=0),)}, "nodes[0].cpus"),
        ({"controller_host": "bad host"}, "controller_host"),
    ],
)
def test_invalid_specs_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        render_config(spec(**change))
    assert err.value.field == field


def test_yaml_description(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: demo\ncontroller_host: head\nnodes:\n"
        "  - {name: n1, gpus: 4, gpu_type: a100, gpu_files: [/dev/nvidia0, /dev/nvidia1,"
        " /dev/nvidia2, /dev/nvidia3]}\n"
        "partitions:\n  - {name: short, nodes: [n1], default: true, max_time: '1:00:00'}\n"
    )
    loaded = load_cluster(path)
    assert loaded.nodes[0].gpu_files[3] == "/dev/nvidia3"
    assert "PartitionName=short Nodes=n1 Default=YES MaxTime=1:00:00" in (
        render_config(loaded).slurm_conf)
    with pytest.raises(ValidationError) as err:
        cluster_from_dict({"name": "x", "nodes": []})
    assert err.value.field == "controller_host"
    with pytest.raises(ValidationError) as err:
        cluster_from_dict({"name": "x", "controller_host": "h", "nodes": [{"cpus": 2}]})
    assert err.value.field == "nodes[0].name"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ValidationError) as err:
        load_cluster(path)
    assert err.value.field == "--cluster"


def test_submit_validation_without_slurm() -> None:
    """Field checks that need no sinfo are refused before any command could run."""
    actions = SlurmActions(SlurmAdapter(env={"PATH": "/nonexistent"}))
    script = "#!/bin/sh\ntrue\n"
    for opts, field in (
        (SubmitOptions(time="soon"), "time"),
        (SubmitOptions(mem="lots"), "mem"),
        (SubmitOptions(ntasks=0), "ntasks"),
        (SubmitOptions(gpus=-1), "gpus"),
        (SubmitOptions(name="a\nb"), "name"),
        (SubmitOptions(comment="x" * 300), "comment"),
        (SubmitOptions(workdir="relative/dir"), "workdir"),
        (SubmitOptions(gres="gpu:2;reboot"), "gres"),
    ):
        with pytest.raises(ValidationError) as err:
            actions.submit(script, opts)
        assert err.value.field == field
    args = actions.submit_args(script, SubmitOptions(name="x y", time="1-00:00:00", gpus=2,
                                                     comment="gpuwarden:profile=idle"))
    assert args == ["--parsable", "--job-name=x y", "--gpus=2", "--time=1-00:00:00",
                    "--comment=gpuwarden:profile=idle"]


def test_accounting_settings_and_slurmdbd_conf() -> None:
    from gpuwarden.slurm.config import AccountingSpec, render_slurmdbd_conf

    acct = AccountingSpec(host="head", port=7031, storage_port=7032, storage_pass="s3cret",
                          pid_file="/r/slurmdbd.pid", log_file="/l/slurmdbd.log")
    local = spec(mode="local", munge_socket="/c/munge.socket", accounting=acct)
    conf = settings(render_config(local).slurm_conf)
    assert conf["AccountingStorageType"] == "accounting_storage/slurmdbd"
    assert (conf["AccountingStorageHost"], conf["AccountingStoragePort"]) == ("127.0.0.1",
                                                                              "7031")
    assert conf["AccountingStorageTRES"] == "gres/gpu"
    assert conf["AccountingStoragePass"] == "socket=/c/munge.socket"  # clients' munge socket
    assert conf["JobAcctGatherType"] == "jobacct_gather/linux"  # no cgroups locally
    assert "s3cret" not in render_config(local).slurm_conf
    dbd = settings(render_slurmdbd_conf(local))
    assert dbd["DbdPort"] == "7031" and dbd["StoragePort"] == "7032"
    assert dbd["StoragePass"] == "s3cret" and dbd["AuthInfo"] == "socket=/c/munge.socket"
    assert dbd["StorageType"] == "accounting_storage/mysql" and dbd["DbdHost"] == "head"
    assert "s3cret" not in repr(acct)
    real = settings(render_config(spec(accounting=acct)).slurm_conf)
    assert real["JobAcctGatherType"] == "jobacct_gather/cgroup"
    with pytest.raises(ValidationError, match="accounting"):
        render_slurmdbd_conf(spec())
    loaded = cluster_from_dict({"name": "c", "controller_host": "head",
                                "nodes": [{"name": "n1"}],
                                "accounting": {"host": "dbd", "port": 6819}})
    assert loaded.accounting == AccountingSpec(host="dbd", port=6819)
    with pytest.raises(ValidationError, match=r"accounting\.colour"):
        cluster_from_dict({"name": "c", "controller_host": "head", "nodes": [{"name": "n1"}],
                           "accounting": {"host": "dbd", "colour": "red"}})
