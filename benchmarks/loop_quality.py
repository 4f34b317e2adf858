"""The iterative loop (seeds 000/001) on the weighting benchmark's real-data clickstream.

Round 0 scores with the sentence encoder (zero-shot) and weights; `clickweight train` fine-tunes the
cross-encoder; round k >= 1 re-scores the same clickstream with round k-1's model as `scorer.path`,
reweights and trains again: what `clickweight pipeline --set rounds=K` does, here on the Home Depot
queries and simulated clicks of benchmarks/weighting_quality.py, with its two yardsticks per round
(the weighted-loss target on the training pairs, the trained model on the held-out queries).
Real CLIs throughout (score, train, evaluate); CPU-sized training budget, so read the model column
as "does the loop run and what does a weak round-k scorer do to the weights", not as final quality.

    .venv/bin/python -m benchmarks.loop_quality                      # loss, 2 rounds, 100 steps, seed 0
    .venv/bin/python -m benchmarks.loop_quality --strategy el2n --rounds 3 --steps 300

Writes benchmarks/results/loop_quality.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.weighting_quality import DATA, ROOT, prepare, score_run, table, train_run, zero_shot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "loop"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--strategy", default="loss", help="a strategy whose weights depend on the scorer's p")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per round (1 epoch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-queries", type=int, default=600)
    p.add_argument("--heldout-queries", type=int, default=200)
    p.add_argument("--sessions-per-query", type=float, default=6.0)
    p.add_argument("--noise-share", type=float, default=0.2)
    p.add_argument("--set", action="append", default=[], help="extra config override for every run")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"evaluation data not found at {args.data}: nothing to benchmark")
        return 2
    started = time.time()
    data, truth = prepare(Path(args.workdir).resolve(), args, args.seed)
    rows: list[dict] = [{"seed": args.seed, "run": "zero_shot", **{
        k.replace("zero_shot_", "model_"): v for k, v in zero_shot(data).items()}}]
    previous = None
    for k in range(args.rounds):
        sets = [f"weighting.strategy={args.strategy}"] + ([f"scorer.path={previous}"] if previous else [])
        r = {"seed": args.seed, **score_run(data, truth, f"{args.strategy}_round{k}", sets, args)}
        r.update(train_run(data, r, args.seed, args))
        summary = json.loads((Path(r["weighted"]) / "_summary.json").read_text())
        r["scorer_kind"] = summary.get("scorer_kind")
        rows.append(r)
        previous = str(data / f"m_{r['run']}")
        print(table([r]).splitlines()[-1], flush=True)
    out = {"args": vars(args), "rows": rows, "seconds": round(time.time() - started, 1)}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "loop_quality.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = [f"# The loop on real search data ({time.strftime('%Y-%m-%d')})", "",
          "Command: `.venv/bin/python -m benchmarks.loop_quality " + " ".join(argv or sys.argv[1:]) + "`", "",
          f"Strategy {args.strategy}, {args.rounds} rounds, {args.steps} steps per round (CPU), seed {args.seed}; "
          f"{args.train_queries} train / {args.heldout_queries} held-out queries. Round 0 scores with the "
          "sentence encoder; round k with round k-1's model. target_* rank the training pairs by the "
          "weighted-loss target, model_* the trained model on the held-out queries (true grades).", "",
          table(rows), "", f"Total: {out['seconds']} s"]
    (results / "loop_quality.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
