"""Issue 24's learning curve: does the default on half the impressions match naive on all of them?

Tabulates `benchmarks.quality` results made at several `--sessions` (mean sessions per query, so
impressions) on the same split, seeds, click models and held-out queries: per click model and size N
(naive's sessions), per seed, the paired AUC difference default@N/2 − naive@N on the seed's held-out
queries (the same pairs for every size: the held-out set is a function of the seed and the query
counts), with a 95 % bootstrap interval over held-out queries, combined over seeds as in docs/quality.md;
and, from the same draws, what doubling the log buys naive (naive@N − naive@N/2) and the default's share
of it ((default@N/2 − naive@N/2) / (naive@N − naive@N/2), from the means over seeds).

The sizes come from the results files' own `args.sessions`; nothing is trained here.

    R=benchmarks/results
    .venv/bin/python -m benchmarks.learning_curve --tag dev_s0 \\
        --include $R/quality_dev_lc_s2_s0.json --include $R/quality_dev_lc_s4_s0.json \\
        --include $R/quality_dev_lc_s8_s0.json --include $R/quality_dev_lc_s16_s0.json

Writes benchmarks/results/learning_curve_TAG.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.protocol import bootstrap_auc_differences, combine_seeds
from benchmarks.quality import POSITIVE, load_predictions

ROOT = Path(__file__).resolve().parent.parent
SAME = ("split", "train_queries", "heldout_queries")  # what every included file must share
BASELINE, CANDIDATE = "naive", "default"


def runs_by_size(files: list[dict]) -> pd.DataFrame:
    """Every trained row of the results files, with its file's sessions; the latest row of a repeated
    (seed, click model, config, sessions) counts once. Refuses files of other splits or query counts."""
    first = files[0]["args"]
    for f in files[1:]:
        differ = [k for k in SAME if f["args"].get(k) != first.get(k)]
        if differ:
            raise SystemExit(f"the results files differ in {differ}: their held-out sets are not the same")
    rows = [{**r, "sessions": float(f["args"]["sessions"])} for f in files for r in f["runs"]
            if r.get("click_model") != "-" and "auc" in r]
    return pd.DataFrame(rows).drop_duplicates(["seed", "click_model", "config", "sessions"], keep="last")


def doubling_share(default_half: float, naive_half: float, naive_full: float) -> float:
    """The default's share of what doubling the log buys naive (nan when doubling buys naive nothing)."""
    gain = naive_full - naive_half
    return float((default_half - naive_half) / gain) if gain > 0 else float("nan")


def curve(frame: pd.DataFrame, replicates: int) -> list[dict]:
    """Per click model and size N (naive's sessions) with default at N/2 on at least one seed."""
    out = []
    by = {k: g.set_index("seed") for k, g in frame.groupby(["click_model", "config", "sessions"])}
    for cm in dict.fromkeys(frame["click_model"]):
        for n in sorted(frame.loc[(frame["click_model"] == cm) & (frame["config"] == BASELINE), "sessions"].unique()):
            full, half = by.get((cm, BASELINE, n)), by.get((cm, BASELINE, n / 2))
            cand = by.get((cm, CANDIDATE, n / 2))
            if cand is None or half is None:
                continue
            seeds = sorted(set(full.index) & set(half.index) & set(cand.index))
            if not seeds:
                continue
            draws: dict[str, list[np.ndarray]] = {"cand": [], "half": []}
            for s in seeds:
                ref = load_predictions(full.loc[s])
                scores = {"full": ref["score"].to_numpy(), "cand": load_predictions(cand.loc[s])["score"].to_numpy(),
                          "half": load_predictions(half.loc[s])["score"].to_numpy()}
                boot = bootstrap_auc_differences(ref["query"].to_numpy(), ref["relevance"].to_numpy() >= POSITIVE,
                                                 scores, "full", replicates, seed=s)
                draws["cand"].append(boot["cand"])
                draws["half"].append(-boot["half"])  # naive@N − naive@N/2
            a_full, a_half = full.loc[seeds, "auc"].to_numpy(), half.loc[seeds, "auc"].to_numpy()
            a_cand = cand.loc[seeds, "auc"].to_numpy()
            out.append({
                "click_model": cm, "sessions": n, "seeds": seeds,
                "impressions": {"full": float(full.loc[seeds, "impressions"].mean()),
                                "half": float(half.loc[seeds, "impressions"].mean())},
                "auc": {"naive_full": a_full.tolist(), "naive_half": a_half.tolist(), "default_half": a_cand.tolist()},
                "default_half_minus_naive_full": combine_seeds(a_cand - a_full, draws["cand"]),
                "doubling_gain_naive": combine_seeds(a_full - a_half, draws["half"]),
                "default_share_of_doubling": doubling_share(a_cand.mean(), a_half.mean(), a_full.mean()),
            })
    return out


def markdown(rows: list[dict]) -> str:
    def ci(v: dict) -> str:
        return f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]"

    lines = ["| click model | N: naive's impressions (sessions) | seeds | naive@N | naive@N/2 | default@N/2 "
             "| default@N/2 − naive@N [95 % CI] | naive@N − naive@N/2 [95 % CI] | default's share of the doubling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["auc"]
        share = r["default_share_of_doubling"]
        lines.append(
            f"| {r['click_model']} | {r['impressions']['full']:,.0f} ({r['sessions']:g}) | {len(r['seeds'])} "
            f"| {np.mean(a['naive_full']):.4f} | {np.mean(a['naive_half']):.4f} | {np.mean(a['default_half']):.4f} "
            f"| {ci(r['default_half_minus_naive_full'])} | {ci(r['doubling_gain_naive'])} "
            f"| {'-' if share != share else f'{share:.0%}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--include", action="append", required=True, help="a benchmarks.quality results JSON")
    p.add_argument("--tag", required=True)
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap draws per seed")
    args = p.parse_args(argv)
    files = [json.loads(Path(f).read_text()) for f in args.include]
    rows = curve(runs_by_size(files), args.replicates)
    if not rows:
        raise SystemExit("no size N with naive at N and N/2 and the default at N/2 in the included files")
    stem = ROOT / "benchmarks" / "results" / f"learning_curve_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
