"""Which held-out click criterion sees what a model learnt? (issue 24, lever 5; dev data only.)

The gate picks the exported model by a criterion on the training log's held-out queries (the pairs
whose query_bucket is below train.eval_fraction): clicks, not grades. On logs with heavy noise or
strong position bias its pooled click criterion barely moves. This script takes the dev screen's
finished models of one click model and puts, beside each model's graded AUC (what the benchmark
reports), two click criteria computed on the same held-out impressions with the exported relevance
model alone (any position tower is dropped at export):

- pooled click AUC: every held-out impression's click against the model's score;
- within-position click AUC: the same, but only impressions shown at the same position are
  compared (a per-position AUC, averaged with weight clicks x skips at that position). Under any
  click model where, at a fixed position, a more relevant item is clicked more often, it ranks
  models by relevance without a click model's estimate of examination.

A criterion that sees is one whose order over the models follows the graded AUC's (Spearman per
click model). Dev only: the held-out impressions and graded pairs are dev queries'.

    python -m benchmarks.gate_criteria_dev --folders runs/quality/dev/seed0_q1000/flip20_s16 \\
        runs/quality/dev/seed0_q1000/pbm_eta2_s16 --json benchmarks/results/gate_criteria_dev.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from training import metrics
from training.evaluate import predict
from training.reader import is_eval
from udfs.scoring import model_loader


def within_position_auc(position: np.ndarray, clicked: np.ndarray, score: np.ndarray) -> float:
    """Per-position click AUC, averaged with weight clicks x skips at each position (the number of
    (click, skip) comparisons it contains); positions with only clicks or only skips drop out."""
    total, weight = 0.0, 0.0
    for k in np.unique(position):
        at = position == k
        c = int(clicked[at].sum())
        n = int(at.sum()) - c
        if c and n:
            total += metrics.auc(clicked[at] > 0, score[at]) * c * n
            weight += c * n
    return total / weight if weight else float("nan")


def held_out_impressions(folder: Path, eval_fraction: float) -> pd.DataFrame:
    rows = pd.read_parquet(folder / "w_naive", columns=["query", "title", "position", "clicked", "query_bucket"])
    rows = rows[is_eval(rows["query_bucket"].to_numpy(), eval_fraction)]
    return rows.assign(query=rows["query"].str.strip(), title=rows["title"].str.strip())


def criteria(folder: Path, eval_fraction: float) -> list[dict]:
    imp = held_out_impressions(folder, eval_fraction)
    pairs = imp[["query", "title"]].drop_duplicates().reset_index(drop=True)
    models = {"zero-shot": model_loader.default_model_path(),
              **{p.name[2:]: str(p) for p in sorted(folder.glob("m_*")) if (p / "train_summary.json").exists()}}
    out = []
    for name, path in models.items():
        stem = f"eval_{name.replace('-', '_')}_h*.json"
        graded = sorted(folder.glob(stem)) or sorted(folder.parent.glob(stem))
        if not graded:
            continue
        pairs["score"] = predict(path, pairs["query"].tolist(), pairs["title"].tolist())
        s = imp.merge(pairs, on=["query", "title"], how="left")["score"].to_numpy()
        y = imp["clicked"].to_numpy()
        out.append({"click_model": folder.name, "config": name,
                    "graded_auc": json.loads(graded[-1].read_text())["auc"],
                    "pooled_click_auc": metrics.auc(y > 0, s),
                    "within_position_click_auc": within_position_auc(imp["position"].to_numpy(), y, s),
                    "held_out_impressions": int(len(imp)), "held_out_pairs": int(len(pairs))})
        print(json.dumps(out[-1]), flush=True)
    return out


def spearman(a: pd.Series, b: pd.Series) -> float:
    return float(a.rank().corr(b.rank()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folders", nargs="+", required=True, help="click-model folders of a quality run")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="train.eval_fraction the models used")
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = [r for f in args.folders for r in criteria(Path(f), args.eval_fraction)]
    frame = pd.DataFrame(rows)
    print("| click model | config | graded AUC | pooled click AUC | within-position click AUC |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['click_model']} | {r['config']} | {r['graded_auc']:.4f} | {r['pooled_click_auc']:.4f} | "
              f"{r['within_position_click_auc']:.4f} |")
    agreement = {cm: {c: spearman(g["graded_auc"], g[c]) for c in ("pooled_click_auc", "within_position_click_auc")}
                 for cm, g in frame.groupby("click_model")}
    print(json.dumps({"spearman_with_graded_auc": agreement}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": "python -m benchmarks.gate_criteria_dev " +
                                               " ".join(sys.argv[1:] if argv is None else argv), "rows": rows,
                                               "spearman_with_graded_auc": agreement}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
