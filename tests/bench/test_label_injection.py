"""benchmarks/label_injection.py's offline labels and benchmarks/label_accuracy.py's split of a label's
accuracy: the pure parts, on a small simulated pair table (the trainings are the benchmark's)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.label_accuracy import accuracy
from benchmarks.label_injection import offline_labels, query_mean


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    """40 queries x 8 pairs, 20 impressions each, shown at positions 1..10 (a noisy ranker: better pairs
    higher), clicked under a position-based model."""
    rng = np.random.default_rng(5)
    rows = []
    for q in range(40):
        level = rng.uniform(0.1, 0.6)
        relevance = np.clip(level + rng.normal(0, 0.12, 8), 0.02, 0.98)
        for t, r in enumerate(relevance):
            shown = np.zeros(10, dtype=np.int64)
            where = np.clip(np.round(8 - 8 * r + rng.normal(0, 1.5, 20)).astype(int), 0, 9)
            np.add.at(shown, where, 1)
            clicks = rng.binomial(shown, r / np.arange(1, 11) ** 0.8)
            rows.append({"query": f"q{q}", "title": f"t{t}", "truth": r, "p_model": r + rng.normal(0, 0.15),
                         "impressions": int(shown.sum()), "position_impressions": shown, "position_clicks": clicks})
    return pd.DataFrame(rows)


def test_hybrid_has_the_default_level_per_query_and_the_ranker_prior_order_inside_it(pairs):
    labels = offline_labels(pairs, ["default_offline", "pos_eb", "hybrid"])
    w = pairs["impressions"].to_numpy(np.float64)
    query = pd.factorize(pairs["query"])[0]
    hybrid, default, ranker = labels["hybrid"], labels["default_offline"], labels["pos_eb"]
    assert not np.allclose(default, ranker)   # two different priors
    # where the move leaves (0, 1) the label is clipped and its query's level moves: test the other queries
    clipped = pd.Series((hybrid <= 1e-5) | (hybrid >= 1 - 1e-5)).groupby(query).transform("any").to_numpy()
    assert (~clipped).mean() > 0.5
    keep = ~clipped
    np.testing.assert_allclose(query_mean(hybrid, query, w)[keep], query_mean(default, query, w)[keep], atol=1e-12)
    np.testing.assert_allclose((hybrid - query_mean(hybrid, query, w))[keep],
                               (ranker - query_mean(ranker, query, w))[keep], atol=1e-12)


def test_accuracy_splits_the_order_inside_a_query_from_the_level_across_queries(pairs):
    truth = pairs["truth"].to_numpy(np.float64)
    w = pairs["impressions"].to_numpy(np.float64)
    query = pd.factorize(pairs["query"])[0]
    bins = pd.qcut(pairs["p_model"].rank(method="first"), 20, labels=False).to_numpy()
    exact = accuracy(truth, truth, w, query, bins)
    assert all(v == pytest.approx(1.0) for v in exact.values())
    # each query shifted by its own constant: the order inside a query is exact, the level is not
    shifted = truth + np.random.default_rng(0).normal(0, 0.3, 40)[query]
    split = accuracy(shifted, truth, w, query, bins)
    assert split["within_query"] == pytest.approx(1.0) and split["across_queries"] < 0.8
    assert split["pearson"] < 0.9
