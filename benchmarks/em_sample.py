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
    # The same method on every pair: what the groups' definition alone moves (p_model cuts over pairs, as
    # Spark can draw them, against the driver's ranks, which split pairs of equal p_model), so that the
    # sample's own effect reads apart from it.
    all_prop, all_keys, all_labels, _ = sampled_fit(cells, w, len(cells))
    every = pd.Series(all_labels, index=all_keys)
    for size in [len(cells), *sample_sizes]:
        s_prop, keys, labels, facts = (all_prop, all_keys, all_labels, {}) if size == len(cells) else \
            sampled_fit(cells, w, size)
        name = "all_pairs" if size == len(cells) else f"sample_{size}"
        out[name] = {**facts, "propensity_mae_vs_true": true_error(s_prop),
                     "max_abs_diff_propensity": max(abs(s_prop[k] - prop[k]) for k in prop),
                     **_label_diffs(labels - full.reindex(keys).to_numpy(), "vs_driver_em"),
                     **_label_diffs(labels - every.reindex(keys).to_numpy(), "vs_all_pairs")}
    return out


def _label_diffs(diff: np.ndarray, name: str) -> dict[str, float]:
    diff = np.abs(diff)
    return {f"label_abs_diff_{name}_mean": float(diff.mean()), f"label_abs_diff_{name}_p99":
            float(np.quantile(diff, 0.99)), f"label_abs_diff_{name}_max": float(diff.max())}


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
        for name in ["all_pairs", *[f"sample_{size}" for size in sizes]]:
            s = r[name]
            print(f"  {name} ({s.get('sample_pairs', r['pairs'])} pairs, {s.get('sample_cells', r['cells'])} cells): "
                  f"fit {s.get('fit_seconds', '-')} s + labels {s.get('label_seconds', '-')} s | propensity MAE "
                  f"{s['propensity_mae_vs_true']:.4f}, max |d| vs driver EM {s['max_abs_diff_propensity']:.4f} | "
                  f"label |d| vs driver EM mean {s['label_abs_diff_vs_driver_em_mean']:.4f} p99 "
                  f"{s['label_abs_diff_vs_driver_em_p99']:.4f} | vs all pairs mean "
                  f"{s['label_abs_diff_vs_all_pairs_mean']:.4f} p99 {s['label_abs_diff_vs_all_pairs_p99']:.4f} max "
                  f"{s['label_abs_diff_vs_all_pairs_max']:.4f}", flush=True)
    Path(args.json).write_text(json.dumps({"benchmark": "em_sample", "command": "python -m benchmarks.em_sample "
                                           + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                                           "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
