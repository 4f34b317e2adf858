"""Would held-out click likelihood choose the label's prior per log? (dev data only; a diagnostic)

The idea: pick the click model's prior (its groups, its strength) per log by how well the fitted
model predicts clicks it did not see, so the demo's logs (where `pos_eb` trains better than the
default) and the homedepot logs (where it trains worse) could each get theirs. For each log: 5 folds
of impressions by a hash of the event id; per fold, the score job's own click model
(udfs/weighting/cells.py em_propensity) fitted on the other four under each prior variant, and the
held-out impressions' log-likelihood under P = eps + (1 - eps) theta_k gamma_j (pairs and positions
seen in training only, the same impressions for every variant). Reported: each variant's mean
held-out log-likelihood per impression minus the default's.

The training outcomes to hold it against (docs/quality.md, docs/weighting_quality.md): on the demo's
dev generator seeds `pos_eb` +0.0068 and `eb` -0.0059 over naive (the default +0.0010); on homedepot dev
seed 0 `pos_eb` below the default at 16 sessions (-0.0029, -0.0042, -0.0049) and at 4.

    .venv/bin/python -m benchmarks.label_prior_likelihood demo   # the demo's dev seeds (their pipelines
        # must have run: python -m benchmarks.demo_seeds --seeds 1 2 3 --tag dev_truth)

Writes benchmarks/results/label_prior_likelihood.{json,md}.
"""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from jobs import config as config_mod
from udfs.weighting import cells as cells_mod
from udfs.weighting.settings import WeightingSettings

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "default": [],
    "pos_eb": ["weighting.em_prior_groups=p_model_position", "weighting.em_prior_fit=empirical_bayes"],
    "eb": ["weighting.em_prior_fit=empirical_bayes"],
    "pos_1": ["weighting.em_prior_groups=p_model_position"],
}


def settings(sets: list[str]) -> WeightingSettings:
    return WeightingSettings.from_config(config_mod.load_config(str(ROOT / "conf/local.yaml"), sets))


def demo_rows(g: str) -> pd.DataFrame:
    w = ROOT / "runs/demo_seeds" / g / "round_0/weighted_naive"
    t = ds.dataset(str(w), format="parquet", partitioning="hive", ignore_prefixes=["_", "."]).to_table(
        columns=["event_id", "query", "title", "position", "clicked", "p_model"]).to_pandas()
    return t


def homedepot_rows(seed: int, cm: str, sessions: float) -> pd.DataFrame:
    from benchmarks.bench_data import HOMEDEPOT
    from benchmarks.protocol import CLICK_MODELS, sample_split
    from benchmarks.score_peers import _settings
    from udfs.clickstream.simulate import SimulatorSettings, simulate
    from udfs.scoring.bert import get_scorer

    cache = ROOT / "runs" / "label_prior_likelihood" / f"hd_s{seed}_{cm}_{sessions:g}.parquet"
    if cache.exists():
        return pd.read_parquet(cache)
    pairs = pd.read_parquet(HOMEDEPOT)
    train, _ = sample_split(pairs, "dev", 1000, 1200, seed)
    st = SimulatorSettings(**{**CLICK_MODELS[cm].__dict__, "sessions_per_query": sessions})
    rows = simulate(train, st, seed)[0][["event_id", "query", "title", "position", "clicked"]].copy()
    rows["query"], rows["title"] = rows["query"].str.strip(), rows["title"].str.strip()
    uniq = rows.drop_duplicates(["query", "title"])[["query", "title"]].reset_index(drop=True)
    scorer = get_scorer(_settings("auto")[1])  # loaded once per process, not once per log
    q, t = scorer.embed(uniq["query"].tolist()), scorer.embed(uniq["title"].tolist())
    uniq["p_model"] = np.einsum("ij,ij->i", q, t)   # ranks only matter for the prior's groups
    rows = rows.merge(uniq, on=["query", "title"], how="left")
    cache.parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(cache)
    return rows


def heldout_ll(rows: pd.DataFrame, w: WeightingSettings, folds: int = 5) -> tuple[float, int]:
    rows = rows.assign(query=rows["query"].str.strip(), title=rows["title"].str.strip())
    pair = pd.factorize(rows["query"] + "\x00" + rows["title"], sort=True)[0]  # ids by text: row order never matters
    fold = np.array([zlib.crc32(e.encode()) % folds for e in rows["event_id"]])
    total, count = 0.0, 0
    for f in range(folds):
        tr = rows[fold != f].assign(_bucket=pair[fold != f])
        cells = (tr.groupby(["position", "_bucket"]).agg(n=("clicked", "size"), c=("clicked", "sum"),
                                                          pm=("p_model", "first")).reset_index())
        cells = cells_mod.sorted_cells(cells)
        _, info, model = cells_mod.em_propensity(cells, "query_title_pairs", w)
        theta = model["theta"]
        gamma = dict(zip(model["evidence"]["_bucket"], model["evidence"]["_gamma"]))
        eps = model["eps"]
        te = rows[fold == f].assign(_bucket=pair[fold == f])
        keep = te["_bucket"].isin(gamma.keys()) & te["position"].isin(theta.keys())
        te = te[keep]
        p = eps + (1 - eps) * te["position"].map(theta).to_numpy() * te["_bucket"].map(gamma).to_numpy()
        p = np.clip(p, 1e-6, 1 - 1e-6)
        y = te["clicked"].to_numpy()
        total += float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))
        count += len(te)
    return total, count


def main() -> None:
    logs = {}
    which = sys.argv[1] if len(sys.argv) > 1 else "demo"
    if which in ("all", "demo"):
        for g in ("g1", "g2", "g3"):
            logs[f"demo {g}"] = demo_rows(g)
    if which in ("all", "hd"):
        for sessions in (4, 16):
            for cm in ("pbm_eta2", "flip20", "graded"):
                logs[f"hd s0 {cm} x{sessions}"] = homedepot_rows(0, cm, sessions)
    ws = {v: settings(s) for v, s in VARIANTS.items()}
    result = {}
    lines = ["| log | held-out impressions | " + " | ".join(f"{v} − default" for v in VARIANTS) + " |",
             "|---|---|" + "---|" * len(VARIANTS)]
    for name, rows in logs.items():
        out = {}
        for v, w in ws.items():
            ll, n = heldout_ll(rows, w)
            out[v] = ll / n
        result[name] = {"impressions": n, "log_likelihood_per_impression": out}
        lines.append(f"| {name} | {n:,} | " + " | ".join(f"{x - out['default']:+.4f}" for x in out.values()) + " |")
        print(lines[-1], flush=True)
    stem = ROOT / "benchmarks/results/label_prior_likelihood"
    stem.with_suffix(".json").write_text(json.dumps({"variants": VARIANTS, "logs": result}, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
