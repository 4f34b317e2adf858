"""Does weighting give a better model from the same clicks? Real search data, simulated clicks.

Reads ../shared/data/homedepot_relevance_dev.parquet (real queries, product titles, human
relevance 1..3), splits it by query, turns the train queries into a clickstream with
benchmarks/click_simulator.py (position bias, a share of noise clicks, purchases, repeated
sessions), runs the real `clickweight score` once per strategy, and measures every weighting
against the TRUE grades in two ways:

  target   what the weighted loss asks the trainee to learn. A model trained with weighted BCE to
           convergence predicts, for a (query, title) pair, sum(w * clicked) / sum(w) over that
           pair's rows (the minimiser of the pair's weighted log loss). That per-pair target is
           ranked against the true grades of the training pairs: AUC (grade >= 2.5 positive) and
           NDCG@10 per query. It isolates the weighting from the trainee's compute budget: no
           training, so every strategy and 3 seeds fit in ~40 minutes on 2 CPU cores. Pairs that
           importance sampling dropped completely get the weighted base rate (a tie).
  model    (--train-runs, off unless named) `clickweight train` then `clickweight evaluate` on
           the held-out queries: the trained cross-encoder's AUC / NDCG@10 (the project's quality
           yardstick means; needs a GPU-sized step budget to leave chance level, see the note).

Also: denoise's AUROC at flagging the injected noise clicks (noise_score among clicked rows;
also with denoise_model=scorer), and importance sampling at keep_fraction 0.5 against all rows.
Position bias is split in two with oracle rows computed from the simulator's truth: the same
queries clicked without position bias (what was lost), the examined rows alone (the best any
debiasing can do: the rest is information never observed), ipw with the true propensities; and
none / ipw again under a near-random logging ranker, where position says little about relevance.

    .venv/bin/python -m benchmarks.weighting_quality                      # the full matrix, 3 seeds
    .venv/bin/python -m benchmarks.weighting_quality --seeds 0 --strategies none,ipw --train-runs none,ipw --steps 300

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

from benchmarks.bench_data import HOMEDEPOT as DATA
from training.metrics import auc, ndcg_at_k
from udfs.clickstream.simulate import SimulatorSettings, click_probability, simulate, split_by_query
from udfs.weighting import strategies

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "clickweight")
STRATEGIES = ",".join(n for n in strategies.names() if n != "mlm_quality")  # mlm_quality needs an MLM head
POSITIVE = 2.5


def run(cmd: list[str]) -> float:
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.time() - started


def sample_queries(data: str, train_queries: int, heldout_queries: int, seed: int
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed's graded pairs of train and held-out queries, drawn at random and split by query."""
    pairs = pd.read_parquet(data)
    queries = np.sort(pairs["query"].unique())
    rng = np.random.default_rng(1000 + seed)
    chosen = rng.choice(queries, size=min(len(queries), train_queries + heldout_queries), replace=False)
    pairs = pairs[pairs["query"].isin(set(chosen))]
    return split_by_query(pairs, heldout_queries / len(chosen), seed)


def prepare(work: Path, args, seed: int, position_bias: bool = True,
            ranker_noise: float | None = None) -> tuple[Path, pd.DataFrame]:
    """Simulated clickstream of the train queries + held-out pairs; (folder, truth per event)."""
    train, held = sample_queries(args.data, args.train_queries, args.heldout_queries, seed)
    settings = SimulatorSettings(noise_share=args.noise_share, position_bias=position_bias,
                                 sessions_per_query=args.sessions_per_query,
                                 **({} if ranker_noise is None else {"ranker_noise": ranker_noise}))
    clicks, truth = simulate(train, settings, seed)
    data = work / (f"seed{seed}" + ("" if position_bias else "_unbiased")
                   + ("" if ranker_noise is None else f"_ranker{ranker_noise:g}"))
    (data / "clickstream").mkdir(parents=True, exist_ok=True)
    clicks.to_parquet(data / "clickstream" / "part-0.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
    held[["query", "item_id", "title", "relevance"]].to_parquet(data / "heldout.parquet")
    truth = truth.merge(clicks[["event_id", "query", "item_id", "position", "clicked"]], on="event_id")
    # The simulator's own P(real click) per row: the best any noise detector could rank by.
    exam = 1.0 / truth["position"] ** settings.eta if position_bias else 1.0
    truth["p_true_click"] = exam * click_probability(truth["true_relevance"].to_numpy(), settings)
    return data, truth


def target_quality(weighted: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """AUC / NDCG@10 of the converged weighted-loss target sum(w y) / sum(w) per training pair."""
    w = weighted[["event_id", "weight"]].merge(truth, on="event_id")
    w["wy"] = w["weight"] * w["clicked"]
    per_pair = w.groupby(["query", "item_id"], sort=True).agg(wy=("wy", "sum"), w=("weight", "sum"))
    shown = truth.groupby(["query", "item_id"], sort=True)["true_relevance"].first().to_frame()
    shown = shown.join(per_pair, how="left")
    base = float(w["wy"].sum() / w["weight"].sum())
    target = (shown["wy"] / shown["w"]).fillna(base).to_numpy()
    grade = shown["true_relevance"].to_numpy()
    ndcg, _ = ndcg_at_k(shown.index.get_level_values("query").to_numpy(), grade, target, k=10)
    return {"target_auc": auc(grade >= POSITIVE, target), "target_ndcg@10": ndcg,
            "pairs": int(len(shown)), "pairs_without_rows": int(shown["w"].isna().sum())}


def examined_only(truth: pd.DataFrame) -> dict:
    """Oracle debiasing: the target when the rows nobody looked at are left out (clicks always count).
    Every reweighting of the biased log can at best reach this; unbiased - examined_only is the
    information that unexamined impressions never carried, which no weighting can recover."""
    looked = truth[truth["examined"] | (truth["clicked"] == 1)]
    return target_quality(looked.assign(weight=1.0)[["event_id", "weight"]], truth)


def true_propensity_ipw(truth: pd.DataFrame, floor: float = 0.05) -> dict:
    """ipw with the simulator's true examination 1/k**eta (floored like propensity_min): separates
    what ipw as a method does from what the regression-EM estimate of the propensities adds."""
    theta = np.maximum(1.0 / truth["position"].to_numpy() ** SimulatorSettings().eta, floor)
    w = np.where(truth["clicked"].to_numpy() == 1, 1.0 / theta, 1.0)
    return target_quality(pd.DataFrame({"event_id": truth["event_id"], "weight": w}), truth)


def noise_auroc(weighted: pd.DataFrame, truth: pd.DataFrame) -> tuple[float | None, float | None]:
    """How well noise_score ranks the injected noise clicks above the real ones (clicked rows only),
    and the same for the oracle that knows the simulator's true P(real click) of each row."""
    j = weighted[["event_id", "noise_score"]].merge(truth, on="event_id")
    j = j[j["clicked"] == 1]
    noise = j["is_noise_click"].to_numpy()
    return auc(noise, j["noise_score"].to_numpy(dtype=float)), auc(noise, -j["p_true_click"].to_numpy())


def score_run(data: Path, truth: pd.DataFrame, name: str, sets: list[str], args) -> dict:
    weighted = data / f"w_{name}"
    overrides = [a for s in [*args.set, *sets] for a in ("--set", s)]
    score_s = run([CLI, "score", "--input", str(data / "clickstream"), "--output", str(weighted), *overrides])
    frame = pd.read_parquet(weighted, columns=["event_id", "weight", "noise_score"])
    summary = json.loads((weighted / "_summary.json").read_text())
    out = {"run": name, **target_quality(frame, truth), "rows_out": summary["rows_out"],
           "ess_fraction": summary["weights"]["ess_fraction"], "score_s": round(score_s, 1),
           "weighted": str(weighted)}
    if name.startswith("denoise"):
        out["noise_auroc"], out["noise_auroc_oracle"] = noise_auroc(frame, truth)
    return out


def train_run(data: Path, r: dict, seed: int, args) -> dict:
    """Real `clickweight train` on the weighted output, then `evaluate` on the held-out queries."""
    model, metrics = data / f"m_{r['run']}", data / f"eval_{r['run']}.json"
    overrides = [a for s in args.set for a in ("--set", s)]
    train_s = run([CLI, "train", "--input", r["weighted"], "--output", str(model), *overrides,
                   "--set", f"train.max_steps_per_epoch={args.steps}", "--set", "train.epochs=1",
                   "--set", f"train.seed={seed}"])
    run([CLI, "evaluate", "--model", str(model), "--input", str(data / "heldout.parquet"), "--label-col",
         "relevance", "--positive-threshold", str(POSITIVE), "--output", str(metrics)])
    m = json.loads(metrics.read_text())
    trained = json.loads((model / "train_summary.json").read_text())
    return {"model_auc": m["auc"], "model_ndcg@10": m["ndcg@10"], "train_s": round(train_s, 1),
            "train_rows": trained["train_rows_per_epoch"] * len(trained["history"])}


def zero_shot(data: Path) -> dict:
    """The round-0 sentence encoder's cosine on the held-out queries (no training): the reference line."""
    out = data / "eval_zero_shot.json"
    from udfs.scoring.model_loader import default_model_path

    package = default_model_path()
    run([CLI, "evaluate", "--model", package, "--input", str(data / "heldout.parquet"), "--label-col",
         "relevance", "--positive-threshold", str(POSITIVE), "--output", str(out)])
    m = json.loads(out.read_text())
    return {"zero_shot_auc": m["auc"], "zero_shot_ndcg@10": m["ndcg@10"]}


COLUMNS = ["seed", "run", "target_auc", "target_ndcg@10", "rows_out", "ess_fraction", "noise_auroc",
           "noise_auroc_oracle", "score_s",
           "model_auc", "model_ndcg@10", "train_rows", "train_s"]


def table(rows: list[dict]) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) and c not in ("score_s", "train_s")
                 else str(r.get(c, "-")) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--strategies", default=STRATEGIES, help="run on the first seed")
    p.add_argument("--seeds", default="0,1,2", help="later seeds repeat none, the best, its keep-0.5 run, "
                                                    "ipw, denoise and the unbiased reference")
    p.add_argument("--train-queries", type=int, default=1000)
    p.add_argument("--heldout-queries", type=int, default=300)
    p.add_argument("--sessions-per-query", type=float, default=6.0)
    p.add_argument("--noise-share", type=float, default=0.2, help="share of clicks that are noise clicks")
    p.add_argument("--random-ranker-noise", type=float, default=5.0,
                   help="ranker noise (sd, grades 1..3) of the weakly informative logging ranker for the ipw check")
    p.add_argument("--train-runs", default="", help="runs to also train + evaluate on held-out (e.g. none,best)")
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per trained run (1 epoch)")
    p.add_argument("--set", action="append", default=[], help="extra config override for every run")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"evaluation data not found at {args.data}: nothing to benchmark")
        return 2
    work, results = Path(args.workdir).resolve(), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    train_runs = [s for s in args.train_runs.split(",") if s]
    rows: list[dict] = []
    started = time.time()
    best, best_pair = "none", []

    def record(seed: int, data: Path, truth: pd.DataFrame, name: str, sets: list[str]) -> None:
        r = {"seed": seed, **score_run(data, truth, name, sets, args)}
        base_name = name.removesuffix("_keep0.5").removesuffix("_unbiased_clicks")
        if name in train_runs or base_name in train_runs or ("best" in train_runs and base_name == best):
            r.update(train_run(data, r, seed, args))
        rows.append(r)
        print(table([r]).splitlines()[-1], flush=True)

    def oracle(seed: int, name: str, truth: pd.DataFrame, measure=examined_only) -> None:
        rows.append({"seed": seed, "run": name, **measure(truth)})
        print(table([rows[-1]]).splitlines()[-1], flush=True)

    for i, seed in enumerate(seeds):
        data, truth = prepare(work, args, seed)
        if i == 0:
            for strategy in args.strategies.split(","):
                record(seed, data, truth, strategy, [f"weighting.strategy={strategy}"])
            singles = sorted((r for r in rows if r["run"] not in ("none", "combined")),
                             key=lambda r: -r["target_auc"])
            best_pair = [r["run"] for r in singles[:2]]
            if len(best_pair) == 2:
                exps = "{" + ", ".join(f"{s}: 1.0" for s in best_pair) + "}"
                record(seed, data, truth, "combined_best", ["weighting.strategy=combined",
                                                            f"weighting.combined={exps}"])
            candidates = [r for r in rows if r["run"] != "none"]
            best = max(candidates, key=lambda r: r["target_auc"])["run"] if candidates else "none"
        else:
            for name in dict.fromkeys(["none", best, "ipw", "denoise"]):
                strategy = "combined" if name == "combined_best" else name
                sets = [f"weighting.strategy={strategy}"]
                if name == "combined_best":
                    sets.append("weighting.combined={" + ", ".join(f"{s}: 1.0" for s in best_pair) + "}")
                record(seed, data, truth, name, sets)
        # Importance sampling: about half the rows, the same expected loss.
        strategy = "combined" if best == "combined_best" else best
        sets = [f"weighting.strategy={strategy}", "sampling.keep_fraction=0.5", f"sampling.seed={seed}"]
        if best == "combined_best":
            sets.append("weighting.combined={" + ", ".join(f"{s}: 1.0" for s in best_pair) + "}")
        record(seed, data, truth, f"{best}_keep0.5", sets)
        # Position-bias reference: the same queries and sessions clicked without position bias.
        udata, utruth = prepare(work, args, seed, position_bias=False)
        record(seed, udata, utruth, "none_unbiased_clicks", ["weighting.strategy=none"])
        oracle(seed, "oracle_examined_only", truth)
        oracle(seed, "oracle_ipw_true_propensity", truth, true_propensity_ipw)
        if i == 0:  # denoise on the scorer's p alone, for the click model's share of the noise AUROC
            record(seed, data, truth, "denoise_scorer", ["weighting.strategy=denoise",
                                                         "weighting.denoise_model=scorer"])
        # ipw where position carries little of the ranker's knowledge: a near-random logging ranker.
        rdata, rtruth = prepare(work, args, seed, ranker_noise=args.random_ranker_noise)
        for name in ("none", "ipw"):
            record(seed, rdata, rtruth, f"{name}_random_ranker", [f"weighting.strategy={name}"])
        oracle(seed, "oracle_examined_only_random_ranker", rtruth)
        if train_runs:
            rows[-1].update(zero_shot(data))

    by = pd.DataFrame(rows)
    metrics_cols = [c for c in ("target_auc", "target_ndcg@10", "noise_auroc", "noise_auroc_oracle",
                                "model_auc", "model_ndcg@10")
                    if c in by.columns]
    spread = by.groupby("run", sort=False)[metrics_cols].agg(["mean", "std", "count"]).round(4)
    findings = summarise(by, best)
    out = {"args": vars(args), "best_strategy": best, "combined_best": best_pair, "rows": rows,
           "findings": findings, "spread": json.loads(spread.to_json()), "seconds": round(time.time() - started, 1)}
    (results / "weighting_quality.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    md = [f"# Weighting quality ({time.strftime('%Y-%m-%d')})", "",
          "Command: `.venv/bin/python -m benchmarks.weighting_quality " + " ".join(argv or sys.argv[1:]) + "`", "",
          f"Sizes: {args.train_queries} train queries ({args.sessions_per_query} sessions per query on average), "
          f"{args.heldout_queries} held-out queries, noise clicks {args.noise_share:.0%} of clicks; seeds {seeds}.",
          "", table(rows), "", "Mean / std / n over seeds:", "", "```", spread.to_string(), "```", "",
          "Findings:", "", *[f"- {k}: {v}" for k, v in findings.items()], "", f"Total: {out['seconds']} s"]
    (results / "weighting_quality.md").write_text("\n".join(md) + "\n")
    plot(by, results)
    print("\n".join(md))
    return 0


def summarise(by: pd.DataFrame, best: str) -> dict:
    """The issue's targets, computed from the rows (per-seed differences, so seed effects cancel)."""
    def per_seed(run: str, col: str = "target_auc") -> pd.Series:
        return by[by["run"] == run].set_index("seed")[col]

    out: dict = {}
    top = per_seed(best)
    for col in ("target_auc", "target_ndcg@10"):
        gain = (per_seed(best, col) - per_seed("none", col)).dropna()
        spread = by[by["run"] == "none"][col].std()
        out[f"{best} - none, {col}"] = (f"{gain.mean():+.4f} (per seed {[round(x, 4) for x in gain]}); "
                                        f"seed-to-seed sd of none {spread:.4f}")
    for suffix, label in (("", "logging ranker"), ("_random_ranker", "near-random logging ranker")):
        for col in ("target_auc", "target_ndcg@10"):
            none_s = per_seed(f"none{suffix}", col)
            ipw_s, exam_s = per_seed(f"ipw{suffix}", col), per_seed(f"oracle_examined_only{suffix}", col)
            if not len(ipw_s) or not len(exam_s):
                continue
            bias = (exam_s - none_s).dropna()
            gain = (ipw_s - none_s).dropna()
            text = (f"bias loss (examined-only oracle - none) {bias.mean():+.4f}; ipw - none {gain.mean():+.4f} "
                    f"(per seed {[round(x, 4) for x in gain]})")
            if bias.mean() > 0:
                text += f" = {gain.mean() / bias.mean():.0%} of the bias loss recovered"
            else:
                text += " (position bias cost this target nothing: nothing for ipw to recover)"
            if not suffix:
                info = (per_seed("none_unbiased_clicks", col) - exam_s).dropna()
                if len(info):
                    text += f"; information loss (unbiased clicks - examined-only) {info.mean():+.4f}"
            out[f"position bias, {label}, {col}"] = text
    if "noise_auroc" in by.columns:
        d = by[by["run"] == "denoise"]["noise_auroc"].dropna()
        o = by[by["run"] == "denoise"]["noise_auroc_oracle"].dropna()
        out["denoise noise-click AUROC"] = (f"{d.mean():.4f} (per seed {[round(x, 4) for x in d]}); "
                                            f"oracle with the simulator's true P(click) {o.mean():.4f}")
    keep = (per_seed(f"{best}_keep0.5") - top).dropna()
    if len(keep):
        out[f"keep_fraction 0.5 - all rows ({best}), target_auc"] = (
            f"{keep.mean():+.4f} (per seed {[round(x, 4) for x in keep]})")
    return out


def plot(by: pd.DataFrame, results: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -r benchmarks/requirements.txt)")
        return
    agg = by.groupby("run")["target_auc"].agg(["mean", "std"]).fillna(0).sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(agg) + 1.5))
    ax.barh(agg.index, agg["mean"], xerr=agg["std"])
    ax.set_xlabel(f"AUC of the weighted-loss target vs true relevance (>= {POSITIVE})")
    ax.set_xlim(max(0.0, agg["mean"].min() - 0.03), min(1.0, agg["mean"].max() + 0.02))
    fig.tight_layout()
    fig.savefig(results / "weighting_quality.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
