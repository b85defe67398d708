"""Node health checks: specs as data, each simulated fault found by its check (and only
by it), the fault file clearing a fault at runtime, the NVML readings, the node route."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gpuwarden.checks import Expectation, load_checks, run_checks
from gpuwarden.checks.model import CheckResult, drain_reason, drained_by_checks
from gpuwarden.errors import GpuwardenError
from gpuwarden.gpu.nvml import NvmlSource
from gpuwarden.gpu.sim import FAULTS, SimSource, parse_faults
from gpuwarden.node.app import create_app
from gpuwarden.node.poller import GpuPoller
from tests.fakes.fake_pynvml import FakeNvml, consumer_gpu, h100

H100 = Expectation(4, "H100")


def verdicts(poll, level="quick", expect=H100):
    return {r.name: r for r in run_checks(poll, load_checks(), level, expect=expect)}


def sim_poll(fault: str | None = None, gpus: int = 4):
    source = SimSource(gpus, "h100", faults=parse_faults(fault, gpus), seed=3)
    source.poll()
    return source.poll()


def test_a_healthy_node_passes_every_quick_check():
    results = verdicts(sim_poll())
    assert {r.verdict for r in results.values()} <= {"pass"}, results
    assert results["pcie_link"].expected == "x16 gen 5"
    assert results["driver_versions"].figure == "driver 550.54.15-sim, CUDA 12.4"


# fault -> the check that fails, and a piece of its figure
FOUND_BY = {
    "pcie-degraded": ("pcie_link", "GPU 0: x8 of x16, gen 3 of gen 5"),
    "row-remap-pending": ("row_remap", "row remap pending a GPU reset"),
    "gpu-missing": ("gpu_count", "3 answering"),
    "slow": ("clocks_idle", "hw_slowdown, hw_power_brake_slowdown"),
    "ecc-storm": ("ecc_uncorrectable", "volatile"),
    "xid-79": ("xid_hardware", "GPU 0: XID 79 x1"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_simulated_fault_fails_its_check(fault):
    name, piece = FOUND_BY[fault]
    results = verdicts(sim_poll(fault))
    assert results[name].verdict == "fail" and piece in results[name].figure, results[name]
    failed = {n for n, r in results.items() if r.verdict == "fail"}
    assert failed == ({name, "xid_hardware"} if fault == "ecc-storm" else {name})


def test_a_hardware_xid_fails_one_run_and_passes_once_none_came_since():
    source = SimSource(2, "h100", faults=parse_faults("1=xid-79", 2), seed=3)
    poll = source.poll()
    seen = next(x.last_seen for x in poll.gpus[1].xids)
    first = verdicts(poll, expect=Expectation(2, xids_since=seen - 1))["xid_hardware"]
    assert (first.verdict, first.figure) == ("fail", "GPU 1: XID 79 x1")
    assert first.expected == "none since the last check"
    source.poll()  # the XID does not repeat: the run after the failed one passes
    again = verdicts(source.poll(), expect=Expectation(2, xids_since=seen + 0.5))
    assert (again["xid_hardware"].verdict, again["xid_hardware"].figure) == ("pass", "none")
    # with no time given, every XID since the node daemon started counts
    assert verdicts(source.poll(), expect=Expectation(2))["xid_hardware"].verdict == "fail"


def test_gpu_model_and_count_against_what_was_asked():
    poll = sim_poll()
    results = verdicts(poll, expect=Expectation(8, "A100"))
    assert results["gpu_count"].verdict == "fail"
    assert results["gpu_count"].expected == "8 answering"
    assert results["gpu_model"].verdict == "fail"
    assert results["gpu_model"].figure == "NVIDIA H100 80GB HBM3"
    assert results["gpu_model"].expected == "A100"


def test_per_gpu_fault_names_that_gpu_only():
    results = verdicts(sim_poll("2=pcie-degraded"))
    assert results["pcie_link"].figure == "GPU 2: x8 of x16, gen 3 of gen 5"


def test_active_checks_are_skipped_with_the_reason():
    results = verdicts(sim_poll(), level="long")
    assert results["gpu_burn"].verdict == "skip"
    assert results["gpu_burn"].figure == "skipped: torch or cupy not installed"
    assert results["dcgm_diag"].figure == "skipped: dcgmi not installed"
    assert results["dcgm_diag_long"].level == "long"
    assert results["nccl_allreduce"].figure == "skipped: all_reduce_perf not installed"
    assert "gpu_burn" not in verdicts(sim_poll(), level="quick")


def test_fault_file_is_read_again_when_it_changes(tmp_path):
    fault_file = tmp_path / "sim-fault"
    fault_file.write_text("1=pcie-degraded\n")
    source = SimSource(2, "h100", seed=1, fault_file=fault_file)
    assert verdicts(source.poll(), expect=Expectation(2))["pcie_link"].verdict == "fail"
    fault_file.write_text("none\n")
    assert verdicts(source.poll(), expect=Expectation(2))["pcie_link"].verdict == "pass"
    fault_file.write_text("gpu-missing")
    assert len(source.poll().gpus) == 1
    fault_file.write_text("1=no-such-fault")  # refused: the faults stay as they were
    assert len(source.poll().gpus) == 1
    fault_file.unlink()  # gone: back to the faults the source was made with (none)
    assert len(source.poll().gpus) == 2


def test_bad_fault_spec_names_the_fix():
    with pytest.raises(ValueError, match="unknown fault 'hot'; choose one of: pcie-degraded"):
        parse_faults("hot", 4)
    with pytest.raises(ValueError, match="GPU 7 does not exist"):
        parse_faults("7=slow", 4)


def test_overrides_and_errors_name_the_check_and_field():
    checks = {c.name: c for c in load_checks({"pcie_link": {"severity": "warn"},
                                              "power_limit": False})}
    assert checks["pcie_link"].severity == "warn" and not checks["power_limit"].enabled
    results = {r.name: r for r in run_checks(sim_poll("pcie-degraded"), list(checks.values()),
                                             "quick", expect=H100)}
    assert results["pcie_link"].verdict == "warn" and "power_limit" not in results
    with pytest.raises(GpuwardenError, match="unknown check pcie_lnk; did you mean pcie_link"):
        load_checks({"pcie_lnk": {"severity": "warn"}})
    with pytest.raises(GpuwardenError,
                       match=r"checks.checks.pcie_link: severity: Input should be .warn. or"):
        load_checks({"pcie_link": {"severity": "loud"}})
    with pytest.raises(GpuwardenError, match="is not a need"):
        load_checks({"mine": {"kind": "gpu_count", "needs": ["torch"]}})


def test_nvml_readings_feed_the_checks_and_unsupported_calls_are_cached():
    gpus = [h100(i) for i in range(4)] + [consumer_gpu()]
    gpus[1].pcie_width = 8
    gpus[2].remapped_rows = (0, 2, 1, 0)
    gpus[3].power_limit_mw = 500000
    nvml = FakeNvml(gpus)
    source = NvmlSource(nvml=nvml, xid_wait_ms=10)
    source.start()
    try:
        poll = source.poll()
        source.poll()
    finally:
        source.close()
    assert poll.cuda_driver_version == "12.4"
    results = verdicts(poll, expect=Expectation(5))
    assert results["pcie_link"].figure == "GPU 1: x8 of x16"
    assert results["row_remap"].figure.startswith("GPU 2: row remap pending")
    assert results["power_limit"].figure == "GPU 3: 500 W of default 700 W"
    assert results["power_limit"].verdict == "warn"
    # the GeForce card has no row remapping: asked once, never again; maxima read once
    assert nvml.calls["nvmlDeviceGetRemappedRows"] == 4 * 2 + 1
    assert nvml.calls["nvmlDeviceGetMaxPcieLinkWidth"] == 5


def test_drain_reason_and_who_drained():
    result = CheckResult("pcie_link", "quick", "fail", "GPU 1: x8 of x16", "x16 gen 5")
    assert drain_reason(result) == "[gpuwarden-check] pcie_link: GPU 1: x8 of x16"
    assert drained_by_checks(drain_reason(result)) and drained_by_checks("gpuwarden: burn-in")
    assert not drained_by_checks("admin: bad fan")


def test_node_route_runs_checks_with_auth():
    poller = GpuPoller(SimSource(2, "h100", faults={1: "slow"}, seed=1), hostname="n1",
                       interval=5)
    poller.poll_once()
    client = TestClient(create_app(poller.latest, token="s3cret"))
    auth = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/v1/checks").status_code == 401
    body = client.get("/api/v1/checks?level=quick&gpus=2&model=h100", headers=auth).json()
    by_name = {r["name"]: r for r in body["results"]}
    assert body["node"] == "n1" and by_name["clocks_idle"]["verdict"] == "fail"
    assert by_name["clocks_idle"]["figure"].startswith("GPU 1: hw_slowdown")
    posted = client.post("/api/v1/checks", headers=auth, json={
        "level": "quick", "expect": {"gpus": 4}, "checks": {"clocks_idle": False}}).json()
    by_name = {r["name"]: r for r in posted["results"]}
    assert "clocks_idle" not in by_name and by_name["gpu_count"]["verdict"] == "fail"
    bad = client.get("/api/v1/checks?level=slow", headers=auth)
    assert bad.status_code == 400 and "use one of quick, standard, long" in bad.json()["detail"]
    bad = client.post("/api/v1/checks", headers=auth, json={"expect": {"gpus": "many"}})
    assert bad.status_code == 400 and "expect.gpus" in bad.json()["detail"]
    bad = client.post("/api/v1/checks", headers=auth, json={"expect": {"xids_since": "x"}})
    assert bad.status_code == 400 and "expect.xids_since" in bad.json()["detail"]
    for body in (b"{level", b'"quick"'):
        bad = client.post("/api/v1/checks", headers={**auth, "Content-Type": "application/json"},
                          content=body)
        assert bad.status_code == 400 and '"level"' in bad.json()["detail"], bad.text


def test_react_resumes_only_what_gpuwarden_drained():
    from gpuwarden.checks.react import react

    ok = [CheckResult("pcie_link", "quick", "pass", "at max link", "x16 gen 5")]
    bad = [CheckResult("pcie_link", "quick", "fail", "GPU 1: x8 of x16", "x16 gen 5")]
    assert react(ok, True, "gpuwarden: burn-in").action == "resume"
    assert react(ok, True, "[gpuwarden-check] pcie_link: GPU 1: x8 of x16").action == "resume"
    assert react(ok, True, "admin: bad fan").action == "none"  # not ours: left drained
    assert react(ok, False, "").action == "none"
    drain = react(bad, False, "")
    assert (drain.action, drain.reason) == ("drain", "[gpuwarden-check] pcie_link: GPU 1: x8 "
                                            "of x16")
    assert react(bad, True, "gpuwarden: burn-in").action == "drain"  # the reason changes
    assert react(bad, True, drain.reason).action == "none"
    assert react(bad, True, "admin: bad fan").action == "none"
    # drained by a check that did not run again (the NCCL check skipped, or a level below
    # it): kept drained, whatever else passes; run again and passing, resumed
    nccl_reason = "[gpuwarden-check] nccl_allreduce: 40 GB/s (3 nodes x 8 GPUs)"
    skipped = [*ok, CheckResult("nccl_allreduce", "long", "skip", "skipped: busy", "")]
    kept = react(skipped, True, nccl_reason)
    assert kept.action == "none" and "nccl_allreduce" in kept.why
    assert react(ok, True, nccl_reason).action == "none"
    passed = [*ok, CheckResult("nccl_allreduce", "long", "pass", "380 GB/s", ">= 300 GB/s")]
    assert react(passed, True, nccl_reason).action == "resume"


def test_versions_are_judged_across_the_cluster():
    from gpuwarden.checks.remote import compare_versions

    checks = load_checks()
    same = "driver 550.54.15, CUDA 12.4"

    def node(figure):
        return [CheckResult("driver_versions", "quick", "pass", figure, "the same on every node")]

    judged = compare_versions(checks, {"a": node(same), "b": node(same),
                                       "c": node("driver 535.104.05, CUDA 12.2")})
    assert [judged[n][0].verdict for n in "abc"] == ["pass", "pass", "warn"]
    assert judged["c"][0].expected == same
    # the others' stored figures count: c alone now, but a and b said otherwise before
    alone = compare_versions(checks, {"c": node("driver 535.104.05, CUDA 12.2")},
                             {"a": same, "b": same})
    assert alone["c"][0].verdict == "warn"


def test_store_keeps_history_and_drops_old_runs(tmp_path):
    from gpuwarden.checks.store import CheckStore
    from gpuwarden.state.db import StateDB

    now = [1000.0]
    db = StateDB(tmp_path / "state.db")
    try:
        store = CheckStore(db, lambda: now[0], retention_s=100)
        bad = CheckResult("pcie_link", "quick", "fail", "GPU 1: x8 of x16", "x16 gen 5", value=1)
        good = CheckResult("pcie_link", "quick", "pass", "at max link", "x16 gen 5", value=0)
        assert store.record("n1", "quick", "burn-in", [bad]).verdict == "fail"
        now[0] = 1050.0
        store.record("n1", "quick", "on-demand", [good])
        store.record("n2", "quick", "on-demand", [], error="node unreachable")
        assert [r.verdict for r in store.runs("n1")] == ["pass", "fail"]
        assert store.latest("n1")["pcie_link"] == (1050.0, good)
        assert {n: r.verdict for n, r in store.last_runs().items()} == {"n1": "pass",
                                                                        "n2": "error"}
        assert store.run_times() == {"n1": (1050.0, 1050.0), "n2": (None, None)}
        now[0] = 1120.0  # past the retention of the first run
        store.record("n1", "quick", "on-demand", [good])
        assert [r.trigger for r in store.runs("n1")] == ["on-demand", "on-demand"]
    finally:
        db.close()


def test_config_refuses_a_bad_check_override_naming_it(tmp_path):
    from gpuwarden.config import load_config

    path = tmp_path / "gpuwarden.yaml"
    path.write_text("checks:\n  checks:\n    pcie_link: {severity: loud}\n")
    with pytest.raises(GpuwardenError, match=r"gpuwarden.yaml: checks.checks: pcie_link: "
                       r"severity: Input should be 'warn' or 'fail'"):
        load_config(path)
    path.write_text("checks:\n  checks:\n    pcie_lnk: false\n")
    with pytest.raises(GpuwardenError, match="unknown check pcie_lnk; did you mean pcie_link"):
        load_config(path)


# -- NCCL: nccl-tests' output, the pairs that find a bad node, the wrapper's interface -------

def _nccl_output(ranks: int, hosts: int, rows: list[tuple[int, float, float, int]],
                 avg: float) -> str:
    """nccl-tests' all_reduce_perf output as a rank-0 MPI run prints it (2.x format)."""
    lines = [f"# nThread 1 nGpus 1 minBytes {rows[0][0]} maxBytes {rows[-1][0]} step: "
             "2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0",
             "#", "# Using devices"]
    lines += [f"#  Rank {r:2d} Group  0 Pid {7000 + r:6d} on pod-{r * hosts // ranks} device "
              f"{r % (ranks // hosts):2d} [0000:04:00] NVIDIA H200" for r in range(ranks)]
    lines += ["#", "#" + " " * 62 + "out-of-place" + " " * 23 + "in-place",
              "#       size         count      type   redop    root     time   algbw   busbw "
              "#wrong     time   algbw   busbw #wrong",
              "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)"
              "            (us)  (GB/s)  (GB/s)"]
    lines += [f"  {size:>10}  {size // 4:>12}     float     sum      -1   100.0  {out / 2:6.2f}"
              f"  {out:6.2f}  {wrong:5d}    100.0  {inp / 2:6.2f}  {inp:6.2f}      0"
              for size, out, inp, wrong in rows]
    lines += ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {avg:g} ", "#"]
    return "\n".join(lines) + "\n"


def test_nccl_tests_output_gives_the_bandwidth_at_the_largest_size_and_the_ranks():
    from gpuwarden.checks import nccl

    text = _nccl_output(16, 2, [(8, 0.0, 0.0, 0), (1 << 20, 9.68, 9.49, 0),
                                (1 << 30, 297.86, 298.82, 0)], 70.742)
    run = nccl.parse(text)
    assert run == nccl.NcclRun(16, ("pod-0", "pod-1"), 1, pytest.approx(298.34), 0)
    # the average over every size (70.7) is not the figure: the largest message's is
    assert nccl.judge(run, 0, text, ranks=16, threshold=250, where="2 nodes x 8 GPUs") == (
        True, "298.34 GB/s (2 nodes x 8 GPUs)", pytest.approx(298.34))
    assert nccl.judge(run, 0, text, ranks=16, threshold=350, where="w")[0] is False
    assert nccl.judge(run, 0, text, ranks=24, threshold=None, where="3 nodes x 8 GPUs")[1] == \
        "16 of 24 ranks joined (3 nodes x 8 GPUs)"
    wrong = nccl.parse(_nccl_output(8, 1, [(1 << 30, 450.0, 451.0, 3)], 450.5))
    assert wrong is not None and wrong.wrong == 3
    # nccl-tests prints #wrong with %g: past a million it is 2.68435e+08, still read
    many = _nccl_output(8, 1, [(1 << 30, 450.0, 451.0, 3)], 450.5).replace(
        "      3    100.0", "  2.68435e+08    100.0")
    assert "2.68435e+08" in many and nccl.parse(many).wrong == 268435000
    assert nccl.judge(wrong, 0, "", ranks=8, threshold=None, where="w")[:2] == (
        False, "3 wrong values at 450.5 GB/s (w)")


def test_nccl_without_mpi_or_failing_is_told_as_such():
    from gpuwarden.checks import nccl

    # a build without MPI under srun: every task its own one-GPU test, bandwidth 0
    alone = _nccl_output(1, 1, [(1 << 30, 0.0, 0.0, 0)], 0)
    ok, figure, _ = nccl.judge(nccl.parse(alone * 4), 0, alone * 4, ranks=4, threshold=None,
                               where="2 nodes x 2 GPUs")
    assert not ok and figure.startswith("4 separate one-GPU runs, not one 4-rank run")
    assert "MPI=1" in figure
    text = "srun: error: pod-1: task 3: Exited with exit code 1\nNCCL WARN socket timeout"
    assert nccl.parse(text) is None
    assert nccl.judge(None, 1, text, ranks=4, threshold=None, where="w")[:2] == (
        False, "all_reduce_perf failed (exit 1): NCCL WARN socket timeout")


def test_ring_pairs_blame_the_node_whose_pairs_all_fail():
    from gpuwarden.checks import nccl

    nodes = ["n1", "n2", "n3", "n4"]
    pairs = nccl.ring_pairs(nodes)
    assert pairs == [("n1", "n2"), ("n2", "n3"), ("n3", "n4"), ("n4", "n1")]
    assert nccl.ring_pairs(["n1", "n2"]) == []
    bad3 = {p: "n3" not in p for p in pairs}
    assert nccl.blame(nodes, bad3) == ["n3"]
    assert nccl.blame(nodes, dict.fromkeys(pairs, True)) == []
    assert nccl.blame(nodes, dict.fromkeys(pairs, False)) == []  # the network, not a node
    # a pair that could not run (missing from the map) blames nobody by itself
    assert nccl.blame(nodes, {("n1", "n2"): True, ("n2", "n3"): False}) == []


def test_nccl_socket_interface_follows_the_node_address():
    from gpuwarden.checks import nccl

    addrs = {"lo": ["127.0.0.1"], "eth0": ["172.17.0.2"], "ens1": ["10.65.0.2"]}
    runpod = {"NODE_ADDR": "10.65.0.9"}  # (the launching node's, as srun passes it on)
    assert nccl.socket_ifname(runpod, addrs, "10.65.0.2") == "=ens1"
    assert nccl.socket_ifname({}, addrs, "172.17.0.2") == "=eth0"
    # RunPod, and this node's address on no interface here: its documented private one
    assert nccl.socket_ifname(runpod, addrs, "10.65.0.7") == "=ens1"
    assert nccl.socket_ifname({}, addrs, None) is None  # not RunPod: NCCL's own choice
    assert nccl.socket_ifname({}, addrs, "not an address") is None
    assert nccl.socket_ifname({"NCCL_SOCKET_IFNAME": "ib", **runpod}, addrs,
                              "10.65.0.2") == "ib"  # what the user set wins
    # outside Slurm the node's own NODE_ADDR is its address
    assert nccl.node_address({"NODE_ADDR": "10.65.0.2"}) == "10.65.0.2"
    assert "lo" in nccl.interfaces()  # ip(8) read for real


def test_an_nccl_check_override_names_a_bad_mpi_plugin():
    with pytest.raises(GpuwardenError) as err:
        load_checks({"nccl_allreduce": {"mpi": "pmix; reboot"}})
    assert "checks.checks.nccl_allreduce" in str(err.value) and "mpi" in str(err.value)
    assert next(c for c in load_checks({"nccl_allreduce": {"mpi": "pmix"}})
                if c.name == "nccl_allreduce").mpi == "pmix"
