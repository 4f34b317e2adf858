"""`clickweight score` against the loops a user would otherwise write, each a whole process timed
from launch to exit (interpreter, imports, JVM and model loads included), on a real-title clickstream:

  (a)  plain loop: pandas reads the Parquet, every row's query and title embedded (the scorer's own
       token-length-sorted micro-batches, no dedup of any kind), cosine per row, Parquet written;
  (a2) the loop a competent engineer writes in ten minutes: pandas drop_duplicates() on (query, title),
       the distinct pairs scored the same way, joined back, Parquet written;
  (b)  Spark's pyspark.ml.functions.predict_batch_udf over every row, written as Parquet;
  (c)  the `clickweight score` CLI: validation, quarantine, distinct-pair scoring, calibration,
       propensity, weights, compacted pair table, atomic write, read-back reconciliation, report.

Two floors bound what any job of each kind can reach here (`--peers f0,f1`): the work they leave out
is the scoring itself, so their walls are fixed costs, not throughput.
  (f0) loop floor: the loop's process, imports, scorer load, Parquet read and write; nothing scored;
  (f1) Spark floor: a Spark local job that reads the rows, sends the distinct (query, title) pairs
       through a pandas UDF that loads the scorer in each Python worker and returns 0 (no forward
       pass), joins them back and writes Parquet: the least a Spark job scoring pairs pays;
  (f2) (f1) with the scoring in (the distinct pairs' forward pass, spread over the cores);
  (f3) (f2) with the guarantees in: quarantine, a pair table, the three tables read back and reconciled
       with the input's rows, an atomic commit (benchmarks/score_fixed_cost.py runs f1, f2, f3 and c).

All use the same model, scorer.batch_size and precision (`--precision`, default auto: bf16 autocast on
this CPU). For (c) it also records the per-phase profile (`_summary.json` timings plus the process
start and report around them), the worker peak RSS, and the fit wall = fixed cost + rows x marginal.

    .venv/bin/python -m benchmarks.score_peers --rows 10000 50000 200000 --dup 1 3
    .venv/bin/python -m benchmarks.score_peers --rows 10000 --dup 3 --peers a2,c        # a quick look
    .venv/bin/python -m benchmarks.score_peers --rows 10000 50000 200000 --dup 3 --repeat 3   # the peer table:
        # every case and peer interleaved (a, a2, b, c, a, ...), 3 runs each, medians and spread
    .venv/bin/python -m benchmarks.score_peers --agreement --rows 10000 --dup 3         # precisions vs fp32
        [--set weighting.strategy=information_gain]                                      # weights that read p

Writes benchmarks/results/score_peers.json (or --json) and, with --plot, the profile chart
docs/performance_profile.png. Run it on an otherwise idle machine: every figure is a wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import bench_data
from benchmarks.score_scaling import RSSSampler

ROOT = Path(__file__).resolve().parent.parent
PEERS = {"a": "plain loop", "a2": "drop_duplicates loop", "b": "predict_batch_udf", "c": "clickweight score",
         "f0": "loop floor (no scoring)", "f1": "Spark floor (no scoring)",
         "f2": "Spark floor with the scoring (distinct pairs' forward pass)",
         "f3": "guarantees floor (f2 + quarantine, pair table, read-back reconciliation, atomic commit)"}
CONF = str(ROOT / "conf" / "local.yaml")


# ---------------------------------------------------------------- the peers (run in their own process)

def _settings(precision: str):
    from jobs import config
    from udfs.scoring.spark import scoring_settings

    cfg = config.load_config(CONF, overrides=[f"scorer.precision={precision}"])
    return cfg, scoring_settings(cfg)


def loop_peer(src: str, out: str, precision: str, dedup: bool) -> None:
    import torch

    from udfs.scoring.bert import PairScorer

    cfg, settings = _settings(precision)
    scorer = PairScorer(settings, "cpu")
    torch.set_num_threads(os.cpu_count() or 1)  # a loop outside Spark uses every core
    frame = pd.read_parquet(src, columns=["event_id", "query", "title"])
    frame["query"], frame["title"] = frame["query"].str.strip(), frame["title"].str.strip()
    todo = frame.drop_duplicates(["query", "title"]) if dedup else frame
    scores = todo[["query", "title"]].copy()
    # Batch scoring as written by hand: each (kept) row's query and title embedded, in the scorer's
    # length-sorted micro-batches; no text-level dedup (PairScorer.cosine would add that).
    q, t = scorer.embed(todo["query"].tolist()), scorer.embed(todo["title"].tolist())
    scores["relevance"] = np.einsum("ij,ij->i", q, t)
    result = frame.merge(scores, on=["query", "title"], how="left") if dedup else frame.assign(
        relevance=scores["relevance"].to_numpy())
    Path(out).mkdir(parents=True, exist_ok=True)
    result.to_parquet(f"{out}/part-0.parquet", index=False)


def loop_floor_peer(src: str, out: str, precision: str) -> None:
    """(f0): everything the loops do but the scoring."""
    from udfs.scoring.bert import PairScorer

    _, settings = _settings(precision)
    PairScorer(settings, "cpu").embed(["warm"])  # the model is loaded and has run once
    frame = pd.read_parquet(src, columns=["event_id", "query", "title"])
    Path(out).mkdir(parents=True, exist_ok=True)
    frame.assign(relevance=0.0).to_parquet(f"{out}/part-0.parquet", index=False)


def pair_cosine_udf(settings):
    """The pandas UDF (f2) and (f3) score pairs with: the scorer's cosine, loaded once per worker as the
    job's UDF loads it. Needs an active SparkSession."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("double")
    def cosine(queries: pd.Series, titles: pd.Series) -> pd.Series:
        from udfs.scoring.bert import get_scorer

        return pd.Series(get_scorer(settings).cosine(queries.tolist(), titles.tolist()), index=queries.index)

    return cosine


def spark_floor_peer(src: str, out: str, precision: str, forward: bool = False) -> None:
    """(f1): the shape of a Spark job that scores distinct pairs, with the scoring left out.
    (f2, forward=True): the same with the scoring in: the pairs spread over the cores (one partition
    a core, as a competent job would; AQE would otherwise coalesce them into one task) and each
    scored by the scorer's forward pass, as the job's UDF scores them."""
    from pyspark.sql.functions import pandas_udf

    from jobs.common import get_spark

    cfg, settings = _settings(precision)
    spark = get_spark(cfg)  # before the UDF: pandas_udf needs an active session

    @pandas_udf("double")
    def loaded_zero(queries: pd.Series, titles: pd.Series) -> pd.Series:
        from udfs.scoring.bert import get_scorer

        get_scorer(settings).embed(["warm"])  # per worker: imports and model load, as the job's UDF
        return pd.Series(0.0, index=queries.index)

    cosine = pair_cosine_udf(settings)
    rows = spark.read.parquet(src)
    pairs = rows.select("query", "title").distinct()
    if forward:
        pairs = pairs.repartition(spark.sparkContext.defaultParallelism).withColumn("relevance",
                                                                                    cosine("query", "title"))
    else:
        pairs = pairs.withColumn("relevance", loaded_zero("query", "title"))
    rows.join(pairs, ["query", "title"]).write.mode("overwrite").parquet(out)
    spark.stop()


def guarantees_floor_peer(src: str, out: str, precision: str) -> None:
    """(f3): (f2) plus the guarantees the issue names and nothing else, written as a competent engineer
    would, with no weighting: rows checked once (a reason per bad row), the bad rows quarantined with it,
    the good rows' distinct pairs scored as in (f2) and joined back (persisted: two tables read them),
    the rows written by event date, the quarantine and a pair table (impressions, clicks, the score)
    written beside them into a staging folder, all three read back and reconciled with the input's row
    count (from its Parquet footers, no Spark job), then the staging folder renamed into place. No
    duplicate-event check (the job's window over event ids): a lower bound on the guarantees' cost. What
    `clickweight score` costs above this is its own work (calibration, click model, weights, click
    context, token ids, provenance, report), not the guarantees'."""
    import pyarrow.parquet as pq
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from jobs.common import get_spark

    cfg, settings = _settings(precision)
    spark = get_spark(cfg)

    cosine = pair_cosine_udf(settings)

    rows_in = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(src).glob("*.parquet"))

    def blank(column: str):
        return F.col(column).isNull() | (F.trim(F.col(column)) == "")

    reason = (F.when(blank("event_id"), "missing event_id").when(blank("query"), "missing query")
              .when(blank("title"), "missing title")
              .when(F.col("event_ts").isNull(), "missing event_ts")
              .when(~F.col("position").between(1, cfg["input"]["max_position"]), "position out of range")
              .when(~F.col("clicked").isin(0, 1), "clicked not 0/1"))
    checked = spark.read.parquet(src).withColumn("reason", reason).persist(StorageLevel.MEMORY_AND_DISK)
    valid = checked.filter(F.col("reason").isNull()).drop("reason")
    pairs = (valid.select("query", "title").distinct().repartition(spark.sparkContext.defaultParallelism)
             .withColumn("relevance", cosine("query", "title")))
    scored = valid.join(pairs, ["query", "title"]).persist(StorageLevel.MEMORY_AND_DISK)
    staged = f"{out}._staging"
    shutil.rmtree(staged, ignore_errors=True)
    scored.withColumn("event_date", F.to_date("event_ts")).write.partitionBy("event_date").parquet(staged)
    checked.filter(F.col("reason").isNotNull()).write.parquet(f"{staged}/_quarantine")
    (scored.groupBy("query", "title")
           .agg(F.count(F.lit(1)).alias("impressions"), F.sum("clicked").alias("clicks"),
                F.first("relevance").alias("relevance"))
           .write.parquet(f"{staged}/_pairs"))
    rows_out = spark.read.parquet(staged).count()
    quarantined = spark.read.parquet(f"{staged}/_quarantine").count()
    impressions = spark.read.parquet(f"{staged}/_pairs").agg(F.sum("impressions")).first()[0] or 0
    if rows_in != rows_out + quarantined or impressions != rows_out:
        raise RuntimeError(f"counts do not reconcile: in={rows_in} out={rows_out} quarantined={quarantined} "
                           f"pair impressions={impressions}")
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staged, out)
    spark.stop()


def predict_batch_peer(src: str, out: str, precision: str) -> None:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import DoubleType

    from jobs.common import get_spark

    cfg, settings = _settings(precision)

    def make_predict_fn():
        from udfs.scoring.bert import PairScorer

        scorer = PairScorer(settings, "cpu")  # the same embedding code and precision as the job's

        def predict(queries: np.ndarray, titles: np.ndarray) -> np.ndarray:
            q = scorer.embed([str(x).strip() for x in queries])
            t = scorer.embed([str(x).strip() for x in titles])
            return np.einsum("ij,ij->i", q, t).astype(np.float64)

        return predict

    udf = predict_batch_udf(make_predict_fn, return_type=DoubleType(), batch_size=cfg["scorer"]["batch_size"])
    spark = get_spark(cfg)
    spark.read.parquet(src).withColumn("relevance", udf("query", "title")).write.mode("overwrite").parquet(out)
    spark.stop()


def run_peer(peer: str, src: str, out: str, precision: str, overrides: tuple[str, ...] = ()) -> dict:
    """Launch one peer as a process; wall time from launch to exit, peak RSS of its Python workers.
    `overrides`: extra `--set key=value` for (c)."""
    if peer == "c":
        cmd = [str(Path(sys.executable).parent / "clickweight"), "score", "--conf", CONF, "--input", src,
               "--output", out, "--overwrite", "--set", f"scorer.precision={precision}",
               *[a for o in overrides for a in ("--set", o)]]
    else:
        cmd = [sys.executable, "-m", "benchmarks.score_peers", "--run-peer", peer, "--src", src, "--out", out,
               "--precision", precision]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = RSSSampler(proc.pid)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"peer {peer} failed (rc={proc.returncode}):\n{err.decode()[-3000:]}")
    result = {"wall_s": round(wall, 2), "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in sampler.peak.items()}}
    if peer == "c":
        summary = json.loads((Path(out) / "_summary.json").read_text())
        result.update(timings_s=summary["timings_s"], rows_out=summary["rows_out"],
                      pairs=summary["pairs"]["pairs"], aggregates=summary.get("aggregates"))
    return result


# ---------------------------------------------------------------- the comparison

def median_run(results: list[dict]) -> dict:
    """The run with the median wall (the lower middle of an even count), with every run's wall and
    their spread beside it: one cell of the peer table."""
    walls = [r["wall_s"] for r in results]
    middle = sorted(range(len(results)), key=lambda k: walls[k])[(len(results) - 1) // 2]
    return {**results[middle], "walls_s": walls, "wall_min_s": min(walls), "wall_max_s": max(walls)}


def profile(c: dict) -> dict[str, float]:
    """(c)'s wall split into phases: the job's own timings, plus what lies around them (interpreter,
    imports, JVM and Spark start, reading the input's row count; then the report and exit)."""
    phases = dict(c["timings_s"])
    phases["start_and_report"] = round(c["wall_s"] - sum(phases.values()), 3)
    return phases


def fixed_cost_fit(cases: list[dict]) -> dict[int, dict]:
    """Per duplication: wall = intercept + rows x slope over the sizes run (the intercept is the fixed cost)."""
    fits = {}
    for dup in sorted({c["dup"] for c in cases}):
        pts = [(c["rows"], c["c"]["wall_s"]) for c in cases if c["dup"] == dup and "c" in c]
        if len(pts) >= 2:
            x, y = np.array(pts, dtype=float).T
            slope, intercept = np.polyfit(x, y, 1)
            fits[dup] = {"fixed_cost_s": round(float(intercept), 2), "ms_per_row": round(float(slope) * 1e3, 4)}
    return fits


def spearman(a: pd.Series, b: pd.Series) -> float:
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])


def agreement(src: str, work: Path, precisions: list[str], overrides: tuple[str, ...] = ()) -> dict:
    """p_model and weight of each precision against fp32, row by row (same input, same job)."""
    runs = {}
    for prec in ["fp32", *precisions]:
        out = work / f"agree_{prec}"
        runs[prec] = {"timing": run_peer("c", src, str(out), prec, overrides)}
        runs[prec]["rows"] = pd.read_parquet(out, columns=["event_id", "p_model", "weight"]).set_index("event_id")
    ref = runs["fp32"]["rows"]
    result = {}
    for prec in precisions:
        rows = runs[prec]["rows"].loc[ref.index]
        result[prec] = {"p_model_spearman": spearman(ref["p_model"], rows["p_model"]),
                        "weight_spearman": spearman(ref["weight"], rows["weight"]),
                        "wall_s": runs[prec]["timing"]["wall_s"], "fp32_wall_s": runs["fp32"]["timing"]["wall_s"]}
        print(f"  {prec}: {result[prec]}", flush=True)
    return result


def plot_profile(cases: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [c for c in cases if "c" in c]
    names = list(dict.fromkeys(k for c in runs for k in profile(c["c"])))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottom = np.zeros(len(runs))
    labels = [f"{c['rows'] // 1000}k rows\ndup {c['dup']}" for c in runs]
    for name in names:
        vals = np.array([profile(c["c"]).get(name, 0.0) for c in runs])
        ax.bar(labels, vals, bottom=bottom, label=name.replace("_", " "))
        bottom += vals
    ax.set_ylabel("wall seconds (whole clickweight score process)")
    ax.set_title("Where clickweight score's time goes")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def print_table(cases: list[dict]) -> None:
    print("\n| rows | dup | distinct pairs | (a) rows/s | (a2) rows/s | (b) rows/s | (c) rows/s | c/a | c/a2 | c/b "
          "| (c) worker RSS MiB | (f0) loop floor s | (f1) Spark floor s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        rate = {p: c["rows"] / c[p]["wall_s"] for p in ("a", "a2", "b", "c") if p in c}
        spread = {p: f" ({c['rows'] / c[p]['wall_max_s']:.1f}-{c['rows'] / c[p]['wall_min_s']:.1f})"
                  if c[p].get("walls_s", [0])[1:] else "" for p in rate}
        ratios = [f"{rate['c'] / rate[p]:.2f}" if "c" in rate and p in rate else "-" for p in ("a", "a2", "b")]
        cells = [f"{rate[p]:.1f}{spread[p]}" if p in rate else "-" for p in ("a", "a2", "b", "c")]
        rss = c["c"]["peak_rss_mib"]["python_worker_max"] if "c" in c else "-"
        floors = [f"{c[p]['wall_s']:.1f}" if p in c else "-" for p in ("f0", "f1")]
        print(f"| {c['rows']} | {c['dup']} | {c['distinct_pairs']} | {' | '.join(cells + ratios)} | {rss} "
              f"| {' | '.join(floors)} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    p.add_argument("--dup", type=int, nargs="*", default=[1, 3])
    p.add_argument("--peers", default="a,a2,b,c")
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeat", type=int, default=1,
                   help="repetitions, interleaved over every case and peer; each cell is the median run")
    p.add_argument("--agreement", action="store_true", help="compare bf16 and int8 with fp32 instead")
    p.add_argument("--set", action="append", default=[], dest="overrides", help="key=value for (c)'s config")
    p.add_argument("--plot", action="store_true", help="write docs/performance_profile.png")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "score_peers.json"))
    p.add_argument("--run-peer", choices=["a", "a2", "b", "f0", "f1", "f2", "f3"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_peer:
        if args.run_peer == "b":
            predict_batch_peer(args.src, args.out, args.precision)
        elif args.run_peer == "f0":
            loop_floor_peer(args.src, args.out, args.precision)
        elif args.run_peer == "f3":
            guarantees_floor_peer(args.src, args.out, args.precision)
        elif args.run_peer in ("f1", "f2"):
            spark_floor_peer(args.src, args.out, args.precision, forward=args.run_peer == "f2")
        else:
            loop_peer(args.src, args.out, args.precision, dedup=args.run_peer == "a2")
        return 0

    work = Path(tempfile.mkdtemp(prefix="cw-peers-"))
    pairs = bench_data.real_pairs()
    report: dict = {"benchmark": "score_peers", "cores": os.cpu_count(), "precision": args.precision,
                    "command": "python -m benchmarks.score_peers " + " ".join(argv or sys.argv[1:])}
    try:
        if args.agreement:
            frame = bench_data.clickstream(pairs, args.rows[0], args.dup[0], seed=args.rows[0] + args.dup[0])
            src = bench_data.write_clickstream(frame, work / "in")
            report["agreement"] = agreement(src, work, ["bf16", "int8"], tuple(args.overrides))
        else:
            cases, sources, peers = [], [], args.peers.split(",")
            for dup in args.dup:
                for rows in args.rows:
                    frame = bench_data.clickstream(pairs, rows, dup, seed=rows + dup)
                    sources.append(bench_data.write_clickstream(frame, work / f"in_{rows}_{dup}"))
                    cases.append({"rows": rows, "dup": dup, "repeat": args.repeat,
                                  "distinct_pairs": int(frame[["query", "title"]].drop_duplicates().shape[0])})
            # Interleaved: each repetition runs every case and every peer once (a, a2, b, c, a, a2, ...), so a
            # machine that drifts during the invocation moves every peer alike; each cell is the median run.
            runs: dict[tuple[int, str], list[dict]] = {}
            for rep in range(args.repeat):
                for i, (case, src) in enumerate(zip(cases, sources)):
                    for peer in peers:
                        out = work / f"out_{peer}_{case['rows']}_{case['dup']}"
                        runs.setdefault((i, peer), []).append(
                            run_peer(peer, src, str(out), args.precision, tuple(args.overrides)))
                        shutil.rmtree(out, ignore_errors=True)
                        case[peer] = median_run(runs[(i, peer)])
                        print(f"rep {rep + 1}/{args.repeat} rows={case['rows']} dup={case['dup']} ({peer}) "
                              f"{PEERS[peer]}: {runs[(i, peer)][-1]['wall_s']} s", flush=True)
                    write_report({**report, "cases": cases, "partial": True}, args.json)  # kept if cut off
            report.update(cases=cases, fixed_cost=fixed_cost_fit(cases))
            print_table(cases)
            print("fixed cost (intercept of (c)'s wall against rows):", report["fixed_cost"])
            if args.plot:
                plot_profile(cases, ROOT / "docs" / "performance_profile.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(report, args.json)
    return 0


def write_report(report: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
