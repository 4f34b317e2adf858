"""Where `clickweight score`'s fixed cost goes, by phase and by Spark job, against the Spark floor.

On one small clickstream (10k rows, each pair in 3 rows, as docs/performance.md's fixed-cost figures),
interleaved and repeated (f1, f2, f3, c, f1, ...; --repeat, default 3), each a whole process timed
from launch to exit on an otherwise idle machine:
  (f1) the Spark floor of benchmarks/score_peers.py: read, distinct pairs through a pandas UDF that loads
       the scorer and returns 0, join back, write; what any Spark job scoring pairs pays here;
  (f2) the same with the scoring in: the distinct pairs spread over the cores and through the scorer's
       forward pass. (f1) leaves out work that grows with the pairs (3,333 here); (c) above (f2) is the
       fixed cost of everything the job adds to scoring them;
  (f3) (f2) with the guarantees the issue names and nothing else: bad rows quarantined with a reason, a
       pair table, the three tables read back and reconciled with the input's rows, an atomic commit.
       (f3) above (f1) is the least any job that keeps those guarantees pays above the Spark floor here;
  (c)  `clickweight score`, with Spark's event log on.
From each (c) run's event log: the time from launch to the Spark application's start (interpreter,
imports, config, JVM); every Spark job with its phase (the description the score job gives its jobs,
udfs/job_phase.py) and duration; the driver's time before each job (planning, driver-side maths such as
the calibration's Newton steps and the propensity EM), counted in the phase of the job it precedes; the
time from the last job to the application's end (commit, summary) and from there to exit (report,
teardown). Figures are medians over the repetitions, with their min and max.

    .venv/bin/python -m benchmarks.score_fixed_cost                       # 10k rows, dup 3, 3 repetitions
    .venv/bin/python -m benchmarks.score_fixed_cost --rows 2000 --repeat 1 --json /tmp/f.json   # a look

Writes benchmarks/results/score_fixed_cost.json and prints the tables docs/performance.md quotes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_data
from benchmarks.score_peers import run_peer
from udfs.job_phase import PREFIX

ROOT = Path(__file__).resolve().parent.parent
NO_PHASE = "(no phase)"


def event_log_overrides(folder: Path) -> list[str]:
    return ["spark.conf.spark.eventLog.enabled=true", f"spark.conf.spark.eventLog.dir=file://{folder}",
            "spark.conf.spark.eventLog.compress=false"]


def read_event_log(folder: Path) -> list[dict[str, Any]]:
    """The events of the one application logged under `folder` (one JSON object a line): a single file,
    or Spark 4's rolling layout, a folder `eventlog_v2_<app>` of `events_<n>_<app>` files."""
    logs = [p for p in folder.iterdir() if not p.name.endswith(".inprogress")]
    if len(logs) != 1:
        raise RuntimeError(f"expected one finished event log in {folder}, found {[p.name for p in folder.iterdir()]}")
    files = ([logs[0]] if logs[0].is_file() else
             sorted(logs[0].glob("events_*"), key=lambda p: int(p.name.split("_")[1])))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def breakdown(events: list[dict[str, Any]], launched_ms: float, exited_ms: float) -> dict[str, Any]:
    """A (c) run's wall split into: launch to application start, per phase (Spark job time and the
    driver's time before each job), last job to application end, application end to exit."""
    app_start = next(e["Timestamp"] for e in events if e["Event"] == "SparkListenerApplicationStart")
    app_end = next(e["Timestamp"] for e in events if e["Event"] == "SparkListenerApplicationEnd")
    ends = {e["Job ID"]: e["Completion Time"] for e in events if e["Event"] == "SparkListenerJobEnd"}
    jobs = []
    for e in events:
        if e["Event"] == "SparkListenerJobStart":
            desc = (e.get("Properties") or {}).get("spark.job.description") or ""
            jobs.append({"id": e["Job ID"], "phase": desc.removeprefix(PREFIX) if desc.startswith(PREFIX) else NO_PHASE,
                         "start": e["Submission Time"], "end": ends[e["Job ID"]],
                         "stages": len(e.get("Stage Infos", []))})
    jobs.sort(key=lambda j: j["start"])
    phases, mark = phase_times(jobs, app_start)
    return {"launch_to_spark_s": (app_start - launched_ms) / 1e3, "app_start_ms": app_start,
            "phases": phases,
            "last_job_to_spark_end_s": (app_end - mark) / 1e3,
            "spark_end_to_exit_s": (exited_ms - app_end) / 1e3,
            "jobs": [{**j, "seconds": (j["end"] - j["start"]) / 1e3} for j in jobs]}


def phase_times(jobs: list[dict[str, Any]], app_start: float) -> tuple[dict[str, dict[str, float]], float]:
    """Per phase: its jobs, the time some job of it was running (the union of their intervals: jobs can
    overlap, e.g. a broadcast beside its query), and the driver's time with no job running before each
    of its jobs; and the last job's end. Every millisecond of the application is counted once."""
    phases: dict[str, dict[str, float]] = {}
    mark = app_start
    for j in sorted(jobs, key=lambda j: j["start"]):
        p = phases.setdefault(j["phase"], {"jobs": 0, "spark_s": 0.0, "driver_s": 0.0})
        p["jobs"] += 1
        p["driver_s"] += max(0.0, j["start"] - mark) / 1e3
        p["spark_s"] += max(0.0, j["end"] - max(j["start"], mark)) / 1e3
        mark = max(mark, j["end"])
    for p in phases.values():
        p["total_s"] = p["spark_s"] + p["driver_s"]
    return phases, mark


def timed_c(src: str, out: Path, logs: Path) -> dict[str, Any]:
    logs.mkdir(parents=True)
    launched = time.time() * 1e3
    result = run_peer("c", src, str(out), "auto", tuple(event_log_overrides(logs)))
    exited = launched + result["wall_s"] * 1e3
    return {"wall_s": result["wall_s"], "timings_s": result["timings_s"],
            **breakdown(read_event_log(logs), launched, exited)}


def median_spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def summarise(floors: list[float], runs: list[dict[str, Any]], scored_floors: list[float] | None = None,
              guarantee_floors: list[float] | None = None) -> dict[str, Any]:
    order = [p for r in runs for p in r["phases"]]
    names = list(dict.fromkeys(order))
    rows: dict[str, dict[str, Any]] = {"launch to Spark start (interpreter, imports, JVM)":
                                       median_spread([r["launch_to_spark_s"] for r in runs])}
    for name in names:
        for part in ("spark_s", "driver_s"):
            rows[f"{name}: {'Spark jobs' if part == 'spark_s' else 'driver before its jobs'}"] = {
                **median_spread([r["phases"].get(name, {}).get(part, 0.0) for r in runs]),
                "jobs": max(r["phases"].get(name, {}).get("jobs", 0) for r in runs)}
    rows["last job to Spark end (commit, summary)"] = median_spread([r["last_job_to_spark_end_s"] for r in runs])
    rows["Spark end to exit (report, teardown)"] = median_spread([r["spark_end_to_exit_s"] for r in runs])
    walls = [r["wall_s"] for r in runs]
    out = {"floor_wall_s": median_spread(floors), "c_wall_s": median_spread(walls),
           "above_floor_s": round(statistics.median(walls) - statistics.median(floors), 2), "rows": rows}
    if scored_floors:
        out["scored_floor_wall_s"] = median_spread(scored_floors)
        out["above_scored_floor_s"] = round(statistics.median(walls) - statistics.median(scored_floors), 2)
    if guarantee_floors:
        out["guarantees_floor_wall_s"] = median_spread(guarantee_floors)
        out["above_guarantees_floor_s"] = round(statistics.median(walls) - statistics.median(guarantee_floors), 2)
        out["guarantees_floor_above_floor_s"] = round(statistics.median(guarantee_floors)
                                                      - statistics.median(floors), 2)
    return out


def markdown(summary: dict[str, Any], repeat: int) -> str:
    lines = [f"| part of (c)'s wall (median of {repeat}) | seconds | min | max | Spark jobs |", "|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        lines.append(f"| {name} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | {r.get('jobs', '')} |")
    c, f = summary["c_wall_s"], summary["floor_wall_s"]
    lines.append(f"| **(c) whole process** | **{c['median']:.2f}** | {c['min']:.2f} | {c['max']:.2f} | |")
    lines.append(f"| (f1) Spark floor | {f['median']:.2f} | {f['min']:.2f} | {f['max']:.2f} | |")
    if "scored_floor_wall_s" in summary:
        g = summary["scored_floor_wall_s"]
        lines.append(f"| (f2) Spark floor with the scoring | {g['median']:.2f} | {g['min']:.2f} | {g['max']:.2f} | |")
    if "guarantees_floor_wall_s" in summary:
        g = summary["guarantees_floor_wall_s"]
        lines.append(f"| (f3) guarantees floor | {g['median']:.2f} | {g['min']:.2f} | {g['max']:.2f} | |")
    lines.append(f"\n(c) above the floor: {summary['above_floor_s']:.2f} s (medians)")
    if "above_scored_floor_s" in summary:
        lines.append(f"(c) above the floor with the scoring: {summary['above_scored_floor_s']:.2f} s (medians)")
    if "guarantees_floor_wall_s" in summary:
        lines.append(f"(f3) above the floor: {summary['guarantees_floor_above_floor_s']:.2f} s; (c) above (f3): "
                     f"{summary['above_guarantees_floor_s']:.2f} s (medians)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--dup", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "score_fixed_cost.json"))
    p.add_argument("--summarise-only", action="store_true",
                   help="run nothing: recompute the phases and the table from --json's recorded jobs")
    args = p.parse_args(argv)
    if args.summarise_only:
        report = json.loads(Path(args.json).read_text())
        for run in report["runs"]:
            # (a file written before app_start_ms was kept: the first job's driver gap is measured from it)
            start = run.get("app_start_ms") or (run["jobs"][0]["start"]
                                                - run["phases"][run["jobs"][0]["phase"]]["driver_s"] * 1e3)
            run["app_start_ms"] = start
            run["phases"], mark = phase_times(run["jobs"], start)
        report["summary"] = summarise(report["floors_s"], report["runs"], report.get("scored_floors_s"),
                                      report.get("guarantee_floors_s"))
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(markdown(report["summary"], report["repeat"]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="cw-fixed-"))
    try:
        frame = bench_data.clickstream(bench_data.real_pairs(), args.rows, args.dup, seed=args.rows + args.dup)
        src = bench_data.write_clickstream(frame, work / "in")
        floors, scored_floors, guarantee_floors, runs = [], [], [], []
        for k in range(args.repeat):   # interleaved: a slow minute of the machine hits all alike
            floors.append(run_peer("f1", src, str(work / f"f1_{k}"), "auto")["wall_s"])
            scored_floors.append(run_peer("f2", src, str(work / f"f2_{k}"), "auto")["wall_s"])
            guarantee_floors.append(run_peer("f3", src, str(work / f"f3_{k}"), "auto")["wall_s"])
            runs.append(timed_c(src, work / f"c_{k}", work / f"events_{k}"))
            print(f"repetition {k}: (f1) {floors[-1]:.2f} s, (f2) {scored_floors[-1]:.2f} s, "
                  f"(f3) {guarantee_floors[-1]:.2f} s, "
                  f"(c) {runs[-1]['wall_s']:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(floors, runs, scored_floors, guarantee_floors)
    report = {"benchmark": "score_fixed_cost", "cores": os.cpu_count(), "rows": args.rows, "dup": args.dup,
              "distinct_pairs": int(frame[["query", "title"]].drop_duplicates().shape[0]),
              "repeat": args.repeat, "floors_s": floors, "scored_floors_s": scored_floors,
              "guarantee_floors_s": guarantee_floors, "runs": runs,
              "summary": summary,
              "command": "python -m benchmarks.score_fixed_cost " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(markdown(summary, args.repeat))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
