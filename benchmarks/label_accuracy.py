"""How close each pair label is to the truth, and in which part: within a query or across queries.

A diagnostic, not a choice: it needs the simulator's hidden truth, so nothing in the product can use it.
For each log, every pair's label under the naive baseline (its click rate), the scorer's own opinion
(the cosine the score job calibrates into p_model), and the offline click-model labels of
benchmarks/label_injection.py, against the pair's true click probability given examination. Four
impression-weighted correlations per label:

- `pearson`: over all pairs;
- `beyond scorer`: of what is left once each of 20 scorer bins' mean is taken out of both (the part of
  the label the trainee, which starts as the scorer, does not know already);
- `within query`: of the deviations from each query's mean (the order inside a query);
- `across queries`: of the query means (the level across queries, which a held-out AUC pooled over
  queries also rewards).

Logs: demo_seeds folders (`demo:<folder>`, their naive and truth score outputs) and homedepot dev logs
(`homedepot:<seed>:<click model>`, simulated as benchmarks.quality does with 1000 train queries and 16
sessions a query; the scorer's cosine computed here).

    python -m benchmarks.label_accuracy --logs demo:runs/demo_seeds/g1 homedepot:0:graded --tag dev

Writes benchmarks/results/label_accuracy_TAG.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_data import write_results
from benchmarks.label_injection import LABELS, homedepot_dev_log, offline_labels, query_mean
from udfs.clickstream.schema import PAIRS_DIR
from udfs.clickstream.simulate import click_probability, simulate

PAIR_COLUMNS = ["query", "title", "label", "p_model", "impressions", "position_impressions", "position_clicks"]


def weighted_corr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    a, b = a - np.average(a, weights=w), b - np.average(b, weights=w)
    return float(np.average(a * b, weights=w) / np.sqrt(np.average(a * a, weights=w) * np.average(b * b, weights=w)))


def minus_group_mean(x: np.ndarray, group: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x - query_mean(x, group, w)


def accuracy(label: np.ndarray, truth: np.ndarray, w: np.ndarray, query: np.ndarray,
             scorer_bin: np.ndarray) -> dict[str, float]:
    """The four correlations of the module's docstring."""
    means = pd.DataFrame({"x": label * w, "t": truth * w, "w": w, "q": query}).groupby("q").sum()
    return {"pearson": weighted_corr(label, truth, w),
            "beyond_scorer": weighted_corr(minus_group_mean(label, scorer_bin, w),
                                           minus_group_mean(truth, scorer_bin, w), w),
            "within_query": weighted_corr(minus_group_mean(label, query, w), minus_group_mean(truth, query, w), w),
            "across_queries": weighted_corr((means["x"] / means["w"]).to_numpy(), (means["t"] / means["w"]).to_numpy(),
                                            means["w"].to_numpy())}


def demo_pairs(folder: Path) -> pd.DataFrame:
    rnd = folder / "round_0"
    pairs = pd.read_parquet(rnd / "weighted_naive" / PAIRS_DIR, columns=PAIR_COLUMNS)
    truth = pd.read_parquet(rnd / "weighted_truth" / PAIRS_DIR, columns=["query", "title", "label"])
    return pairs.merge(truth.rename(columns={"label": "truth"}), on=["query", "title"], how="inner")


def homedepot_pairs(seed: int, click_model: str) -> pd.DataFrame:
    """A homedepot dev log's pair cells in the pair table's layout (positions past 10 pooled in the 10th,
    as output.position_buckets does), with the scorer's cosine as p_model and the true label."""
    from jobs import config
    from udfs.scoring.bert import PairScorer
    from udfs.scoring.spark import scoring_settings

    train, _, settings = homedepot_dev_log(seed, click_model)
    train = train.assign(query=train["query"].str.strip(), title=train["title"].str.strip())
    log = simulate(train, settings, seed)[0]
    log = log.assign(query=log["query"].str.strip(), title=log["title"].str.strip(),
                     bucket=log["position"].clip(upper=10), clicked=log["clicked"].astype(np.int64))
    cells = log.groupby(["query", "title", "bucket"]).agg(n=("clicked", "size"), c=("clicked", "sum")).reset_index()
    shown = cells.pivot_table(index=["query", "title"], columns="bucket", values="n", fill_value=0)
    clicked = cells.pivot_table(index=["query", "title"], columns="bucket", values="c", fill_value=0)
    shown, clicked = (f.reindex(columns=range(1, 11), fill_value=0) for f in (shown, clicked))
    pairs = shown.index.to_frame(index=False)
    pairs["position_impressions"] = list(shown.to_numpy())
    pairs["position_clicks"] = list(clicked.to_numpy())
    pairs["impressions"] = shown.sum(1).to_numpy()
    pairs["label"] = clicked.sum(1).to_numpy() / pairs["impressions"]
    scorer = PairScorer(scoring_settings(config.load_config(None)), "cpu")
    pairs["p_model"] = scorer.cosine(pairs["query"].tolist(), pairs["title"].tolist())
    relevance = train.groupby(["query", "title"])["relevance"].mean()
    pairs["truth"] = click_probability(relevance.reindex(pd.MultiIndex.from_frame(pairs[["query", "title"]]))
                                       .to_numpy(), settings)
    return pairs


def log_pairs(spec: str) -> pd.DataFrame:
    kind, _, rest = spec.partition(":")
    if kind == "demo":
        return demo_pairs(Path(rest))
    if kind == "homedepot":
        seed, _, click_model = rest.partition(":")
        return homedepot_pairs(int(seed), click_model)
    raise SystemExit(f"{spec}: a log is demo:<folder> or homedepot:<seed>:<click model>")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logs", nargs="+", required=True)
    p.add_argument("--tag", required=True)
    args = p.parse_args(argv)
    rows = []
    for spec in args.logs:
        pairs = log_pairs(spec).reset_index(drop=True)
        labels = {"naive (click rate)": pairs["label"].to_numpy(np.float64),
                  "scorer": pairs["p_model"].to_numpy(np.float64), **offline_labels(pairs, list(LABELS))}
        w = pairs["impressions"].to_numpy(np.float64)
        query = pd.factorize(pairs["query"])[0]
        scorer_bin = pd.qcut(pairs["p_model"].rank(method="first"), 20, labels=False).to_numpy()
        for name, label in labels.items():
            rows.append({"log": spec, "pairs": len(pairs), "impressions_per_pair": round(float(w.mean()), 2),
                         "label": name, **accuracy(label, pairs["truth"].to_numpy(np.float64), w, query, scorer_bin)})
            print(rows[-1], flush=True)
    lines = ["| log | impressions a pair | label | pearson | beyond the scorer | within a query | across queries |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['log']} | {r['impressions_per_pair']} | {r['label']} | {r['pearson']:.3f} | "
              f"{r['beyond_scorer']:.3f} | {r['within_query']:.3f} | {r['across_queries']:.3f} |" for r in rows]
    write_results(f"label_accuracy_{args.tag}", {"rows": rows, "command": "python -m benchmarks.label_accuracy "
                                                 + " ".join(argv or sys.argv[1:])}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
