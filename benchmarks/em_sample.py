"""The click model fitted on a hash sample of pairs (the score job past weighting.max_driver_cells,
udfs/weighting/spark_em.py) against the EM on every cell (udfs/weighting/cells.py em_propensity): how far
the propensities and the pair labels move, and each one's propensity error against the log's true
examination (big_clickstream's 1 / position^0.8).

The sampled fit runs here as the job runs it, in numpy instead of Spark: p_model quantile groups over
all pairs, pairs whose hash falls under max_driver_cells / cells, the driver EM on their cells
(pair_relevance.shared_from_sample), every pair's label from its own cells (pair_relevance.pair_evidence).
Each pair's true relevance stands in for p_model (no scorer runs), as in benchmarks/em_acceleration.py.

    .venv/bin/python -m benchmarks.em_sample --big 1000000 3000000 10000000 --work /tmp/em_big
    .venv/bin/python -m benchmarks.em_sample --big 1000000 --sample-cells 50000 100000 250000

Writes benchmarks/results/em_sample.json (or --json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.em_acceleration import big_log_cells, pair_labels
from jobs import config
from udfs.weighting import cells as cells_mod
from udfs.weighting.pair_relevance import pair_evidence, shared_from_sample
from udfs.weighting.settings import WeightingSettings

ROOT = Path(__file__).resolve().parent.parent
TRUE_POWER = 0.8   # big_clickstream's examination: 1 / position ** 0.8


def unit_hash(keys: np.ndarray) -> np.ndarray:
    """splitmix64 of each key, as a number in [0, 1) (the job uses Spark's xxhash64: another hash, the
    same kind of sample)."""
    z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sampled_fit(cells: pd.DataFrame, w: WeightingSettings, sample_cells: int
                ) -> tuple[dict[int, float], np.ndarray, np.ndarray, dict[str, Any]]:
    """(relative propensity per position, pair keys, pair labels, facts) of the sampled fit."""
    per_pos = cells.groupby("position")["n"].sum()
    fitted = np.sort(per_pos.index[per_pos >= cells_mod.MIN_ROWS_PER_POSITION].to_numpy())
    cells = cells[cells["position"].isin(fitted)]
    k = np.searchsorted(fitted, cells["position"].to_numpy())
    pair, keys = pd.factorize(cells["_bucket"])
    keys = np.asarray(keys, dtype=np.int64)
    n, c = cells["n"].to_numpy(np.float64), cells["c"].to_numpy(np.float64)
    pm = cells.groupby(pair)["pm"].min().sort_index().to_numpy()
    n_groups = min(w.em_buckets, len(keys)) if w.em_prior_rows > 0 else 0
    cuts = np.unique(np.quantile(pm, [i / n_groups for i in range(1, n_groups)])) if n_groups > 1 else np.zeros(0)
    group = np.searchsorted(cuts, pm, side="left")   # how many cuts lie below pm, as the job's sum(pm > cut)
    fraction = min(1.0, sample_cells / len(cells))
    t0 = time.perf_counter()
    chosen = unit_hash(keys) < fraction
    sel = chosen[pair]
    s_index = np.cumsum(chosen) - 1
    shared, steps = shared_from_sample(k[sel], s_index[pair[sel]], n[sel], c[sel], int(chosen.sum()),
                                       group[chosen], n_groups, fitted, w)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gamma, r_j, n_j, m_j = pair_evidence(k, pair, n, c, len(keys), group, shared)
    label_s = time.perf_counter() - t0
    a = shared.prior_rows
    labels = (r_j + a * m_j) / (n_j + a)
    rel = np.clip(shared.theta / shared.theta[0], w.propensity_min, 1.0)
    prop = cells_mod.carry_forward(per_pos.index, {int(p): float(r) for p, r in zip(fitted, rel)}, 1.0)
    return prop, keys, labels, {"sample_pairs": int(chosen.sum()), "sample_cells": int(sel.sum()),
                                "fraction": fraction, "em_steps": steps, "fit_seconds": round(fit_s, 2),
                                "label_seconds": round(label_s, 2)}


def true_error(prop: dict[int, float], top: int = 10) -> float:
    """Mean absolute error of the relative propensity at positions 1..top against 1 / k^0.8."""
    return float(np.mean([abs(prop[k] - k ** -TRUE_POWER) for k in range(1, top + 1) if k in prop]))


def compare(cells: pd.DataFrame, w: WeightingSettings, sample_sizes: list[int]) -> dict[str, Any]:
    t0 = time.perf_counter()
    prop, info, model = cells_mod.em_propensity(cells, "query_title_pairs", w)
    full_s = time.perf_counter() - t0
    full = pd.Series(pair_labels(model), index=model["evidence"]["_bucket"].to_numpy())
    out: dict[str, Any] = {"cells": len(cells), "pairs": len(full), "full": {
        "seconds": round(full_s, 2), "em_steps": info["iterations"], "propensity_mae_vs_true": true_error(prop)}}
    for size in sample_sizes:
        s_prop, keys, labels, facts = sampled_fit(cells, w, size)
        diff = np.abs(labels - full.reindex(keys).to_numpy())
        out[f"sample_{size}"] = {**facts, "propensity_mae_vs_true": true_error(s_prop),
                                 "max_abs_diff_propensity": max(abs(s_prop[k] - prop[k]) for k in prop),
                                 "mean_abs_diff_label": float(diff.mean()), "p99_abs_diff_label":
                                 float(np.quantile(diff, 0.99)), "max_abs_diff_label": float(diff.max())}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--big", type=int, nargs="+", required=True, metavar="ROWS", help="big_clickstream log sizes")
    p.add_argument("--sample-cells", type=int, nargs="+", default=None,
                   help="sample sizes in cells (default: the shipped weighting.max_driver_cells)")
    p.add_argument("--work", default="/tmp/em_big", help="where the logs are generated (kept for reruns)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "em_sample.json"))
    args = p.parse_args(argv)
    w = WeightingSettings.from_config(config.load_config())
    sizes = args.sample_cells or [w.max_driver_cells]
    results = {}
    for rows in args.big:
        r = results[f"big_clickstream {rows} rows"] = compare(big_log_cells(rows, args.work), w, sizes)
        print(f"{rows} rows: {r['pairs']} pairs, {r['cells']} cells | full EM {r['full']['seconds']} s, propensity "
              f"MAE {r['full']['propensity_mae_vs_true']:.4f}", flush=True)
        for size in sizes:
            s = r[f"sample_{size}"]
            print(f"  sample {size} cells ({s['sample_pairs']} pairs, {s['sample_cells']} cells): fit "
                  f"{s['fit_seconds']} s + labels {s['label_seconds']} s | propensity MAE "
                  f"{s['propensity_mae_vs_true']:.4f}, "
                  f"max |d| vs full {s['max_abs_diff_propensity']:.4f} | label |d| mean {s['mean_abs_diff_label']:.4f} "
                  f"p99 {s['p99_abs_diff_label']:.4f} max {s['max_abs_diff_label']:.4f}", flush=True)
    Path(args.json).write_text(json.dumps({"benchmark": "em_sample", "command": "python -m benchmarks.em_sample "
                                           + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                                           "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
