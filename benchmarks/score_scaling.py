"""Memory and scaling of `clickweight score` as rows grow; with `--source big`, the issue's scale benchmark.

Each size runs the real CLI (`clickweight score --conf conf/local.yaml`) as a child process, as a
user would, while a sampler reads the RSS of every process in its tree every 0.2 s:
  driver Python (the CLI process), driver JVM (its java child; in local mode also the executor's JVM),
  and each PySpark Python worker (`pyspark.daemon` and the workers it forks, where the model lives).
Peak RSS must stay flat as rows grow (streaming; nothing collected to the driver), and wall time
should be linear in the work: wall = fixed + distinct pairs * per-pair cost + rows * per-row cost.

Inputs (--source):
  bench (the default): benchmarks/bench_data.py's graded pairs at a fixed duplication (--dup).
  big: benchmarks/big_clickstream.py (Zipf query head, ~13 impressions per pair), one data set per
       size from --seed; distinct pairs are what the score job counted (`pairs.pairs` of _summary.json).

Per size it records the wall time with the job's own phase timings (`timings_s`), rows/s and distinct
pairs/s, peak RSS per process kind, bytes on disk per output row of the row table (event_date=*/
data files) and of the pair table (`_pairs/`; also per pair), and the scorer precision (requested, and
what `auto` resolves to). Fits: wall = fixed + a * pairs + b * rows by least squares with >= 3 sizes
(pairs and rows grow almost together in these inputs, so read a and b with the reported condition
number), and the rows-only line wall = fixed + rows * b always (with 2 sizes the only fit). For the
largest size: measured wall / the rows-only line through the smaller sizes (the issue's target: 10M
within 15 % of the line from 1M and 3M), and peak RSS largest / smallest (target <= 1.2x).

Precision: the issue's runs are bf16. `scorer.precision: auto` (the default) resolves to bf16 on CUDA
and on CPUs with avx512_bf16 or AMX (udfs/scoring/device.py resolve_precision), so on such a machine
no override is needed and the JSON records `precision_resolved: bf16`; elsewhere add
`--set scorer.precision=bf16` (emulated bf16, slower than fp32 there).

    .venv/bin/python -m benchmarks.score_scaling                          # bench: 10k, 50k, 100k, 200k rows
    .venv/bin/python -m benchmarks.score_scaling --rows 2000 8000         # a quick look
    .venv/bin/python -m benchmarks.score_scaling --source big             # 1M, 3M, 10M rows (hours on CPU)
    .venv/bin/python -m benchmarks.score_scaling --source big --rows 5000 10000 20000 --json /tmp/s.json

Writes benchmarks/results/score_scaling.json (bench) or benchmarks/results/score_scale.json (big); each
size's input and output are deleted once measured unless --keep.
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
from typing import Any

import numpy as np
import psutil

from benchmarks import bench_data

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROWS = {"bench": [10_000, 50_000, 100_000, 200_000], "big": [1_000_000, 3_000_000, 10_000_000]}
DEFAULT_JSON = {"bench": ROOT / "benchmarks" / "results" / "score_scaling.json",
                "big": ROOT / "benchmarks" / "results" / "score_scale.json"}
RSS_KINDS = ("driver_python", "driver_jvm", "python_worker_max", "python_workers_sum")
RSS_TARGET = 1.2        # peak RSS, largest size / smallest size
WALL_TARGET = 0.15      # largest size's wall within 15 % of the line through the smaller sizes


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


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
def bench_input(rows: int, dup: int, work: Path) -> tuple[str, dict[str, Any]]:
    """bench_data's graded pairs at duplication `dup` (seeded by the size, as before)."""
    pairs = bench_data.real_pairs()
    src = bench_data.write_clickstream(bench_data.clickstream(pairs, rows, dup, seed=rows), work / f"in_{rows}")
    return src, {"duplication": dup, "nominal_pairs": rows // dup}


def big_input(rows: int, seed: int, work: Path) -> tuple[str, dict[str, Any]]:
    """benchmarks/big_clickstream at `rows` rows; the clickstream folder and what the generator realised."""
    from benchmarks.big_clickstream import generate

    folder = work / f"in_{rows}"
    s = generate(str(folder), rows=rows, seed=seed, verbose=False)
    return str(folder / "clickstream"), {
        "seed": seed, "input_distinct_pairs": s["distinct_pairs"], "input_distinct_queries": s["distinct_queries"],
        "impressions_per_pair": s["impressions_per_pair"], "input_s": s["seconds"]}


# ----------------------------------------------------------------------------------------------
# One size
# ----------------------------------------------------------------------------------------------
def _data_bytes(folder: Path) -> int:
    """Bytes of the data files under `folder`: names starting with '_' or '.' (markers, checksums) skipped."""
    return sum(f.stat().st_size for f in folder.rglob("*")
               if f.is_file() and not f.name.startswith(("_", ".")))


def disk_bytes(out: Path) -> dict[str, int]:
    """Row table (the output's data files outside `_pairs/`, `_quarantine/` and metadata) and pair table."""
    rows = sum(_data_bytes(d) for d in out.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    rows += sum(f.stat().st_size for f in out.iterdir() if f.is_file() and not f.name.startswith(("_", ".")))
    return {"row_table": rows, "pair_table": _data_bytes(out / "_pairs") if (out / "_pairs").is_dir() else 0}


def resolved_precision(requested: str, device: str) -> str:
    """What the scorer's `precision` resolves to in the Python workers (no CUDA -> the CPU's rule)."""
    from udfs.scoring.device import resolve_precision

    if device != "cpu":
        try:
            import torch

            if torch.cuda.is_available():
                return resolve_precision(requested, "cuda")
        except ImportError:
            pass
    return resolve_precision(requested, "cpu")


def run_case(rows: int, src: str, extra: dict[str, Any], work: Path, conf: str, overrides: list[str]
             ) -> dict[str, Any]:
    """Score `src` with the CLI in a child process under the RSS sampler into work/out_<rows>; the case's record."""
    out = work / f"out_{rows}"
    cmd = [str(Path(sys.executable).parent / "clickweight"), "score", "--conf", conf, "--input", src,
           "--output", str(out), "--set", f"run_id=scale{rows}", *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.perf_counter()
    with open(work / f"err_{rows}.log", "wb") as err, open(work / f"stdout_{rows}.json", "wb") as stdout:
        proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=err)
        sampler = RSSSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
    wall = time.perf_counter() - t0
    sampler.stop()
    if rc != 0:   # the work folder goes with the exit (unless --keep): show the log's end now
        tail = (work / f"err_{rows}.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{tail}\nscore failed for {rows} rows (rc={rc}): log {work}/err_{rows}.log")
    summary = json.loads((out / "_summary.json").read_text())
    try:   # the job's own seconds are in what the CLI prints (the summary file is written before they are known)
        job_s = json.loads((work / f"stdout_{rows}.json").read_text()).get("seconds")
    except ValueError:
        job_s = None
    mib = {k: round(v / 2**20, 1) for k, v in sampler.peak.items()}
    rows_out, pairs = summary["rows_out"], summary["pairs"]["pairs"]
    size = disk_bytes(out)
    requested = (summary.get("scoring_key") or {}).get("precision", "?")
    from jobs import config as config_mod

    device = str(config_mod.load_config(conf, overrides)["scorer"]["device"])
    return {"rows": rows, **extra, "distinct_pairs": pairs, "wall_s": round(wall, 2),
            "job_s": job_s, "timings_s": summary.get("timings_s"),
            "rows_per_s": round(rows / wall, 1), "distinct_pairs_per_s": round(pairs / wall, 1),
            "peak_rss_mib": mib, "python_workers_seen": sampler.max_workers, "rows_out": rows_out,
            "disk_bytes": size, "row_table_bytes_per_row": round(size["row_table"] / max(1, rows_out), 1),
            "pair_table_bytes_per_row": round(size["pair_table"] / max(1, rows_out), 1),
            "pair_table_bytes_per_pair": round(size["pair_table"] / max(1, pairs), 1),
            "precision_requested": requested, "precision_resolved": resolved_precision(requested, device),
            "aggregates": summary.get("aggregates")}


# ----------------------------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------------------------
def rows_fit(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares wall = fixed + rows * per-row cost (>= 2 sizes)."""
    x = np.array([c["rows"] for c in cases], dtype=float)
    y = np.array([c["wall_s"] for c in cases], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    pairs_per_row = float(np.mean([c["distinct_pairs"] / c["rows"] for c in cases]))
    return {"startup_s": float(intercept), "per_row_ms": float(slope * 1e3),
            "per_distinct_pair_ms": float(slope / pairs_per_row * 1e3), "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def pairs_rows_fit(cases: list[dict[str, Any]]) -> dict[str, float]:
    """Least squares wall = fixed + pairs * a + rows * b (>= 3 sizes); with 3 sizes it is exact (r2 = 1)."""
    a = np.array([[1.0, c["distinct_pairs"], c["rows"]] for c in cases])
    y = np.array([c["wall_s"] for c in cases], dtype=float)
    scale = np.abs(a).max(axis=0)           # the condition number of the scaled design: collinearity
    coef, *_ = np.linalg.lstsq(a / scale, y, rcond=None)
    coef = coef / scale
    pred = a @ coef
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return {"fixed_s": float(coef[0]), "per_distinct_pair_ms": float(coef[1] * 1e3), "per_row_ms": float(coef[2] * 1e3),
            "r2": 1 - ss_res / ss_tot if ss_tot else 1.0, "condition_number": float(np.linalg.cond(a / scale))}


def largest_vs_smaller(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest size against a fit of the smaller ones, and its peak RSS over the smallest size's."""
    by_rows = sorted(cases, key=lambda c: c["rows"])
    big, small = by_rows[-1], by_rows[:-1]
    out: dict[str, Any] = {"largest_rows": big["rows"], "smallest_rows": by_rows[0]["rows"]}
    if len(small) >= 2:
        f = rows_fit(small)
        predicted = f["startup_s"] + big["rows"] * f["per_row_ms"] / 1e3
        out["rows_fit_of_smaller"] = f
        out["wall_over_rows_fit"] = big["wall_s"] / predicted
        out["wall_within_target"] = abs(out["wall_over_rows_fit"] - 1) <= WALL_TARGET
    if len(small) >= 3:
        g = pairs_rows_fit(small)
        predicted = g["fixed_s"] + (big["distinct_pairs"] * g["per_distinct_pair_ms"]
                                    + big["rows"] * g["per_row_ms"]) / 1e3
        out["pairs_rows_fit_of_smaller"] = g
        out["wall_over_pairs_rows_fit"] = big["wall_s"] / predicted
    base = by_rows[0]["peak_rss_mib"]
    out["peak_rss_ratio"] = {k: big["peak_rss_mib"][k] / base[k] if base[k] else None for k in RSS_KINDS}
    out["rss_within_target"] = all(r is None or r <= RSS_TARGET for r in out["peak_rss_ratio"].values())
    return out


SCORING_PHASE = "validate_and_score_pairs"   # the phase whose time is the BERT forward of the distinct pairs
GPU_RESULTS = ROOT / "benchmarks" / "results" / "gpu_mfu_h200.json"


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def cost_model(cases: list[dict[str, Any]], cores: int, gpu_pairs_per_s: float, rows: float = 1e9,
               node_cores: int = 16) -> dict[str, Any]:
    """A day's `rows` scored on nodes of `node_cores` cores, from measured parts:
    - distinct pairs at `rows`: the power law pairs = k * rows^alpha fitted to the measured sizes (a Zipf
      log's repetition grows with its size);
    - per-pair cost: the slope of the scoring phase (validation, distinct pairs, BERT, join) against pairs,
      in core-seconds (wall x the `cores` it ran on); on a GPU node, 1 / gpu_pairs_per_s GPU-seconds;
    - per-row cost: the slope of the rest of the job (calibration, EM, weights, writes, read-back) against
      rows, in core-seconds, paid on the node's cores either way.
    Assumes executors scale out linearly (no shuffle over a network was measured here)."""
    alpha, log_k = np.polyfit(np.log([c["rows"] for c in cases]), np.log([c["distinct_pairs"] for c in cases]), 1)
    pairs = float(np.exp(log_k) * rows ** alpha)
    per_pair = _slope([c["distinct_pairs"] for c in cases], [c["timings_s"][SCORING_PHASE] for c in cases]) * cores
    per_row = _slope([c["rows"] for c in cases],
                     [c["job_s"] - c["timings_s"][SCORING_PHASE] for c in cases]) * cores
    pair_core_h, row_core_h = pairs * per_pair / 3600, rows * per_row / 3600
    gpu_h = pairs / gpu_pairs_per_s / 3600
    cpu_node_h, gpu_node_h = (pair_core_h + row_core_h) / node_cores, max(gpu_h, row_core_h / node_cores)
    return {"rows": rows, "pairs": pairs, "pairs_alpha": float(alpha), "impressions_per_pair": rows / pairs,
            "per_pair_core_ms": per_pair * 1e3, "per_row_core_ms": per_row * 1e3, "node_cores": node_cores,
            "gpu_pairs_per_s": gpu_pairs_per_s,
            "cpu": {"pair_core_hours": pair_core_h, "row_core_hours": row_core_h, "node_hours": cpu_node_h,
                    "nodes_for_24h": cpu_node_h / 24, "dominant": "pairs" if pair_core_h > row_core_h else "rows"},
            "gpu": {"gpu_hours": gpu_h, "row_node_hours": row_core_h / node_cores, "node_hours": gpu_node_h,
                    "nodes_for_24h": gpu_node_h / 24,
                    "dominant": "pairs (GPU)" if gpu_h > row_core_h / node_cores else "rows (CPU)"}}


def gpu_scorer_pairs_per_s(path: Path = GPU_RESULTS) -> float:
    """The scorer's pairs/s on the lent H200 (benchmarks/gpu_mfu: the UDF's `score`, host work included)."""
    return float(json.loads(path.read_text())["scoring"][0]["score_pairs_per_s"])


def cost_markdown(m: dict[str, Any]) -> str:
    c, g = m["cpu"], m["gpu"]
    return "\n".join([
        f"{m['rows']:.0e} rows a day: {m['pairs'] / 1e6:.1f}M distinct pairs (pairs ~ rows^{m['pairs_alpha']:.3f}, "
        f"{m['impressions_per_pair']:.1f} impressions a pair); per pair {m['per_pair_core_ms']:.2f} core-ms (CPU) "
        f"or 1/{m['gpu_pairs_per_s']:.0f} GPU-s; per row {m['per_row_core_ms']:.3f} core-ms",
        "| nodes | pair term | row term | node-hours | nodes for a 24 h window | dominant |",
        "|---|---|---|---|---|---|",
        f"| CPU, {m['node_cores']} cores | {c['pair_core_hours']:.0f} core-h | {c['row_core_hours']:.0f} core-h "
        f"| {c['node_hours']:.1f} | {c['nodes_for_24h']:.2f} | {c['dominant']} |",
        f"| 1 GPU + {m['node_cores']} cores | {g['gpu_hours']:.1f} GPU-h | {g['row_node_hours']:.1f} node-h "
        f"| {g['node_hours']:.1f} | {g['nodes_for_24h']:.2f} | {g['dominant']} |"])


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(report: dict[str, Any]) -> str:
    cases = report["cases"]
    lines = ["| rows | distinct pairs | precision | wall s | rows/s | pairs/s | driver Python MiB | driver JVM MiB "
             "| worker max MiB | workers sum MiB | row table B/row | pair table B/row | pair table B/pair |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        m = c["peak_rss_mib"]
        lines.append(f"| {c['rows']} | {c['distinct_pairs']} | {c['precision_resolved']} | {c['wall_s']:.1f} "
                     f"| {c['rows_per_s']:.0f} | {c['distinct_pairs_per_s']:.0f} | {m['driver_python']} "
                     f"| {m['driver_jvm']} | {m['python_worker_max']} | {m['python_workers_sum']} "
                     f"| {c['row_table_bytes_per_row']:.0f} | {c['pair_table_bytes_per_row']:.0f} "
                     f"| {c['pair_table_bytes_per_pair']:.0f} |")
    phases = list(dict.fromkeys(k for c in cases for k in (c["timings_s"] or {})))
    lines += ["", "| rows | job s | " + " | ".join(f"{p} s" for p in phases) + " |",
              "|---|---|" + "---|" * len(phases)]
    for c in cases:
        t = c["timings_s"] or {}
        lines.append(f"| {c['rows']} | {_f(c['job_s'], '.1f')} | "
                     + " | ".join(_f(t.get(p), ".1f") for p in phases) + " |")
    fit, fit3 = report["linear_fit"], report.get("pairs_rows_fit")
    if fit3:
        lines.append(f"\nfit: wall = {fit3['fixed_s']:.1f} s + pairs x {fit3['per_distinct_pair_ms']:.3f} ms "
                     f"+ rows x {fit3['per_row_ms']:.4f} ms, R^2 = {fit3['r2']:.4f}, "
                     f"condition {fit3['condition_number']:.0f}")
    elif fit:
        lines.append("\n(2 sizes: no pairs + rows fit, the rows-only line below is the fit)")
    if fit:
        lines.append(f"rows-only fit: wall = {fit['startup_s']:.1f} s + rows x {fit['per_row_ms']:.4f} ms "
                     f"({fit['per_distinct_pair_ms']:.3f} ms per distinct pair), R^2 = {fit['r2']:.4f}")
    big = report.get("largest")
    if big:
        if "wall_over_rows_fit" in big:
            lines.append(f"largest ({big['largest_rows']} rows): wall / rows-only line of the smaller sizes = "
                         f"{big['wall_over_rows_fit']:.3f} (target within {WALL_TARGET:.0%}: "
                         f"{'met' if big['wall_within_target'] else 'missed'})")
        if "wall_over_pairs_rows_fit" in big:
            lines.append("largest: wall / pairs + rows fit of the smaller sizes = "
                         f"{big['wall_over_pairs_rows_fit']:.3f}")
        r = big["peak_rss_ratio"]
        lines.append("peak RSS, largest / smallest: " + ", ".join(f"{k} {_f(v, '.2f')}" for k, v in r.items())
                     + f" (target <= {RSS_TARGET}: {'met' if big['rss_within_target'] else 'missed'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=("bench", "big"), default="bench",
                   help="bench: bench_data at --dup; big: benchmarks/big_clickstream at --seed")
    p.add_argument("--rows", type=int, nargs="*", default=None,
                   help="sizes (default: bench 10k 50k 100k 200k; big 1M 3M 10M)")
    p.add_argument("--dup", type=int, default=4, help="bench: impressions per distinct pair")
    p.add_argument("--seed", type=int, default=0, help="big: the generator's seed")
    p.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--json", default=None, help="results (default: benchmarks/results/score_scaling.json for "
                   "bench, score_scale.json for big)")
    p.add_argument("--work", default=None, help="folder for inputs and outputs (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep every size's input and output (and the work folder)")
    p.add_argument("--cost-model-only", action="store_true",
                   help="run nothing: add the billion-row cost model to --json's measured sizes and print it")
    args = p.parse_args(argv)
    if args.cost_model_only:
        path = Path(args.json) if args.json else DEFAULT_JSON[args.source]
        report = json.loads(path.read_text())
        report["cost_model"] = cost_model(report["cases"], report["cores"], gpu_scorer_pairs_per_s())
        path.write_text(json.dumps(report, indent=2))
        print(cost_markdown(report["cost_model"]))
        return 0
    sizes = args.rows or DEFAULT_ROWS[args.source]
    json_path = Path(args.json) if args.json else DEFAULT_JSON[args.source]
    if args.work:  # a --work folder that does not exist yet is made, not a traceback
        Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cw-scaling-", dir=args.work))
    cases = []
    try:
        for rows in sizes:
            if args.source == "big":
                src, extra = big_input(rows, args.seed, work)
            else:
                src, extra = bench_input(rows, args.dup, work)
            case = run_case(rows, src, extra, work, args.conf, args.overrides)
            print(json.dumps(case), flush=True)
            cases.append(case)
            if not args.keep:   # 10M rows: GBs of input and output
                for name in (f"in_{rows}", f"out_{rows}"):
                    shutil.rmtree(work / name, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept inputs and outputs in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {
        "benchmark": "score_scale" if args.source == "big" else "score_scaling", "source": args.source,
        "cores": os.cpu_count(), "conf": args.conf, "overrides": args.overrides, "cases": cases,
        "linear_fit": rows_fit(cases) if len(cases) >= 2 else {},
        "worker_rss_ratio_largest_vs_smallest": (cases[-1]["peak_rss_mib"]["python_worker_max"]
                                                 / max(0.1, cases[0]["peak_rss_mib"]["python_worker_max"])),
        "command": "python -m benchmarks.score_scaling " + " ".join(sys.argv[1:] if argv is None else argv)}
    if len(cases) >= 3:
        report["pairs_rows_fit"] = pairs_rows_fit(cases)
    if len(cases) >= 2:
        report["largest"] = largest_vs_smaller(cases)
    if len(cases) >= 2 and args.source == "big":
        report["cost_model"] = cost_model(cases, os.cpu_count() or 1, gpu_scorer_pairs_per_s())
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    print("\n" + markdown(report))
    if "cost_model" in report:
        print("\n" + cost_markdown(report["cost_model"]))
    print(f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
