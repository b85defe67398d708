"""Where RunPod pods get gpuwarden (``runpod.install``) and how their secrets reach them,
against the fake RunPod server (every request validated against the real v2 spec): no
source is refused before anything is created, a wheel is pinned by the hash ``up``
computes and its dependencies by a requirements file ``up`` checks, no secret sits in a
pod's environment, a failed bootstrap and a node of another version reach ``up`` and
``status``."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gpuwarden import __version__
from gpuwarden.errors import GpuwardenError
from gpuwarden.providers import down, parse_description, status, up
from gpuwarden.providers.base import Workspace
from gpuwarden.providers.install import main as install_main
from gpuwarden.providers.registry import home_of
from tests.providers.conftest import WHEEL, runpod_spec
from tests.providers.test_runpod_lifecycle import assert_contract_kept


def secrets_of(db, name: str = "dev") -> tuple[str, str]:
    ws = Workspace(home_of(db), name)
    token = ws.token_file(name).read_text().strip()
    return token, base64.b64encode((ws.directory / "munge.key").read_bytes()).decode()


def test_up_without_an_install_source_is_refused_before_creating_anything(
        fake_runpod, runtime, db):
    spec = parse_description(runpod_spec(runpod={"install": None}))
    with pytest.raises(GpuwardenError) as exc:
        up(spec, db, runtime=runtime)
    text = str(exc.value)
    assert text.startswith("runpod.install: ") and "\n" not in text
    assert "install: {image: " in text and "install: {wheel: https://" in text
    assert "deploy/node.Dockerfile" in text and "nothing was created" in text
    assert fake_runpod.calls["createPod"] == 0 and fake_runpod.calls["createCluster"] == 0


def test_a_hash_pinned_wheel_reaches_the_pods_and_no_secret_sits_in_their_env(
        fake_runpod, runtime, db, wheel_server):
    base, root = wheel_server
    data = b"the bytes of a wheel built from this checkout"
    (root / WHEEL).write_bytes(data)
    spec = parse_description(runpod_spec(nodes=2, runpod={"install": {
        "wheel": f"{base}/{WHEEL}", "index_url": "https://pypi.example.com/simple"}}))
    report = up(spec, db, runtime=runtime)
    assert report.ready
    pods = fake_runpod.live_pods()
    token, munge_b64 = secrets_of(db)
    for pod in pods:
        env = pod["env"]  # as the fake received it in the spec-validated create request
        assert env["GPUWARDEN_INSTALL_SHA256"] == hashlib.sha256(data).hexdigest()
        assert env["GPUWARDEN_INSTALL_WHEEL"] == f"{base}/{WHEEL}"
        assert env["GPUWARDEN_INSTALL_INDEX_URL"] == "https://pypi.example.com/simple"
        assert pod["image"] == spec.image and "GPUWARDEN_SKIP_INSTALL" not in env
        assert not {"GPUWARDEN_NODE_TOKEN", "GPUWARDEN_MUNGE_KEY_B64"} & set(env)
        assert not any(token in v or munge_b64 in v for v in env.values())
        # ...they were delivered once, to each pod, through its node port
        assert fake_runpod.delivered[pod["id"]] == {"node_token": token,
                                                    "munge_key_b64": munge_b64}
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


HASH_A, HASH_B = "a" * 64, "b" * 64
PINNED = f"""# made by pip-compile --generate-hashes
--index-url https://pypi.example.com/simple

annotated-types==0.7.0 \\
    --hash=sha256:{HASH_A} \\
    --hash=sha256:{HASH_B}
    # via pydantic
pydantic==2.9.2 ; python_version >= "3.8" --hash=sha256:{HASH_A}
"""


def test_hash_pinned_requirements_reach_the_pods(fake_runpod, runtime, db, wheel_server):
    base, root = wheel_server
    (root / WHEEL).write_bytes(b"wheel")
    (root / "requirements.txt").write_text(PINNED)
    spec = parse_description(runpod_spec(nodes=2, runpod={"install": {
        "wheel": f"{base}/{WHEEL}", "requirements": f"{base}/requirements.txt",
        "requirements_sha256": hashlib.sha256(PINNED.encode()).hexdigest()}}))
    assert up(spec, db, runtime=runtime).ready
    pods = fake_runpod.live_pods()
    assert len(pods) == 2
    for pod in pods:
        env = pod["env"]  # as the fake received it in the spec-validated create request
        assert env["GPUWARDEN_INSTALL_REQUIREMENTS"] == f"{base}/requirements.txt"
        assert env["GPUWARDEN_INSTALL_REQUIREMENTS_SHA256"] == hashlib.sha256(
            PINNED.encode()).hexdigest()
        assert env["GPUWARDEN_INSTALL_SHA256"] == hashlib.sha256(b"wheel").hexdigest()
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


@pytest.mark.parametrize("case, text, match", [
    ("unhashed", PINNED + "fastapi==0.110.0\n",
     r"runpod\.install\.requirements: http://\S+/requirements\.txt line 9 "
     r"\('fastapi==0\.110\.0'\) is not pinned to one version by hash; .*--generate-hashes"),
    ("unpinned", f"fastapi>=0.110 --hash=sha256:{HASH_A}\n",
     r"runpod\.install\.requirements: .* line 1 .* is not pinned to one version by hash"),
    ("include", PINNED + "-r more.txt\n",
     r"runpod\.install\.requirements: .* line 9 .*-r is not allowed"),
    ("gpuwarden", PINNED + f"gpuwarden==0.1.0 --hash=sha256:{HASH_B}\n",
     r"runpod\.install\.requirements: .* line 9 .* names gpuwarden itself"),
    ("empty", "# nothing\n", r"runpod\.install\.requirements: .* lists no requirement"),
    ("sha256", PINNED, r"runpod\.install\.requirements_sha256: \S+ has sha256 [0-9a-f]{64}, "
                       r"not the 0{64} the cluster file pins"),
    ("missing", None, r"runpod\.install\.requirements: GET .* answered HTTP 404"),
])
def test_requirements_that_do_not_check_out_are_refused_before_creating_anything(
        fake_runpod, runtime, db, wheel_server, case, text, match):
    base, root = wheel_server
    (root / WHEEL).write_bytes(b"wheel")
    if text is not None:
        (root / "requirements.txt").write_text(text)
    install = {"wheel": f"{base}/{WHEEL}", "requirements": f"{base}/requirements.txt"}
    if case == "sha256":
        install["requirements_sha256"] = "0" * 64
    with pytest.raises(GpuwardenError, match=match) as exc:
        up(parse_description(runpod_spec(runpod={"install": install})), db, runtime=runtime)
    assert "\n" not in str(exc.value)
    assert fake_runpod.calls["createPod"] == 0


def test_the_requirements_helper_pins_a_wheelhouse_by_hash(tmp_path, capsys):
    from gpuwarden.providers.install import check_requirements

    house = tmp_path / "house"
    house.mkdir()
    wheels = {"pydantic_core-2.23.4-cp311-cp311-manylinux_2_17_x86_64.whl": b"core-x86",
              "pydantic_core-2.23.4-cp311-cp311-manylinux_2_17_aarch64.whl": b"core-arm",
              "Annotated_Types-0.7.0-py3-none-any.whl": b"types", WHEEL: b"ours"}
    for name, data in wheels.items():
        (house / name).write_bytes(data)
    assert install_main(["requirements", str(house)]) == 0
    text = capsys.readouterr().out
    check_requirements(text, "requirements.txt")  # what up accepts
    digest = {name: hashlib.sha256(data).hexdigest() for name, data in wheels.items()}
    assert text == (
        "annotated-types==0.7.0 \\\n"
        f"    --hash=sha256:{digest['Annotated_Types-0.7.0-py3-none-any.whl']}\n"
        "pydantic-core==2.23.4 \\\n"
        f"    --hash=sha256:{digest['pydantic_core-2.23.4-cp311-cp311-manylinux_2_17_aarch64.whl']}"
        " \\\n"
        f"    --hash=sha256:{digest['pydantic_core-2.23.4-cp311-cp311-manylinux_2_17_x86_64.whl']}"
        "\n")
    (house / "pydantic_core-2.24.0-py3-none-any.whl").write_bytes(b"other")
    assert install_main(["requirements", str(house)]) == 2
    assert "more than one version of pydantic-core (2.23.4, 2.24.0)" in capsys.readouterr().err


def test_an_image_source_runs_that_image_and_skips_the_install(fake_runpod, runtime, db):
    image = "ghcr.io/example/gpuwarden-node:" + __version__
    up(parse_description(runpod_spec(nodes=1, runpod={"mode": "pods",
                                                       "install": {"image": image}})),
       db, runtime=runtime)
    (pod,) = fake_runpod.live_pods()
    assert pod["image"] == image and pod["env"]["GPUWARDEN_SKIP_INSTALL"] == "1"
    assert "GPUWARDEN_INSTALL_WHEEL" not in pod["env"]
    down("dev", db, runtime=runtime)


@pytest.mark.parametrize("case, match", [
    ("sha256", r"runpod\.install\.sha256: .* has sha256 [0-9a-f]{64}, not the 0{64}"),
    ("version", r"runpod\.install\.wheel: the wheel is gpuwarden 0\.0\.1, this control "),
    ("missing", r"runpod\.install\.wheel: GET .* answered HTTP 404"),
])
def test_a_wheel_that_does_not_check_out_is_refused_before_creating_anything(
        fake_runpod, runtime, db, wheel_server, case, match):
    base, root = wheel_server
    name = "gpuwarden-0.0.1-py3-none-any.whl" if case == "version" else WHEEL
    if case != "missing":
        (root / name).write_bytes(b"wheel")
    install = {"wheel": f"{base}/{name}"}
    if case == "sha256":
        install["sha256"] = "0" * 64
    with pytest.raises(GpuwardenError, match=match):
        up(parse_description(runpod_spec(runpod={"install": install})), db, runtime=runtime)
    assert fake_runpod.calls["createPod"] == 0


def test_a_failed_bootstrap_reaches_up_and_status_with_its_step(fake_runpod, runtime, db):
    fake_runpod.bootstrap_failure = (
        "download gpuwarden (hash-checked)",
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
        "    Expected sha256 00\n         Got        4e")
    with pytest.raises(GpuwardenError) as exc:
        up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    text = str(exc.value)
    assert "bootstrap failed at step 'download gpuwarden (hash-checked)'" in text
    assert "DO NOT MATCH THE HASHES" in text and "\n" not in text
    st = status("dev", db, runtime)
    assert st.nodes[0].healthy is False
    assert any("bootstrap failed at step 'download gpuwarden" in p and "Got" in p
               for p in st.problems), st.problems
    down("dev", db, runtime=runtime)


def test_a_node_of_another_version_is_refused_by_up_and_shown_by_status(
        fake_runpod, runtime, db):
    fake_runpod.node_version = "0.0.1"
    with pytest.raises(GpuwardenError, match=rf"gw-dev-1: the node runs gpuwarden 0\.0\.1, "
                                             rf"this control plane {__version__}"):
        up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    st = status("dev", db, runtime)
    assert any("runs gpuwarden 0.0.1" in p for p in st.problems), st.problems
    down("dev", db, runtime=runtime)


def test_a_restarted_pod_gets_its_secrets_again(fake_runpod, runtime, db):
    from gpuwarden.providers import start_node, stop_node

    up(parse_description(runpod_spec(nodes=1)), db, runtime=runtime)
    (pod,) = fake_runpod.live_pods()
    assert fake_runpod.deliveries[pod["id"]] == 1
    stop_node("dev", "dev-node1", db, runtime=runtime)
    record = start_node("dev", "dev-node1", db, runtime=runtime)
    assert record.healthy and fake_runpod.deliveries[pod["id"]] == 2
    assert fake_runpod.delivered[pod["id"]]["node_token"] == secrets_of(db)[0]
    down("dev", db, runtime=runtime)
    assert_contract_kept(fake_runpod)


@pytest.mark.parametrize("install, match", [
    ({"image": "x", "wheel": "https://h/gpuwarden-0.1.0-py3-none-any.whl"}, "exactly one"),
    ({}, "exactly one"),
    ({"image": "x", "sha256": "a" * 64}, "sha256 pins a wheel"),
    ({"wheel": "https://h/other-0.1.0-py3-none-any.whl"}, r"install\.wheel: must be"),
    ({"wheel": "ftp://h/gpuwarden-0.1.0-py3-none-any.whl"}, r"install\.wheel: must be"),
    ({"wheel": "https://h/gpuwarden-0.1.0-py3-none-any.whl", "sha256": "XYZ"},
     r"install\.sha256"),
    ({"wheel": "https://h/gpuwarden-0.1.0-py3-none-any.whl", "index_url": "file:///x"},
     r"install\.index_url: must be"),
    ({"image": "x", "index_url": "https://pypi.org/simple"}, "with image, drop index_url"),
    ({"image": "x", "requirements": "https://h/r.txt"}, "with image, drop requirements"),
    ({"wheel": "https://h/gpuwarden-0.1.0-py3-none-any.whl", "requirements": "/tmp/r.txt"},
     r"install\.requirements: must be the http\(s\) URL of a requirements file"),
    ({"wheel": "https://h/gpuwarden-0.1.0-py3-none-any.whl", "requirements_sha256": "a" * 64},
     "requirements_sha256 pins the requirements file; set requirements"),
    ({"wheel": "https://h/gpuwarden-0.1.0-py3-none-any.whl", "requirements": "https://h/r",
      "requirements_sha256": "XYZ"}, r"install\.requirements_sha256"),
])
def test_install_source_errors_name_the_field(install, match):
    with pytest.raises(GpuwardenError, match=match):
        parse_description(runpod_spec(runpod={"install": install}))


def test_a_removed_version_pin_and_a_second_image_are_refused():
    with pytest.raises(GpuwardenError, match=r"gpuwarden_version: removed .*runpod\.install"):
        parse_description(runpod_spec(runpod={"gpuwarden_version": "0.1.0"}))
    with pytest.raises(GpuwardenError, match=r"image and runpod\.install\.image"):
        parse_description(runpod_spec(image="other:1"))
    # a saved description (every field written out) loads again
    spec = parse_description(runpod_spec())
    assert parse_description(spec.model_dump(mode="json")) == spec
    legacy = {**spec.model_dump(mode="json")}
    legacy["runpod"] = {**legacy["runpod"], "gpuwarden_version": None}
    assert parse_description(legacy) == spec
