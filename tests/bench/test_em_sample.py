"""benchmarks/em_sample.py on a small simulated log: the full and the sampled fit both run; the sample
is about the asked size, and with every pair sampled the labels are the full EM's."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks import em_sample
from jobs import config
from udfs.weighting import cells as cells_mod
from udfs.weighting.settings import WeightingSettings


def _cells(rng) -> pd.DataFrame:
    n_pairs = 2000
    gamma = rng.uniform(0.05, 0.9, n_pairs)
    pair = rng.integers(0, n_pairs, 60_000)
    position = np.clip(np.round(rng.normal((1 - gamma[pair]) * 9, 3.0)), 0, 9).astype(int) + 1
    clicked = (rng.random(len(pair)) < gamma[pair] / position ** 0.8).astype(int)
    rows = pd.DataFrame({"position": position, "_bucket": pair.astype(np.int64) * 7919 + 13, "clicked": clicked,
                         "pm": gamma[pair]})
    cells = rows.groupby(["position", "_bucket"]).agg(n=("clicked", "size"), c=("clicked", "sum"),
                                                      pm=("pm", "min")).reset_index()
    return cells_mod.sorted_cells(cells)


def test_the_sampled_fit_tracks_the_full_fit():
    cells = _cells(np.random.default_rng(4))
    w = WeightingSettings.from_config(config.load_config())
    r = em_sample.compare(cells, w, [3_000])
    part, everything = r["sample_3000"], r["all_pairs"]
    assert 0.7 * 3_000 < part["sample_cells"] < 1.3 * 3_000 and part["fraction"] < 0.5
    assert r["pairs"] == 2000 and everything["label_abs_diff_vs_all_pairs_max"] == 0.0
    # Every pair: the driver's EM up to the groups' definition (cuts, not ranks: near, not equal).
    assert everything["max_abs_diff_propensity"] < 1e-3 and everything["label_abs_diff_vs_driver_em_mean"] < 1e-3
    # A fifth of the cells: the propensities within a few hundredths, the labels close on average.
    assert part["max_abs_diff_propensity"] < 0.05 and part["label_abs_diff_vs_all_pairs_mean"] < 0.02
    assert r["full"]["propensity_mae_vs_true"] < 0.05


def test_unit_hash_is_uniform_and_fixed():
    keys = np.arange(100_000, dtype=np.int64) * 104729
    u = em_sample.unit_hash(keys)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(u, em_sample.unit_hash(keys))
