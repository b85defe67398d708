"""Per-job reports on synthetic series: GPU-hours, $, grades and notes (Jobstats'
thresholds and conditions), the stored summaries and the efficiency report over them, and
the API routes' problems and CSV.  The real-cluster test is tests/slurm/test_job_reports.py."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from gpuwarden.config import GradeThresholds, ReportsConfig, ServeConfig
from gpuwarden.services import efficiency
from gpuwarden.services.context import ControlPlane
from gpuwarden.services.jobreport import GpuSeries, Pricing, compose, query_step
from gpuwarden.services.live import GpuPrice
from gpuwarden.services.models import JobReport, SlurmJobView
from gpuwarden.state.db import StateDB
from gpuwarden.state.jobreports import JobReportStore

H100 = "NVIDIA H100 80GB HBM3"
H100_MIB = 81559.0
START = 1_750_000_000.0
CONFIG = ReportsConfig()  # Jobstats' defaults: 15/25 % utilization, 10/60 % of the time limit


def job(hours: float = 2.0, gpus: int = 4, state: str = "COMPLETED", limit_h: float = 3.0,
        **kw) -> SlurmJobView:
    return SlurmJobView(job_id=kw.pop("job_id", 7), name="train", user="alice",
                        partition="gpu", account="lab", state=state, finished=True,
                        start_time=START, end_time=START + hours * 3600,
                        elapsed_s=int(hours * 3600), alloc_gpus=gpus, nodes=["n1"],
                        time_limit_s=int(limit_h * 3600), **kw)


def series(index: int, util: float | list[float], used_mib: float, hours: float = 2.0,
           node: str = "n1") -> GpuSeries:
    step, n = query_step(hours * 3600, 15)
    values = util if isinstance(util, list) else [util] * n
    pts = [(START + step * (k + 1), values[k % len(values)]) for k in range(n)]
    mem = [(t, used_mib) for t, _ in pts]
    return GpuSeries(node, index, pts, mem, mem, H100_MIB)


def prices(rate: float = 3.0, offers: tuple[GpuPrice, ...] = ()) -> Pricing:
    return Pricing({("n1", i): rate for i in range(8)}, {("n1", i): H100 for i in range(8)},
                   rate, offers)


def report(j: SlurmJobView, gpus: list[GpuSeries], pricing: Pricing | None = None,
           config: ReportsConfig = CONFIG) -> JobReport:
    step, _ = query_step(j.elapsed_s or 0, 15)
    return compose(j, gpus, pricing or prices(), config, idle_threshold=5.0, step=step,
                   now=START + 10**6)


def kinds(r: JobReport) -> list[str]:
    return [n.kind for n in r.notes]


def test_gpu_hours_cost_and_waste_come_from_slurms_times_and_the_cost_model():
    r = report(job(hours=2, gpus=4), [series(0, 90, 60_000), series(1, 92, 60_000),
                                      series(2, 2, 40_000), series(3, 88, 60_000)])
    assert r.gpu_hours == pytest.approx(4 * 2.0)  # GPUs x elapsed, not points x step
    assert r.cost_per_hour == pytest.approx(4 * 3.0) and r.cost == pytest.approx(24.0)
    assert r.wasted == pytest.approx(6.0)  # GPU 2's two hours under 5 %
    assert r.mean_utilization == pytest.approx((90 + 92 + 2 + 88) / 4)
    assert r.coverage == pytest.approx(1.0) and r.step == 30.0
    assert [g.idle_percent for g in r.per_gpu] == [0.0, 0.0, 100.0, 0.0]
    assert r.per_node[0].cost == pytest.approx(24.0) and r.per_node[0].gpus == 4
    assert r.time_efficiency == pytest.approx(66.7, abs=0.1)
    # half of a GPU's steps under the threshold: half its $ wasted
    half = report(job(hours=2, gpus=1), [series(0, [0.0, 80.0], 60_000)])
    assert half.wasted == pytest.approx(3.0) and half.per_gpu[0].idle_percent == 50.0
    # a GPU Slurm gave but no sample shows is still paid for, at its node's rate
    unseen = report(job(hours=1, gpus=2), [series(0, 90, 60_000, hours=1)])
    assert unseen.cost == pytest.approx(6.0) and unseen.coverage == pytest.approx(0.5)


@pytest.mark.parametrize(("util", "grade"), [(0.5, "poor"), (14.9, "poor"), (15, "fair"),
                                              (24.9, "fair"), (25, "good"), (97, "good")])
def test_utilization_grades_use_jobstats_thresholds(util, grade):
    r = report(job(gpus=1), [series(0, util, 60_000)])
    g = next(g for g in r.grades if g.metric == "gpu_utilization")
    assert (g.grade, g.poor_below, g.fair_below) == (grade, 15.0, 25.0)
    low = [n for n in r.notes if n.kind == "low_utilization"]
    assert [n.severity for n in low] == {"poor": ["warning"], "fair": ["info"],
                                          "good": []}[grade]


def test_grades_are_configurable():
    strict = ReportsConfig(grades=GradeThresholds(gpu_utilization_poor=60,
                                                  gpu_utilization_fair=90,
                                                  time_efficiency_poor=50,
                                                  time_efficiency_fair=80))
    r = report(job(hours=2, limit_h=3), [series(0, 70, 60_000)] * 1, config=strict)
    grades = {g.metric: g.grade for g in r.grades}
    assert grades == {"gpu_utilization": "fair", "time_efficiency": "fair"}
    with pytest.raises(ValueError, match="gpu_utilization_poor must not be above"):
        GradeThresholds(gpu_utilization_poor=30, gpu_utilization_fair=20)


def test_unused_and_idle_gpus_of_a_multi_gpu_job_are_named_with_their_cost():
    r = report(job(hours=2, gpus=4), [series(0, 95, 70_000), series(1, 0, 0),
                                      series(2, 3, 500), series(3, 91, 70_000)])
    unused = next(n for n in r.notes if n.kind == "unused_gpus")
    assert unused.severity == "warning" and "did not use 1 of its 4 GPUs (n1/1" in unused.text
    assert "$6.00" in unused.text and unused.saving_per_hour == pytest.approx(3.0)
    idle = next(n for n in r.notes if n.kind == "idle_gpus")
    assert "1 of its 4 GPUs was idle" in idle.text and "n1/2" in idle.text
    assert "n1/1" not in idle.text  # never used is said once, in its own note
    assert [g.never_used for g in r.per_gpu] == [False, True, False, False]
    single = report(job(gpus=1), [series(0, 0, 0)])
    assert "did not use its GPU" in single.notes[0].text and "GPU-enabled" in single.notes[0].text
    assert "low_utilization" not in kinds(single)  # the unused note says it all


def test_short_jobs_get_no_notes_about_unused_gpus_or_their_time_limit():
    quick = job(hours=0.05, gpus=2, limit_h=24)  # 3 minutes: under min_runtime (5 min)
    r = report(quick, [series(0, 0, 0, hours=0.05), series(1, 8, 0, hours=0.05)])
    assert not {"unused_gpus", "idle_gpus", "time_limit"} & set(kinds(r))
    g = next(g for g in r.grades if g.metric == "gpu_utilization")
    assert g.grade == "poor" and "low_utilization" in kinds(r)  # red even when short


def test_memory_headroom_names_a_cheaper_gpu_that_fits_with_the_saving():
    l4 = GpuPrice("NVIDIA L4", 23034.0, 0.8)
    small = [series(0, 80, 9_000), series(1, 85, 8_000)]
    r = report(job(gpus=2), small, prices(3.0, (l4, GpuPrice(H100, H100_MIB, 3.0))))
    note = next(n for n in r.notes if n.kind == "memory_headroom")
    assert "at most 8.8 GiB of their 79.6 GiB" in note.text and "NVIDIA L4" in note.text
    assert "$2.20/hr less per GPU" in note.text
    assert note.saving_per_hour == pytest.approx(2 * 2.2)
    # the peak must fit the other GPU with room to spare (x1.2): 20 GiB does not fit an L4
    tight = report(job(gpus=1), [series(0, 80, 20_000)], prices(3.0, (l4,)))
    note = next(n for n in tight.notes if n.kind == "memory_headroom")
    assert "L4" not in note.text and note.saving_per_hour is None
    assert "prices only this fleet's GPUs" in note.text
    full = report(job(gpus=1), [series(0, 80, 60_000)], prices(3.0, (l4,)))
    assert "memory_headroom" not in kinds(full)


def test_time_limit_far_above_the_run_time_and_timeouts():
    r = report(job(hours=1, limit_h=24), [series(0, 90, 60_000, hours=1)])
    note = next(n for n in r.notes if n.kind == "time_limit")
    assert note.severity == "warning" and "only 4 % of its 24h00m time limit" in note.text
    assert next(g for g in r.grades if g.metric == "time_efficiency").grade == "poor"
    failed = report(job(hours=1, limit_h=24, state="FAILED"), [series(0, 90, 60_000, hours=1)])
    assert "time_limit" not in kinds(failed)  # Jobstats says it of completed jobs only
    timeout = report(job(hours=1, limit_h=1, state="TIMEOUT"),
                     [series(0, 90, 60_000, hours=1)])
    assert "timeout" in kinds(timeout) and timeout.time_efficiency == 100.0
    running = report(job(hours=1).model_copy(update={"finished": False, "state": "RUNNING",
                                                     "end_time": None, "elapsed_s": None}),
                     [series(0, 90, 60_000, hours=1)])
    assert running.end_time is None and running.time_efficiency is None
    assert next(g for g in running.grades if g.metric == "time_efficiency").grade == "unknown"


def test_no_samples_says_so_and_still_counts_slurms_gpu_hours():
    r = report(job(hours=2, gpus=2), [])
    assert kinds(r) == ["no_data"] and r.gpu_hours == 4.0 and r.cost == pytest.approx(12.0)
    assert r.mean_utilization is None and r.wasted == 0.0


def test_query_step_fits_the_jobs_length():
    assert query_step(86400, 15) == (360.0, 240)  # a day: 6-minute steps, whole minutes
    assert query_step(10, 2.0) == (2.0, 5)  # never under the scrape interval
    assert query_step(0, 15) == (15, 1)
    step, n = query_step(5 * 3600 + 7, 15)
    assert step == 120 and step * n >= 5 * 3600 + 7


# -- stored summaries and the efficiency report --------------------------------------------


@pytest.fixture
def cp(tmp_path):
    return ControlPlane(config=ServeConfig(cluster="eff"), db=StateDB(tmp_path / "state.db"),
                        store=None, clock=lambda: START + 7 * 86400)  # type: ignore[arg-type]


def store(cp: ControlPlane, r: JobReport) -> bool:
    data = r.model_dump(mode="json")
    figures = {k: data[k] for k in ("user", "account", "partition", "state", "start_time",
                                    "end_time", "elapsed_s", "gpus", "gpu_hours",
                                    "mean_utilization", "cost", "wasted")}
    s = JobReportStore(cp.db)
    with s.write() as conn:
        return s.put(conn, cp.config.cluster, r.job_id, figures, data, START)


def test_efficiency_ranks_users_by_gpu_hours_from_the_stored_summaries(cp):
    jobs = [("alice", 8, 2.0, 90), ("bob", 1, 1.0, 10), ("carol", 4, 2.0, 50),
            ("alice", 2, 1.0, 10), ("dave", 2, 1.0, None)]
    for i, (user, gpus, hours, util) in enumerate(jobs, start=1):
        j = job(job_id=i, hours=hours, gpus=gpus).model_copy(update={"user": user})
        gs = [] if util is None else [series(k, util, 60_000, hours=hours) for k in range(gpus)]
        assert store(cp, report(j, gs))
    assert not store(cp, report(job(job_id=1), []))  # written once: the first stays
    e = efficiency.efficiency(cp, since="30d", by="user")
    assert [r.key for r in e.rows] == ["alice", "carol", "dave", "bob"]
    alice = e.rows[0]
    assert alice.jobs == 2 and alice.gpu_hours == pytest.approx(8 * 2 + 2 * 1)
    assert alice.mean_utilization == pytest.approx((16 * 90 + 2 * 10) / 18, abs=0.01)
    assert alice.rank_text == "1st most GPU-hours of 4, efficiency 81 %"
    assert e.rows[2].rank_text == "3rd most GPU-hours of 4, efficiency unknown"
    assert alice.cost == pytest.approx(18 * 3.0) and e.jobs == 5
    assert e.gpu_hours == pytest.approx(18 + 1 + 8 + 2)
    text = efficiency.efficiency_csv(e)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["user"] == "alice" and rows[0]["rank"] == "1" and len(rows) == 4
    by_partition = efficiency.efficiency(cp, since="30d", by="partition")
    assert [r.key for r in by_partition.rows] == ["gpu"] and by_partition.rows[0].jobs == 5
    # the window: none of them ended in the last 24 hours
    assert efficiency.efficiency(cp, since="24h").rows == []
    with pytest.raises(ValueError, match="since: '7x' is not a duration"):
        efficiency.efficiency(cp, since="7x")
    assert efficiency.parse_since("2w") == 14 * 86400


def test_retention_forgets_old_summaries(cp):
    store(cp, report(job(job_id=1), []))
    store(cp, report(job(job_id=2).model_copy(update={"end_time": START + 5 * 86400}), []))
    assert JobReportStore(cp.db).prune(START + 86400) == 1
    assert JobReportStore(cp.db).stored_ids("eff", 0) == {2}


def test_report_route_answers_from_the_store_and_problems_name_the_job(cp):
    from gpuwarden.api.app import create_app

    store(cp, report(job(job_id=42, gpus=2), [series(0, 90, 60_000), series(1, 5, 500)]))
    token = cp.tokens.create("viewer", "v")
    with TestClient(create_app(cp, run_scraper=False),
                    headers={"Authorization": f"Bearer {token}"}) as client:
        got = client.get("/api/v1/slurm/jobs/42/report")
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["source"] == "stored" and body["stored_at"] == START
        assert body["gpu_hours"] == 4.0 and body["per_gpu"][1]["idle_percent"] == 0.0
        missing = client.get("/api/v1/slurm/jobs/43/report")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert "no stored report" in missing.json()["detail"] or "Slurm" in missing.json()[
            "detail"]
        e = client.get("/api/v1/reports/efficiency", params={"since": "30d"})
        assert e.status_code == 200 and e.json()["rows"][0]["key"] == "alice"
        as_csv = client.get("/api/v1/reports/efficiency?since=30d&format=csv")
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.text.splitlines()[0] == "rank,user,jobs,gpu_hours,mean_utilization," \
                                              "cost,wasted"
        accepted = client.get("/api/v1/reports/efficiency?since=30d&by=account",
                              headers={"Accept": "text/csv"})
        assert accepted.text.splitlines()[1].startswith("1,lab,1,")
        bad = client.get("/api/v1/reports/efficiency?since=soon")
        assert bad.status_code == 422 and bad.json()["detail"].startswith("since:")


def test_a_job_that_ended_before_the_reports_watched_gets_a_summary_and_no_message(tmp_path):
    """A first start summarises the jobs already in Slurm's accounting window without
    messaging their owners (a flood of 20 a minute, the outbox's rate, for old jobs); a job
    that ends once it watches gets its message.  "Watching since": the oldest summary kept."""
    from gpuwarden.services.jobreport import JobReports

    queued: list[str] = []

    class Outbox:
        def queue(self, conn, title, body, severity, now, users, admins) -> int:
            queued.append(title)
            return 1

    cp = ControlPlane(config=ServeConfig(cluster="eff", reports={"end_of_job_message": True}),
                      db=StateDB(tmp_path / "state.db"), store=None,  # type: ignore[arg-type]
                      clock=lambda: START + 7 * 86400)
    reports = JobReports(cp, Outbox())  # type: ignore[arg-type]
    assert JobReportStore(cp.db).first_stored("eff") is None
    assert reports._save(report(job(job_id=1), []), START, before=True)
    assert reports._save(report(job(job_id=2), []), START + 60)
    assert len(queued) == 1 and "job 2" in queued[0], queued
    s = JobReportStore(cp.db)
    assert s.message("eff", 1) == "not sent: it ended before gpuwarden watched the cluster"
    assert s.message("eff", 2) == "queued" and reports.messages == 1
    assert s.first_stored("eff") == START
