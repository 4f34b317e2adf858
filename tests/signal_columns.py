"""Synthetic signal columns for the weighting tests: every column a strategy may read, one place.

`tests/weighting/test_strategy_registry.py` checks that this covers `strategies.SIGNAL_COLUMNS`, so a
new signal fails there by name instead of as a KeyError in whichever test meets it first.
"""
from __future__ import annotations

import numpy as np


def synthetic_signal_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n rows of plausible values: clicks 0/1, probabilities in (0, 1), carts and dwell only on clicks."""
    rng = np.random.default_rng(seed)
    clicked = rng.integers(0, 2, n).astype(float)
    return {"clicked": clicked, "p_model": rng.uniform(0.01, 0.99, n), "relevance": rng.uniform(-0.3, 1.0, n),
            "propensity": rng.uniform(0.1, 1.0, n), "added_to_cart": clicked * (rng.random(n) < 0.3),
            "purchased": np.zeros(n), "dwell_ms": clicked * rng.integers(0, 60_000, n),
            "noise_score": rng.uniform(0.0, 1.0, n), "suspect": rng.random(n) < 0.2,
            "mlm_pll": rng.uniform(-8.0, -0.5, n), "p_click": rng.uniform(0.01, 0.99, n),
            "p_scorer_click": rng.uniform(0.01, 0.99, n)}
