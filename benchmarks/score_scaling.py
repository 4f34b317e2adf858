"""Memory and scaling of `clickweight score` as rows grow (duplication 4 by default).

Each size runs the real CLI (`clickweight score --conf conf/local.yaml`) as a child process, as a
user would, while a sampler reads the RSS of every process in its tree every 0.2 s:
  driver Python (the CLI process), driver JVM (its java child), and each PySpark Python worker
  (`pyspark.daemon` and the workers it forks, where the model lives).
Peak RSS must stay flat as rows grow (streaming; nothing collected to the driver), and wall time
should be linear in rows: a least-squares fit wall = start-up + rows * per-row cost is printed.

    .venv/bin/python -m benchmarks.score_scaling                          # 10k, 50k, 100k, 200k rows
    .venv/bin/python -m benchmarks.score_scaling --rows 2000 8000         # a quick look

Writes benchmarks/results/score_scaling.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks import bench_data

ROOT = Path(__file__).resolve().parent.parent


def classify(proc: psutil.Process, root_pid: int) -> str | None:
    try:
        if proc.pid == root_pid:
            return "driver_python"
        cmd = " ".join(proc.cmdline())
        if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
            return "python_worker"
        if proc.name().startswith("java"):
            return "driver_jvm"
    except psutil.Error:
        return None
    return None


class RSSSampler(threading.Thread):
    """Peak RSS per process kind (and the peak sum over all Python workers) of a process tree."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak = {"driver_python": 0, "driver_jvm": 0, "python_worker_max": 0, "python_workers_sum": 0}
        self.max_workers = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            workers = []
            for p in procs:
                kind = classify(p, self.pid)
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                if kind == "python_worker":
                    workers.append(rss)
                elif kind:
                    self.peak[kind] = max(self.peak[kind], rss)
            if workers:
                self.peak["python_worker_max"] = max(self.peak["python_worker_max"], max(workers))
                self.peak["python_workers_sum"] = max(self.peak["python_workers_sum"], sum(workers))
                self.max_workers = max(self.max_workers, len(workers))
            time.sleep(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_case(rows: int, dup: int, work: Path, conf: str, overrides: list[str]) -> dict:
    pairs = bench_data.real_pairs()
    src = bench_data.write_clickstream(bench_data.clickstream(pairs, rows, dup, seed=rows), work / f"in_{rows}")
    out = work / f"out_{rows}"
    cmd = [str(Path(sys.executable).parent / "clickweight"), "score", "--conf", conf, "--input", src,
           "--output", str(out), "--set", f"run_id=scale{rows}", *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(work / f"err_{rows}.log", "wb"))
    sampler = RSSSampler(proc.pid)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop()
    if rc != 0:
        raise SystemExit(f"score failed for {rows} rows (rc={rc}): see {work}/err_{rows}.log")
    summary = json.loads((out / "_summary.json").read_text())
    mib = {k: round(v / 2**20, 1) for k, v in sampler.peak.items()}
    return {"rows": rows, "duplication": dup, "distinct_pairs": rows // dup, "wall_s": round(wall, 2),
            "job_s": summary.get("seconds"), "timings_s": summary.get("timings_s"), "peak_rss_mib": mib,
            "python_workers_seen": sampler.max_workers, "rows_out": summary["rows_out"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[10_000, 50_000, 100_000, 200_000])
    p.add_argument("--dup", type=int, default=4)
    p.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "score_scaling.json"))
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cw-scaling-"))
    cases = []
    try:
        for rows in args.rows:
            case = run_case(rows, args.dup, work, args.conf, args.overrides)
            print(json.dumps(case), flush=True)
            cases.append(case)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    x = np.array([c["rows"] for c in cases], dtype=float)
    y = np.array([c["wall_s"] for c in cases])
    fit = {}
    if len(cases) >= 2:
        slope, intercept = np.polyfit(x, y, 1)
        pred = slope * x + intercept
        ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
        fit = {"per_row_ms": slope * 1e3, "per_distinct_pair_ms": slope * args.dup * 1e3, "startup_s": intercept,
               "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}
    base = cases[0]["peak_rss_mib"]["python_worker_max"]
    report = {"benchmark": "score_scaling", "cores": os.cpu_count(), "conf": args.conf, "overrides": args.overrides,
              "cases": cases, "linear_fit": fit,
              "worker_rss_ratio_largest_vs_smallest": cases[-1]["peak_rss_mib"]["python_worker_max"] / base,
              "command": "python -m benchmarks.score_scaling " + " ".join(argv or sys.argv[1:])}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print("\n| rows | distinct pairs | wall s | rows/s | driver Python MiB | driver JVM MiB | worker max MiB "
          "| workers sum MiB | scoring s | write s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        m, t = c["peak_rss_mib"], c["timings_s"] or {}
        print(f"| {c['rows']} | {c['distinct_pairs']} | {c['wall_s']:.1f} | {c['rows'] / c['wall_s']:.0f} "
              f"| {m['driver_python']} | {m['driver_jvm']} | {m['python_worker_max']} | {m['python_workers_sum']} "
              f"| {t.get('validate_and_score_pairs', float('nan')):.1f} | {t.get('write', float('nan')):.1f} |")
    if fit:
        print(f"\nlinear fit: wall = {fit['startup_s']:.1f} s + rows x {fit['per_row_ms']:.3f} ms "
              f"({fit['per_distinct_pair_ms']:.2f} ms per distinct pair), R^2 = {fit['r2']:.4f}")
    print(f"worker peak RSS, largest / smallest size: {report['worker_rss_ratio_largest_vs_smallest']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
