"""benchmarks/score_fixed_cost.py splits a score run's wall by phase from Spark's event log."""
from __future__ import annotations

import json

import pytest

from benchmarks import score_fixed_cost as fc


def _events() -> list[dict]:
    def job(i, desc, start, end):
        props = {"spark.job.description": desc} if desc else {}
        return [{"Event": "SparkListenerJobStart", "Job ID": i, "Submission Time": start, "Stage Infos": [{}, {}],
                 "Properties": props},
                {"Event": "SparkListenerJobEnd", "Job ID": i, "Completion Time": end}]
    return [{"Event": "SparkListenerApplicationStart", "Timestamp": 10_000},
            *job(0, "clickweight score: count input rows", 11_000, 12_000),
            *job(1, "clickweight score: validate and score pairs", 12_500, 20_000),
            *job(2, "clickweight score: validate and score pairs", 20_000, 21_000),
            *job(3, None, 21_500, 22_000),
            {"Event": "SparkListenerApplicationEnd", "Timestamp": 25_000}]


def test_breakdown_attributes_driver_time_to_the_phase_of_the_job_it_precedes():
    b = fc.breakdown(_events(), launched_ms=4_000, exited_ms=27_000)
    assert b["launch_to_spark_s"] == 6.0
    assert b["phases"]["count input rows"] == {"jobs": 1, "spark_s": 1.0, "driver_s": 1.0, "total_s": 2.0}
    assert b["phases"]["validate and score pairs"] == {"jobs": 2, "spark_s": 8.5, "driver_s": 0.5, "total_s": 9.0}
    assert b["phases"][fc.NO_PHASE]["driver_s"] == 0.5
    assert b["last_job_to_spark_end_s"] == 3.0 and b["spark_end_to_exit_s"] == 2.0
    parts = (b["launch_to_spark_s"] + sum(p["total_s"] for p in b["phases"].values())
             + b["last_job_to_spark_end_s"] + b["spark_end_to_exit_s"])
    assert parts == pytest.approx(23.0)   # the wall, launch to exit, with nothing counted twice


def test_overlapping_jobs_are_counted_once():
    jobs = [{"phase": "write", "start": 1_000, "end": 5_000}, {"phase": "write", "start": 2_000, "end": 3_000},
            {"phase": "verify", "start": 4_000, "end": 6_000}]
    phases, last = fc.phase_times(jobs, app_start=0)
    assert phases["write"] == {"jobs": 2, "spark_s": 4.0, "driver_s": 1.0, "total_s": 5.0}
    assert phases["verify"] == {"jobs": 1, "spark_s": 1.0, "driver_s": 0.0, "total_s": 1.0}
    assert last == 6_000


def test_the_event_log_reader_refuses_a_folder_without_exactly_one_finished_log(tmp_path):
    (tmp_path / "local-1.inprogress").write_text("")
    with pytest.raises(RuntimeError, match="one finished event log"):
        fc.read_event_log(tmp_path)
    (tmp_path / "local-2").write_text("\n".join(json.dumps(e) for e in _events()) + "\n")
    assert len(fc.read_event_log(tmp_path)) == len(_events())


def test_the_event_log_reader_reads_spark_4s_rolling_folder_in_order(tmp_path):
    events = _events()
    folder = tmp_path / "eventlog_v2_local-1"
    folder.mkdir()
    (folder / "appstatus_local-1").write_text("")
    for n, part in ((10, events[5:]), (2, events[:5])):   # numeric order, not the names' text order
        (folder / f"events_{n}_local-1").write_text("\n".join(json.dumps(e) for e in part) + "\n")
    assert fc.read_event_log(tmp_path) == events


def test_summary_reports_medians_and_the_gap_to_the_floor():
    runs = [fc.breakdown(_events(), 4_000, 27_000 + k * 1000) | {"wall_s": 23.0 + k} for k in range(3)]
    s = fc.summarise([10.0, 12.0, 11.0], runs)
    assert s["c_wall_s"] == {"median": 24.0, "min": 23.0, "max": 25.0}
    assert s["above_floor_s"] == 13.0
    assert s["rows"]["Spark end to exit (report, teardown)"]["median"] == 3.0
    assert s["rows"]["validate and score pairs: Spark jobs"]["jobs"] == 2
    s = fc.summarise([10.0, 12.0, 11.0], runs, [15.0, 16.0, 14.0])
    assert s["scored_floor_wall_s"]["median"] == 15.0 and s["above_scored_floor_s"] == 9.0
    assert "(c) above the floor with the scoring: 9.00 s" in fc.markdown(s, 3)
