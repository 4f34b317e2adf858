"""Scoring throughput, side by side, in one run: the same model on the same rows.

  (a)  bare PyTorch loop outside Spark, all cores: every row's query and title embedded (token-length
       sorted micro-batches, dynamic padding), cosine per row. The practical per-row ceiling.
  (a') the same loop embedding each distinct text of a 2048-row chunk once (streaming dedup, as a
       bare loop over a table too big for memory would; duplicates spread over the table escape it).
  (b)  Spark's own pyspark.ml.functions.predict_batch_udf (the peer users would pick): a predict
       function that tokenizes and embeds query and title per batch, cosine; output written as Parquet.
  (c)  `clickweight score`, the real job: validation, quarantine, distinct-pair scoring, calibration,
       propensity, weights, tokenized training input, atomic partitioned Parquet write.

Run (from the repository root; reads ../shared/data/homedepot_relevance_dev.parquet):

    .venv/bin/python -m benchmarks.score_throughput                       # 16k rows dup 1, 32k rows dup 4
    .venv/bin/python -m benchmarks.score_throughput --rows 2000 --dup 1   # a quick look

Prints a table and writes benchmarks/results/score_throughput.json. Rows/s count input rows.
Tokens/s count the row-equivalent tokens (query + title tokens of every row, no padding), so the
figures compare the work delivered, not the work done.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import bench_data
from jobs import config
from jobs.common import get_spark, versions
from jobs.score import run_score
from udfs.scoring import model_loader
from udfs.scoring.bert import PairScorer
from udfs.scoring.spark import scoring_settings

ROOT = Path(__file__).resolve().parent.parent


def bare_loop(frame: pd.DataFrame, settings, threads: int, dedup: bool, chunk: int = 2048) -> dict:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    scorer = PairScorer(settings, "cpu")
    torch.set_num_threads(threads)  # PairScorer sets the per-worker value; the bare loop uses all cores
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = np.empty(len(frame))
    q, t = frame["query"].str.strip().tolist(), frame["title"].str.strip().tolist()
    for s in range(0, len(frame), chunk):
        qs, ts = q[s:s + chunk], t[s:s + chunk]
        if dedup:
            uq, qi = np.unique(np.asarray(qs, dtype=object), return_inverse=True)
            ut, ti = np.unique(np.asarray(ts, dtype=object), return_inverse=True)
            eq, et = scorer.embed(list(uq))[qi], scorer.embed(list(ut))[ti]
        else:
            eq, et = scorer.embed(qs), scorer.embed(ts)
        out[s:s + chunk] = np.einsum("ij,ij->i", eq, et)
    return {"wall_s": time.perf_counter() - t0, "model_load_s": load_s, "mean_relevance": float(out.mean())}


def make_predict_fn_factory(model_path: str, max_length: int, threads: int):
    def make_predict_fn():
        import torch

        from udfs.scoring import model_loader as ml

        torch.set_num_threads(threads)
        tok = ml.load_tokenizer(model_path)
        enc = ml.load_encoder(model_path, "cpu")

        def embed(texts: np.ndarray) -> torch.Tensor:
            batch = tok([str(x).strip() for x in texts], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
            hidden = enc(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

        def predict(queries: np.ndarray, titles: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return (embed(queries) * embed(titles)).sum(-1).double().numpy()

        return predict

    return make_predict_fn


def predict_batch(spark, src: str, out: str, settings, batch_size: int) -> dict:
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import DoubleType

    udf = predict_batch_udf(make_predict_fn_factory(settings.scorer_path, settings.scorer_max_length, 1),
                            return_type=DoubleType(), batch_size=batch_size)
    t0 = time.perf_counter()
    spark.read.parquet(src).withColumn("relevance", udf("query", "title")).write.mode("overwrite").parquet(out)
    return {"wall_s": time.perf_counter() - t0}


def clickweight_score(spark, src: str, out: str, cfg: dict) -> dict:
    t0 = time.perf_counter()
    summary = run_score(spark, src, out, cfg)
    wall = time.perf_counter() - t0
    assert summary["rows_out"] + summary["rows_quarantined"] == summary["rows_in"]
    return {"wall_s": wall, "rows_out": summary["rows_out"],
            "timings_s": summary.get("timings_s")}


def row_tokens(frame: pd.DataFrame, settings) -> int:
    tok = model_loader.load_tokenizer(settings.scorer_path)
    n = 0
    for col in ("query", "title"):
        ids = tok(frame[col].str.strip().tolist(), truncation=True, max_length=settings.scorer_max_length,
                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        n += sum(len(x) for x in ids)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[16000, 32000], help="rows per case")
    p.add_argument("--dup", type=int, nargs="*", default=[1, 4], help="duplication factor per case")
    p.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--workdir", default=None)
    p.add_argument("--skip-peer", action="store_true",
                   help="skip (b) predict_batch_udf (the slowest; c/a alone at large sizes)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "score_throughput.json"))
    args = p.parse_args(argv)
    if len(args.rows) != len(args.dup):
        p.error("--rows and --dup pair up: give as many of each")

    cfg = config.load_config(args.conf, overrides=["run_id=bench", *args.overrides])
    settings = scoring_settings(cfg)
    cores = os.cpu_count() or 1
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cw-throughput-"))
    pairs = bench_data.real_pairs()

    t0 = time.perf_counter()
    spark = get_spark(cfg)
    spark_start_s = time.perf_counter() - t0
    # Warm both paths on a small table first, so JIT-free start-up (Python workers, model load) is
    # measured apart from throughput and the first timed case is not penalised.
    warm = bench_data.write_clickstream(bench_data.clickstream(pairs, 512, 1, seed=99), work / "warm")
    t0 = time.perf_counter()
    clickweight_score(spark, warm, str(work / "warm_out"), cfg)
    warmup_s = time.perf_counter() - t0
    if not args.skip_peer:
        predict_batch(spark, warm, str(work / "warm_pb"), settings, cfg["scorer"]["batch_size"])

    results = []
    for rows, dup in zip(args.rows, args.dup):
        frame = bench_data.clickstream(pairs, rows, dup, seed=rows + dup)
        src = bench_data.write_clickstream(frame, work / f"in_{rows}_{dup}")
        tokens = row_tokens(frame, settings)
        distinct = int(frame[["query", "title"]].drop_duplicates().shape[0])
        case = {"rows": rows, "duplication": dup, "distinct_pairs": distinct,
                "distinct_queries": int(frame["query"].nunique()), "distinct_titles": int(frame["title"].nunique()),
                "row_tokens": tokens}
        print(f"case rows={rows} dup={dup}: {distinct} distinct pairs, {tokens} row tokens", flush=True)
        case["a_bare_loop"] = bare_loop(frame, settings, cores, dedup=False)
        print("  (a) ", case["a_bare_loop"], flush=True)
        case["a_bare_loop_dedup"] = bare_loop(frame, settings, cores, dedup=True)
        print("  (a')", case["a_bare_loop_dedup"], flush=True)
        if not args.skip_peer:
            case["b_predict_batch_udf"] = predict_batch(spark, src, str(work / f"pb_{rows}_{dup}"), settings,
                                                        cfg["scorer"]["batch_size"])
            print("  (b) ", case["b_predict_batch_udf"], flush=True)
        case["c_clickweight_score"] = clickweight_score(spark, src, str(work / f"cw_{rows}_{dup}"), cfg)
        print("  (c) ", {k: v for k, v in case["c_clickweight_score"].items() if k != "timings_s"}, flush=True)
        for key in ("a_bare_loop", "a_bare_loop_dedup", "b_predict_batch_udf", "c_clickweight_score"):
            if key not in case:
                continue
            r = case[key]
            r["rows_per_s"] = rows / r["wall_s"]
            r["row_tokens_per_s"] = tokens / r["wall_s"]
        c = case["c_clickweight_score"]["rows_per_s"]
        case["c_over_a"] = c / case["a_bare_loop"]["rows_per_s"]
        case["c_over_a_dedup"] = c / case["a_bare_loop_dedup"]["rows_per_s"]
        case["c_over_b"] = c / case["b_predict_batch_udf"]["rows_per_s"] if "b_predict_batch_udf" in case else None
        # An upper bound on (c)'s start-up share: Spark start + the whole 512-row warm-up job (Python
        # workers, model load, and that job's fixed per-job cost) against the timed run.
        case["c_startup_share"] = (spark_start_s + warmup_s) / (spark_start_s + warmup_s
                                                                 + case["c_clickweight_score"]["wall_s"])
        results.append(case)
    spark.stop()

    report = {"benchmark": "score_throughput", "cores": cores, "spark_master": cfg["spark"]["master"],
              "scorer_batch_size": cfg["scorer"]["batch_size"],
              "torch_threads_per_worker": cfg["scorer"]["torch_threads"],
              "arrow_batch": cfg["spark"]["conf"].get("spark.sql.execution.arrow.maxRecordsPerBatch"),
              "model": settings.scorer_path, "spark_start_s": spark_start_s, "warmup_job_s": warmup_s,
              "versions": versions(), "cases": results,
              "command": "python -m benchmarks.score_throughput " + " ".join(argv or sys.argv[1:])}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))

    print()
    print("| rows | dup | distinct pairs | (a) bare rows/s | (a') bare+dedup rows/s | (b) predict_batch_udf rows/s "
          "| (c) clickweight rows/s | c/a | c/a' | c/b | (c) row tokens/s | Spark start + warm-up job, share of (c) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in results:
        b = r.get("b_predict_batch_udf", {}).get("rows_per_s")
        print(f"| {r['rows']} | {r['duplication']} | {r['distinct_pairs']} | {r['a_bare_loop']['rows_per_s']:.1f} "
              f"| {r['a_bare_loop_dedup']['rows_per_s']:.1f} | {fmt(b, '.1f')} "
              f"| {r['c_clickweight_score']['rows_per_s']:.1f} | {r['c_over_a']:.2f} | {r['c_over_a_dedup']:.2f} "
              f"| {fmt(r['c_over_b'], '.2f')} | {r['c_clickweight_score']['row_tokens_per_s']:.0f} "
              f"| {r['c_startup_share']:.1%} |")
    print(f"\nSpark start {spark_start_s:.1f}s, warm-up job {warmup_s:.1f}s; JSON: {args.json}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
