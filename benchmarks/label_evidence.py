"""What each piece of a log's evidence says about a pair's true relevance, on generated logs.

For each `clickweight pipeline` work folder (generated data: `data/truth.parquet` holds every row's
true relevance), the pairs of a score output's pair table are ranked by: their click rate (the naive
label), the pair table's `label` (the click model's, under that run's settings), the scorer's p_model,
and the pair's mean logged position (lower first: the logging ranker's opinion). Each ranking's AUC
against true relevance >= 2 (the pipeline's positive threshold), every pair weighted by its
impressions as the trainer weighs it. A diagnostic for choosing what a label should keep; the trained
model's held-out AUC is what decides (benchmarks/demo_seeds.py, benchmarks/quality.py).

    .venv/bin/python -m benchmarks.label_evidence runs/demo_seeds/g1 runs/demo_seeds/g2 runs/demo_seeds/g3 \\
        runs/demo_seeds/g7 --tag demo_seeds

`--quality GRADES` reads `benchmarks/quality.py` click-model folders instead (runs/quality/dev/seed1_q1000/
flip20_s4): every score output `w_<config>` in each, its pairs' true relevance their mean human grade in
GRADES (the real data's parquet), positive at grade >= 2.5 as that benchmark's evaluation; the row for a
config is its own pair table, so `label` is what that config trained on:

    .venv/bin/python -m benchmarks.label_evidence runs/quality/dev/seed1_q1000/flip20_s4 \\
        --quality ../shared/data/homedepot_relevance_dev.parquet --tag screen7

Writes benchmarks/results/label_evidence_TAG.{json,md}.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks.bench_data import write_results
from training.metrics import weighted_auc
from udfs.clickstream.schema import PAIRS_DIR

POSITIVE = 2.0  # the pipeline's generated grades (1 to 3)
QUALITY_POSITIVE = 2.5  # benchmarks/quality.py's human grades, as its evaluation
EVIDENCE = ("click_rate", "label", "p_model", "mean_position")


def pair_evidence(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per pair: each ranking score (higher = more relevant) from a pair table's columns."""
    n = np.stack(pairs["position_impressions"].to_numpy()).astype(np.float64)
    k = np.arange(1, n.shape[1] + 1)
    return pd.DataFrame({"click_rate": pairs["clicks"] / pairs["impressions"], "label": pairs["label"],
                         "p_model": pairs["p_model"], "mean_position": -(n * k).sum(1) / n.sum(1)})


def evidence_auc(evidence: pd.DataFrame, relevance: np.ndarray, impressions: np.ndarray,
                 bands: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 8), (9, 10**9)),
                 positive_at: float = POSITIVE) -> dict:
    """AUC of each column against relevance >= positive_at, impression-weighted, overall and per band of
    impressions a pair (unweighted within a band)."""
    positive = np.asarray(relevance) >= positive_at
    w = np.asarray(impressions, dtype=np.float64)
    out = {"pairs": int(len(w)), "impressions_per_pair": float(w.mean()),
           "all": {c: weighted_auc(evidence[c].to_numpy(np.float64), w * positive, w * ~positive) for c in evidence}}
    for lo, hi in bands:
        sel = (w >= lo) & (w <= hi)
        if sel.sum() >= 50 and 0 < positive[sel].sum() < sel.sum():
            ones = np.ones(int(sel.sum()))
            out[f"{lo}-{hi if hi < 10**9 else 'more'}"] = {
                c: weighted_auc(evidence[c].to_numpy(np.float64)[sel], ones * positive[sel], ones * ~positive[sel])
                for c in evidence} | {"pairs": int(sel.sum())}
    return out


def folder_evidence(workdir: Path, output: str) -> dict:
    data = workdir / "data"
    rows = pd.read_parquet(data / "clickstream", columns=["event_id", "query", "title"])
    rows = rows.merge(pd.read_parquet(data / "truth.parquet", columns=["event_id", "true_relevance"]), on="event_id")
    truth = (rows.assign(query=rows["query"].astype(str).str.strip(), title=rows["title"].astype(str).str.strip())
                 .groupby(["query", "title"])["true_relevance"].mean())
    pairs = pq.read_table(workdir / output / PAIRS_DIR, columns=[
        "query", "title", "impressions", "clicks", "label", "p_model", "position_impressions"]).to_pandas()
    relevance = truth.reindex(pd.MultiIndex.from_frame(pairs[["query", "title"]])).to_numpy()
    if np.isnan(relevance).any():
        raise RuntimeError(f"{workdir}: pairs without a true relevance")
    return evidence_auc(pair_evidence(pairs), relevance, pairs["impressions"].to_numpy())


def grade_table(grades: Path) -> pd.Series:
    """Each (query, title)'s mean human grade, keyed as the score job keys pairs (stripped text)."""
    frame = pd.read_parquet(grades, columns=["query", "title", "relevance"])
    return (frame.assign(query=frame["query"].astype(str).str.strip(), title=frame["title"].astype(str).str.strip())
                 .groupby(["query", "title"])["relevance"].mean())


def quality_folder_evidence(folder: Path, truth: pd.Series) -> dict[str, dict]:
    """One entry per score output `w_<config>` of a benchmarks/quality.py click-model folder."""
    out = {}
    for output in sorted(p for p in folder.glob("w_*") if (p / PAIRS_DIR).is_dir()):
        pairs = pq.read_table(output / PAIRS_DIR, columns=[
            "query", "title", "impressions", "clicks", "label", "p_model", "position_impressions"]).to_pandas()
        relevance = truth.reindex(pd.MultiIndex.from_frame(pairs[["query", "title"]])).to_numpy()
        if np.isnan(relevance).any():
            raise RuntimeError(f"{output}: pairs without a human grade")
        out[f"{folder.parent.name}/{folder.name}/{output.name[2:]}"] = evidence_auc(
            pair_evidence(pairs), relevance, pairs["impressions"].to_numpy(), positive_at=QUALITY_POSITIVE)
    return out


def markdown(results: dict[str, dict]) -> str:
    lines = ["| log | pairs | impressions a pair | band | " + " | ".join(EVIDENCE) + " |",
             "|---|---|---|---|" + "---|" * len(EVIDENCE)]
    for name, r in results.items():
        for band, v in r.items():
            if isinstance(v, dict):
                lines.append(f"| {name} | {v.get('pairs', r['pairs'])} | {r['impressions_per_pair']:.1f} | {band} | "
                             + " | ".join(f"{v[c]:.4f}" for c in EVIDENCE) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="clickweight pipeline work folders (generated data), or with "
                   "--quality benchmarks/quality.py click-model folders")
    p.add_argument("--output", default="round_0/weighted_default", help="the score output in each folder")
    p.add_argument("--quality", metavar="GRADES", help="the human grades' parquet: read quality folders")
    p.add_argument("--tag", required=True)
    args = p.parse_args(argv)
    if args.quality:
        truth = grade_table(Path(args.quality))
        results = {k: v for f in args.folders for k, v in quality_folder_evidence(Path(f), truth).items()}
    else:
        results = {Path(f).name: folder_evidence(Path(f), args.output) for f in args.folders}
    write_results(f"label_evidence_{args.tag}", results, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
