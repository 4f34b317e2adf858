"""Issue 24's learning curve: does the default on half the impressions match naive on all of them?

Tabulates `benchmarks.quality` results made at several `--sessions` (mean sessions per query, so
impressions) on the same split, seeds, click models and held-out queries: per click model and size N
(naive's sessions), per seed, the paired AUC difference default@N/2 − naive@N on the seed's held-out
queries (the same pairs for every size: the held-out set is a function of the seed and the query
counts), with two 95 % intervals as in benchmarks/quality.py: a bootstrap over held-out queries that is
joint over seeds (their held-out queries overlap: one resample of their union per draw) and a t interval
over seeds; and, from the same draws, what doubling the log buys naive (naive@N − naive@N/2) and the
default's share of it ((default@N/2 − naive@N/2) / (naive@N − naive@N/2), from the means over seeds, with
a percentile interval from the joint draws).

Each row's size is its own (benchmarks.quality.row_provenance: the row's `sessions`, else its scores
path's `<click model>_s<sessions>` folder, else its file's arguments); nothing is trained here.

    R=benchmarks/results
    .venv/bin/python -m benchmarks.learning_curve --tag dev_s0 \\
        --include $R/quality_dev_lc_s2_s0.json --include $R/quality_dev_lc_s4_s0.json \\
        --include $R/quality_dev_lc_s8_s0.json --include $R/quality_dev_lc_s16_s0.json
    # the test form: today's default is `default_ubm` in the test files (beside the position-based `default`)
    .venv/bin/python -m benchmarks.learning_curve --tag test_s01 --candidate default_ubm \\
        --include $R/quality_test_test_ubm_s0.json --include $R/quality_test_lc_test_s8_s0.json ...

Writes benchmarks/results/learning_curve_TAG.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.protocol import combine_seeds, joint_bootstrap_auc_differences, share_interval
from benchmarks.quality import POSITIVE, check_same_rows, load_predictions, row_provenance

ROOT = Path(__file__).resolve().parent.parent
SAME = ("split", "train_queries", "heldout_queries")  # what every included row must share
BASELINE, CANDIDATE = "naive", "default"


def runs_by_size(files: list[dict]) -> pd.DataFrame:
    """Every trained row of the results files, with its own split, query counts and sessions
    (row_provenance); the latest row of a repeated (seed, click model, config, sessions) counts once.
    Refuses rows of other splits or query counts than the first's (unknown counts included), and rows
    whose sessions cannot be told."""
    rows = [{**r, **row_provenance(r, f.get("args"))} for f in files for r in f["runs"]
            if r.get("click_model") != "-" and "auc" in r]
    if not rows:
        raise SystemExit("no trained row in the included files")
    first = rows[0]
    for r in rows[1:]:
        differ = [k for k in SAME if r[k] != first[k]]
        if differ:
            raise SystemExit(f"the results rows differ in {differ} ({[(first[k], r[k]) for k in differ]}): "
                             "their held-out sets are not the same")
    unsized = [(r["seed"], r["click_model"], r["config"]) for r in rows if r["sessions"] is None]
    if unsized:
        raise SystemExit(f"rows whose sessions cannot be told (no sessions, no run path, no run arguments): {unsized}")
    return pd.DataFrame(rows).drop_duplicates(["seed", "click_model", "config", "sessions"], keep="last")


def doubling_share(default_half: float, naive_half: float, naive_full: float) -> float:
    """The default's share of what doubling the log buys naive (nan when doubling buys naive nothing)."""
    gain = naive_full - naive_half
    return float((default_half - naive_half) / gain) if gain > 0 else float("nan")


def curve(frame: pd.DataFrame, replicates: int, seed: int = 0, candidate: str = CANDIDATE) -> list[dict]:
    """Per click model and size N (naive's sessions) with the candidate (the default) at N/2 on at least one
    seed. `candidate`: the configuration that stands for the default (on the test split today's default is
    `default_ubm`, beside the position-based `default` it replaced). Deterministic given `seed` (the joint
    bootstrap's)."""
    out = []
    by = {k: g.set_index("seed") for k, g in frame.groupby(["click_model", "config", "sessions"])}
    for cm in dict.fromkeys(frame["click_model"]):
        for n in sorted(frame.loc[(frame["click_model"] == cm) & (frame["config"] == BASELINE), "sessions"].unique()):
            full, half = by.get((cm, BASELINE, n)), by.get((cm, BASELINE, n / 2))
            cand = by.get((cm, candidate, n / 2))
            if cand is None or half is None:
                continue
            seeds = sorted(set(full.index) & set(half.index) & set(cand.index))
            if not seeds:
                continue
            held = {}
            for s in seeds:
                ref = load_predictions(full.loc[s])
                scores = {"full": ref["score"].to_numpy()}
                for name, sub in (("cand", cand), ("half", half)):
                    p = load_predictions(sub.loc[s])
                    check_same_rows(ref, p, f"seed {s} {cm} {name} (N = {n:g})")
                    scores[name] = p["score"].to_numpy()
                held[s] = (ref["query"].to_numpy(), ref["relevance"].to_numpy() >= POSITIVE, scores)
            boot = joint_bootstrap_auc_differences(held, "full", replicates, seed=seed)
            cand_draws = [boot["cand"][s] for s in seeds]              # default@N/2 − naive@N
            gain_draws = [-boot["half"][s] for s in seeds]             # naive@N − naive@N/2
            share_draws = [boot["cand"][s] - boot["half"][s] for s in seeds]  # default@N/2 − naive@N/2
            a_full, a_half = full.loc[seeds, "auc"].to_numpy(), half.loc[seeds, "auc"].to_numpy()
            a_cand = cand.loc[seeds, "auc"].to_numpy()
            out.append({
                "click_model": cm, "sessions": n, "seeds": seeds, "candidate": candidate,
                "impressions": {"full": float(full.loc[seeds, "impressions"].mean()),
                                "half": float(half.loc[seeds, "impressions"].mean())},
                "auc": {"naive_full": a_full.tolist(), "naive_half": a_half.tolist(), "default_half": a_cand.tolist()},
                "default_half_minus_naive_full": combine_seeds(a_cand - a_full, cand_draws),
                "doubling_gain_naive": combine_seeds(a_full - a_half, gain_draws),
                "default_share_of_doubling": doubling_share(a_cand.mean(), a_half.mean(), a_full.mean()),
                "default_share_of_doubling_ci": share_interval(share_draws, gain_draws),
            })
    return out


def markdown(rows: list[dict]) -> str:
    def ci(v: dict) -> str:
        return f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]"

    def over_seeds(v: dict) -> str:
        return "-" if v.get("t_lo") is None else f"[{v['t_lo']:+.4f}, {v['t_hi']:+.4f}]"

    def share_text(r: dict) -> str:
        share, c = r["default_share_of_doubling"], r.get("default_share_of_doubling_ci") or {}
        if share != share:
            return "-"
        if c.get("lo") is None:
            return f"{share:.0%} [n/a]"
        return f"{share:.0%} [{round(100 * c['lo'])}, {round(100 * c['hi'])}]"

    lines = ["| click model | N: naive's impressions (sessions) | seeds | naive@N | naive@N/2 | default@N/2 "
             "| default@N/2 − naive@N [95 % CI: held-out queries] | [95 % CI: over seeds (t)] "
             "| naive@N − naive@N/2 [95 % CI: held-out queries] | [95 % CI: over seeds (t)] "
             "| default's share of the doubling [95 % CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = r["auc"]
        d, g = r["default_half_minus_naive_full"], r["doubling_gain_naive"]
        lines.append(
            f"| {r['click_model']} | {r['impressions']['full']:,.0f} ({r['sessions']:g}) | {len(r['seeds'])} "
            f"| {np.mean(a['naive_full']):.4f} | {np.mean(a['naive_half']):.4f} | {np.mean(a['default_half']):.4f} "
            f"| {ci(d)} | {over_seeds(d)} | {ci(g)} | {over_seeds(g)} | {share_text(r)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--include", action="append", required=True, help="a benchmarks.quality results JSON")
    p.add_argument("--tag", required=True)
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap draws per seed")
    p.add_argument("--candidate", default=CANDIDATE,
                   help="the configuration standing for the default at N/2 (test files: default_ubm, today's default)")
    args = p.parse_args(argv)
    files = [json.loads(Path(f).read_text()) for f in args.include]
    rows = curve(runs_by_size(files), args.replicates, candidate=args.candidate)
    if not rows:
        raise SystemExit(f"no size N with naive at N and N/2 and {args.candidate} at N/2 in the included files")
    stem = ROOT / "benchmarks" / "results" / f"learning_curve_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
