"""A scoring worker's RSS as it scores batch after batch, outside Spark: one process, one torch
thread, the score UDF's per-batch call (`PairScorer.score` on 2,048 real-title pairs) and, with
--trim, the UDF's `release_free_heap()` after each batch. Prints RSS every 10 batches.

    .venv/bin/python -m benchmarks.worker_rss --pairs 40000 --trim
    MALLOC_ARENA_MAX=2 .venv/bin/python -m benchmarks.worker_rss --pairs 40000   # glibc tunables apply too
    .venv/bin/python -m benchmarks.worker_rss --forwards 800 --rows any   # encoder forwards alone, random
    .venv/bin/python -m benchmarks.worker_rss --forwards 800 --rows 64    # widths; rows random or fixed
"""
from __future__ import annotations

import argparse
import json
import time

import psutil

from benchmarks.bench_data import more_pairs, real_pairs
from udfs.scoring import model_loader
from udfs.scoring.bert import PairScorer, ScoringSettings
from udfs.scoring.device import release_free_heap


def forwards(scorer: PairScorer, n: int, rows: str) -> int:
    """RSS over `n` encoder forwards at random widths (3-64 tokens): kernels cache per shape."""
    import numpy as np
    import torch

    proc, rng = psutil.Process(), np.random.default_rng(0)
    first = None
    with torch.inference_mode(), scorer._autocast():
        for k in range(n):
            b = int(rng.integers(1, 65)) if rows == "any" else int(rows)
            ids = torch.randint(1000, 20000, (b, int(rng.integers(3, 65))))
            scorer.encoder(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
            release_free_heap()
            if k % 100 == 0 or k == n - 1:
                rss = round(proc.memory_info().rss / 2**20)
                first = first or rss
                print(json.dumps({"forwards": k + 1, "rows": rows, "rss_mib": rss}), flush=True)
    print(json.dumps({"precision": scorer.precision, "rows": rows, "first_mib": first, "last_mib": rss}))
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=40_000)
    p.add_argument("--batch", type=int, default=2048, help="rows per UDF call (conf/local.yaml's Arrow batch)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--trim", action="store_true", help="release_free_heap() after each batch, as the UDF does")
    p.add_argument("--forwards", type=int, default=0, help="instead: this many bare encoder forwards")
    p.add_argument("--rows", default="64", help="with --forwards: rows per forward, a number or 'any' (1-64)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    path = model_loader.default_model_path()
    scorer = PairScorer(ScoringSettings(path, path, 64, 64, 64, 1, "cpu", args.precision), "cpu")
    if args.forwards:
        return forwards(scorer, args.forwards, args.rows)
    pairs = more_pairs(real_pairs(), args.pairs, 0).head(args.pairs)
    proc, start, trace = psutil.Process(), time.perf_counter(), []
    for k, i in enumerate(range(0, len(pairs), args.batch)):
        rows = pairs.iloc[i:i + args.batch]
        scorer.score(rows["query"], rows["title"])
        if args.trim:
            release_free_heap()
        if k % 10 == 0 or i + args.batch >= len(pairs):
            trace.append({"pairs": min(i + args.batch, len(pairs)), "rss_mib": round(proc.memory_info().rss / 2**20),
                          "s": round(time.perf_counter() - start, 1)})
            print(json.dumps(trace[-1]), flush=True)
    print(json.dumps({"precision": scorer.precision, "trim": args.trim, "first_mib": trace[0]["rss_mib"],
                      "last_mib": trace[-1]["rss_mib"], "max_mib": max(t["rss_mib"] for t in trace)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
