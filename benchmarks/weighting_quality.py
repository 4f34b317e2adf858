"""Does weighting give a better model from the same clicks? Real search data, simulated clicks.

Reads ../shared/data/homedepot_relevance_dev.parquet (real queries, product titles, human
relevance 1..3), splits it by query, turns the train queries into a clickstream with
benchmarks/click_simulator.py, then runs the real CLI (`clickweight score` -> `train` ->
`evaluate`) once per strategy with the same seed and steps, and evaluates every model on the
held-out queries against the TRUE grades (AUC with relevance >= 2.5 positive, NDCG@10).

    .venv/bin/python benchmarks/weighting_quality.py --workdir runs/bench \
        --strategies none,ipw,denoise,combined --seeds 0,1,2 --steps 100

Writes benchmarks/results/weighting_quality.{md,json} (and .png when matplotlib is installed).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import HOMEDEPOT as DATA  # noqa: E402
from click_simulator import SimulatorSettings, simulate, split_by_query  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "clickweight")


def run(cmd: list[str]) -> float:
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{proc.stderr[-4000:]}")
    return time.time() - started


def prepare(work: Path, args, seed: int, position_bias: bool = True) -> tuple[Path, Path, pd.DataFrame]:
    pairs = pd.read_parquet(args.data)
    queries = np.sort(pairs["query"].unique())
    rng = np.random.default_rng(1000 + seed)
    chosen = rng.choice(queries, size=min(len(queries), args.train_queries + args.heldout_queries), replace=False)
    pairs = pairs[pairs["query"].isin(set(chosen))]
    train, held = split_by_query(pairs, args.heldout_queries / len(chosen), seed)
    settings = SimulatorSettings(noise_rate=args.noise, position_bias=position_bias,
                                 sessions_per_query=args.sessions_per_query)
    clicks, truth = simulate(train, settings, seed)
    tag = f"seed{seed}" + ("" if position_bias else "_unbiased")
    data = work / tag
    (data / "clickstream").mkdir(parents=True, exist_ok=True)
    clicks.to_parquet(data / "clickstream" / "part-0.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
    held[["query", "item_id", "title", "relevance"]].to_parquet(data / "heldout.parquet")
    return data, data / "heldout.parquet", truth


def train_and_eval(data: Path, heldout: Path, name: str, sets: list[str], args) -> dict:
    weighted, model, metrics = data / f"w_{name}", data / f"m_{name}", data / f"eval_{name}.json"
    overrides = [a for s in [*args.set, *sets] for a in ("--set", s)]
    score_s = run([CLI, "score", "--input", str(data / "clickstream"), "--output", str(weighted), *overrides])
    train_s = run([CLI, "train", "--input", str(weighted), "--output", str(model), *overrides,
                   "--set", f"train.max_steps_per_epoch={args.steps}", "--set", "train.epochs=1"])
    run([CLI, "evaluate", "--model", str(model), "--input", str(heldout), "--label-col", "relevance",
         "--positive-threshold", "2.5", "--output", str(metrics)])
    m = json.loads(metrics.read_text())
    summary = json.loads((weighted / "_summary.json").read_text())
    trained = json.loads((model / "train_summary.json").read_text())
    return {"run": name, "auc": m["auc"], "ndcg@10": m["ndcg@10"], "rows_out": summary["rows_out"],
            "train_rows": trained["train_rows_per_epoch"] * len(trained["history"]),
            "ess_fraction": summary["weights"]["ess_fraction"], "score_s": round(score_s, 1),
            "train_s": round(train_s, 1), "weighted": str(weighted), "model": str(model)}


def denoise_auroc(weighted: Path, truth: pd.DataFrame) -> float | None:
    from training.metrics import auc

    frame = pd.read_parquet(weighted)
    col = next((c for c in ("noise_score", "suspect") if c in frame.columns), None)
    if col is None:
        return None
    joined = frame[["event_id", col]].merge(truth, on="event_id")
    return auc(joined["is_noise_click"].to_numpy(), joined[col].to_numpy(dtype=float))


def table(rows: list[dict]) -> str:
    cols = ["seed", "run", "auc", "ndcg@10", "train_rows", "ess_fraction", "score_s", "train_s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{r.get(c):.4f}" if isinstance(r.get(c), float) and c in ("auc", "ndcg@10",
                                                                                             "ess_fraction")
                                     else str(r.get(c, "-")) for c in cols) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--strategies", default="none,ipw,denoise,information_gain,combined")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--train-queries", type=int, default=1200)
    p.add_argument("--heldout-queries", type=int, default=400)
    p.add_argument("--sessions-per-query", type=float, default=6.0)
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per run (1 epoch)")
    p.add_argument("--set", action="append", default=[], help="extra config override for every run")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"evaluation data not found at {args.data}: nothing to benchmark")
        return 2
    work, results = Path(args.workdir).resolve(), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    strategies = args.strategies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, extra = [], {}
    best = "none"  # chosen on the first seed, then repeated on the others
    started = time.time()
    for i, seed in enumerate(seeds):
        data, heldout, truth = prepare(work, args, seed)
        run_list = strategies if i == 0 else [s for s in strategies if s in ("none", best)]
        for strategy in run_list:
            r = train_and_eval(data, heldout, strategy, [f"weighting.strategy={strategy}",
                                                         f"train.seed={seed}"], args)
            rows.append({"seed": seed, **r})
            if strategy == "denoise":
                extra[f"denoise_auroc_seed{seed}"] = denoise_auroc(Path(r["weighted"]), truth)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if i == 0:
            first = [r for r in rows if r["seed"] == seed and r["run"] != "none"]
            best = max(first, key=lambda r: r["auc"])["run"] if first else "none"
            extra["best_strategy_seed0"] = best
            # Importance sampling: half the rows, same expected loss.
            r = train_and_eval(data, heldout, f"{best}_keep0.5",
                               [f"weighting.strategy={best}", "sampling.keep_fraction=0.5"], args)
            rows.append({"seed": seed, **r})
            # Position-bias reference: the same queries clicked without position bias.
            udata, uheld, _ = prepare(work, args, seed, position_bias=False)
            r = train_and_eval(udata, uheld, "none_unbiased_clicks", ["weighting.strategy=none"], args)
            rows.append({"seed": seed, **r})
    by = pd.DataFrame(rows)
    spread = by.groupby("run")[["auc", "ndcg@10"]].agg(["mean", "std", "count"]).round(4)
    out = {"args": vars(args), "rows": rows, "extra": extra, "spread": json.loads(spread.to_json()),
           "seconds": round(time.time() - started, 1)}
    (results / "weighting_quality.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = [f"# Weighting quality ({time.strftime('%Y-%m-%d')})", "",
          "Command: `.venv/bin/python benchmarks/weighting_quality.py " + " ".join(argv or sys.argv[1:]) + "`", "",
          table(rows), "", "Spread over seeds (mean / std / n):", "", "```", spread.to_string(), "```", "",
          f"Extra: {json.dumps(extra)}", f"Total: {out['seconds']} s"]
    (results / "weighting_quality.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        agg = by.groupby("run")["auc"].agg(["mean", "std"]).fillna(0).sort_values("mean")
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(agg) + 1.5))
        ax.barh(agg.index, agg["mean"], xerr=agg["std"])
        ax.set_xlabel("held-out AUC vs true relevance (>= 2.5)")
        ax.set_xlim(max(0.0, agg["mean"].min() - 0.05), min(1.0, agg["mean"].max() + 0.03))
        fig.tight_layout()
        fig.savefig(results / "weighting_quality.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
