"""The score UDF's training inputs for one batch of real pairs: built by the tokenizer (three calls:
query, title, pair) against built from the token ids the embeddings already have (udfs/scoring/token_inputs.py).

    .venv/bin/python -m benchmarks.training_inputs --pairs 20000

Writes benchmarks/results/training_inputs.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.bench_data import real_pairs
from udfs.scoring import model_loader
from udfs.scoring.bert import PairScorer, ScoringSettings

ROOT = Path(__file__).resolve().parent.parent


def _best_of(fn, n: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(n):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "training_inputs.json"))
    args = p.parse_args(argv)
    path = model_loader.default_model_path()
    scorer = PairScorer(ScoringSettings(path, path, 64, 64, 64, 0, "cpu", "fp32"), "cpu")
    pairs = real_pairs().sample(args.pairs, random_state=0)
    q, t = pairs["query"].str.strip().tolist(), pairs["title"].str.strip().tolist()

    def tokens() -> tuple:
        return scorer.distinct_tokens(q, t)

    known = tokens()
    result = {"pairs": len(q), "distinct_texts": len(known[0]) + len(known[2]),
              "tokenise_distinct_texts_s": _best_of(tokens, args.reps),
              "training_inputs_tokenizer_s": _best_of(lambda: scorer.training_input(q, t), args.reps),
              "training_inputs_from_token_ids_s": _best_of(lambda: scorer.training_input(q, t, known), args.reps),
              "command": "python -m benchmarks.training_inputs " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
