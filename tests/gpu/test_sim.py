from __future__ import annotations

import pytest

from gpuwarden.gpu.sim import (
    MODELS,
    PROFILES,
    THERMAL_LAG_ENV,
    SimSource,
    find_model,
    parse_profiles,
    thermal_lag_s,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def run(profile: str, model: str = "h100", polls: int = 120, step: float = 5.0):
    clock = Clock()
    source = SimSource(2, model, {0: profile, 1: "idle"}, seed=7, clock=clock)
    source.start()
    polls_out = []
    for _ in range(polls):
        clock.t += step
        polls_out.append(source.poll())
    return source, polls_out


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "lost"])
@pytest.mark.parametrize("model", [m.aliases[0] for m in MODELS])
def test_values_stay_in_physical_ranges(profile, model):
    spec = find_model(model)
    _, polls = run(profile, model, polls=60)
    energy = -1.0
    for poll in polls:
        g = poll.gpus[0]
        f = g.fields
        assert g.identity.simulated and g.identity.uuid.startswith("GPU-5111")
        assert 0 <= f["DCGM_FI_DEV_GPU_UTIL"] <= 100
        assert spec.idle_power_w * 0.7 <= f["DCGM_FI_DEV_POWER_USAGE"] <= spec.power_limit_w
        assert 20 <= f["DCGM_FI_DEV_GPU_TEMP"] <= 100
        total = f["DCGM_FI_DEV_FB_USED"] + f["DCGM_FI_DEV_FB_FREE"] + f["DCGM_FI_DEV_FB_RESERVED"]
        assert total == pytest.approx(spec.memory_mib)
        assert f["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] >= energy  # monotonic counter
        energy = f["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
        for name, value in f.items():
            if name.startswith("DCGM_FI_PROF_") and not name.endswith("_BYTES"):
                assert 0.0 <= value <= 1.0, name
        assert (f.get("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL") is not None) == spec.datacenter


def test_utilization_drives_power_temperature_and_clocks():
    _, train = run("train")
    _, idle = run("idle")
    t, i = train[-1].gpus[0].fields, idle[-1].gpus[0].fields
    assert t["DCGM_FI_DEV_GPU_UTIL"] > 80 and i["DCGM_FI_DEV_GPU_UTIL"] == 0
    assert t["DCGM_FI_DEV_POWER_USAGE"] > 4 * i["DCGM_FI_DEV_POWER_USAGE"]
    assert t["DCGM_FI_DEV_GPU_TEMP"] > i["DCGM_FI_DEV_GPU_TEMP"] + 15
    assert t["DCGM_FI_DEV_SM_CLOCK"] > i["DCGM_FI_DEV_SM_CLOCK"]
    assert t["DCGM_FI_DEV_FB_USED"] > 0.7 * t["DCGM_FI_DEV_FB_TOTAL"]
    assert idle[-1].gpus[0].clock_events["gpu_idle"] is True
    energy_train = t["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
    assert energy_train > 3 * i["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]


def test_thermal_throttle_profile_throttles():
    _, polls = run("thermal-throttle")
    g = polls[-1].gpus[0]
    spec = find_model("h100")
    assert g.fields["DCGM_FI_DEV_GPU_TEMP"] >= spec.slowdown_temp_c
    assert g.clock_events["hw_thermal_slowdown"] and g.clock_events["sw_thermal_slowdown"]
    assert g.fields["DCGM_FI_DEV_SM_CLOCK"] < spec.sm_clock_max * 0.7
    assert g.fields["DCGM_FI_DEV_THERMAL_VIOLATION"] > 0
    assert not polls[-1].gpus[1].clock_events["hw_thermal_slowdown"]


def _seconds_to_throttle(source: SimSource, clock: Clock) -> int:
    """An idle GPU starts a thermal-throttle job: seconds (1 s polls) to its slowdown."""
    source.poll()  # settled: idle
    source.set_profiles({0: "thermal-throttle"})
    for second in range(1, 600):
        clock.t += 1
        if source.poll().gpus[0].clock_events["hw_thermal_slowdown"]:
            return second
    raise AssertionError("never throttled")


def test_the_temperature_lags_by_30_s_or_what_the_environment_says(monkeypatch):
    monkeypatch.delenv(THERMAL_LAG_ENV, raising=False)
    clock = Clock()
    assert 45 <= _seconds_to_throttle(SimSource(1, seed=3, clock=clock), clock) <= 90
    monkeypatch.setenv(THERMAL_LAG_ENV, "2")
    clock = Clock()
    assert _seconds_to_throttle(SimSource(1, seed=3, clock=clock), clock) <= 6
    assert thermal_lag_s({THERMAL_LAG_ENV: " 0.5 "}) == 0.5 and thermal_lag_s({}) == 30.0
    for bad in ("0", "-1", "fast", "nan", "inf"):
        with pytest.raises(ValueError, match=THERMAL_LAG_ENV):
            thermal_lag_s({THERMAL_LAG_ENV: bad})
    with pytest.raises(ValueError, match="thermal_lag"):
        SimSource(1, thermal_lag=0)


def test_xid_storm_counts_xids_monotonically():
    _, polls = run("xid-storm")
    counts = [sum(x.count for x in p.gpus[0].xids) for p in polls]
    assert counts == sorted(counts) and counts[-1] >= 30
    kinds = {x.application for x in polls[-1].gpus[0].xids}
    assert kinds == {True, False}  # mostly application faults, some hardware
    assert polls[-1].gpus[0].last_xid in {x.xid for x in polls[-1].gpus[0].xids}
    assert polls[-1].gpus[1].xids == ()


def test_lost_profile_reports_the_gpu_down():
    _, polls = run("lost", polls=2)
    assert not polls[-1].gpus[0].up and polls[-1].gpus[0].fields == {}
    assert polls[-1].gpus[1].up
    assert polls[-1].health.state == "degraded"


def test_profile_switch_follows_within_seconds():
    clock = Clock()
    source = SimSource(1, "a100", {0: "idle"}, seed=1, clock=clock)
    source.poll()
    source.set_profiles({0: "train"})
    for _ in range(3):
        clock.t += 5
        poll = source.poll()
    assert poll.gpus[0].fields["DCGM_FI_DEV_GPU_UTIL"] > 80


def test_profile_parsing():
    assert parse_profiles(None, 2) == {0: "idle", 1: "idle"}
    assert parse_profiles("train", 2) == {0: "train", 1: "train"}
    assert parse_profiles("0=train,3=idle", 4) == {0: "train", 1: "idle", 2: "idle", 3: "idle"}
    with pytest.raises(ValueError, match="unknown profile 'bogus'"):
        parse_profiles("bogus", 2)
    with pytest.raises(ValueError, match="GPU 7 does not exist"):
        parse_profiles("7=train", 2)
    with pytest.raises(ValueError, match="INDEX=PROFILE"):
        parse_profiles("x=train", 2)
    with pytest.raises(ValueError, match="choose one of"):
        find_model("voodoo2")
