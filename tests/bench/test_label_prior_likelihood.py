"""benchmarks/label_prior_likelihood: held-out click log-likelihood of the score job's click model."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks import label_prior_likelihood as lpl


def _log(seed: int = 0, pairs: int = 300, per_pair: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.05, 0.8, pairs)                       # each pair's attractiveness
    p_model = alpha + rng.normal(0, 0.2, pairs)                  # a scorer's noisy view, one per pair
    pair = np.repeat(np.arange(pairs), per_pair)
    position = rng.integers(1, 7, len(pair))
    clicked = (rng.random(len(pair)) < alpha[pair] / position ** 1.0).astype(int)
    return pd.DataFrame({"event_id": [f"e{i}" for i in range(len(pair))], "query": [f"q{p // 5}" for p in pair],
                         "title": [f" t{p} " for p in pair], "position": position, "clicked": clicked,
                         "p_model": p_model[pair]})


def test_the_click_model_predicts_held_out_clicks_better_than_the_click_rate_alone():
    rows = _log()
    ll, n = lpl.heldout_ll(rows, lpl.settings([]))
    assert 0 < n <= len(rows) and np.isfinite(ll)
    base = rows["clicked"].mean()
    y = rows["clicked"].to_numpy()
    constant = float(np.mean(y * np.log(base) + (1 - y) * np.log1p(-base)))
    assert ll / n > constant + 0.01      # pairs and positions explain clicks a single rate cannot
    again, n_again = lpl.heldout_ll(rows.sample(frac=1.0, random_state=1), lpl.settings([]))
    assert n_again == n and abs(again - ll) < 1e-6 * abs(ll)   # folds by event id: row order does not matter
