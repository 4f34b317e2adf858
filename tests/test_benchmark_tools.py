"""The weighting benchmark's own parts: the click simulator and the target metric."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.click_simulator import SimulatorSettings, simulate
from benchmarks.weighting_quality import examined_only, target_quality


def _pairs(n_queries: int = 30, per_query: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"query": f"q{q}", "item_id": f"i{q}_{k}", "title": f"title {q} {k}",
             "relevance": float(rng.choice([1.0, 1.67, 2.33, 3.0]))}
            for q in range(n_queries) for k in range(per_query)]
    return pd.DataFrame(rows)


def test_simulator_noise_share_and_examination():
    clicks, truth = simulate(_pairs(), SimulatorSettings(noise_share=0.25), seed=1)
    j = clicks.merge(truth, on="event_id")
    noise = j["is_noise_click"]
    assert abs(noise.sum() / j["clicked"].sum() - 0.25) < 0.01
    # A real click needs examination; a noise click lands on an unclicked row whatever its position.
    assert (j.loc[(j["clicked"] == 1) & ~noise, "examined"]).all()
    assert set(clicks.columns).isdisjoint({"examined", "is_noise_click", "true_relevance"})
    # Examination decays with position: position 1 is looked at far more often than position 8.
    by_pos = j.groupby("position")["examined"].mean()
    assert by_pos.loc[1] == 1.0 and by_pos.loc[8] < 0.4

    _, unbiased = simulate(_pairs(), SimulatorSettings(position_bias=False), seed=1)
    assert unbiased["examined"].all()


def test_target_is_the_weighted_click_rate_per_pair():
    truth = pd.DataFrame({
        "event_id": ["a", "b", "c", "d", "e"], "query": ["q"] * 5,
        "item_id": ["x", "x", "y", "y", "z"], "true_relevance": [3.0, 3.0, 1.0, 1.0, 2.0],
        "clicked": [1, 0, 1, 0, 0], "examined": [True, True, True, False, False],
    })
    # Uniform weights: x and y both have CTR 1/2, a tie; z 0.
    uniform = target_quality(truth.assign(weight=1.0)[["event_id", "weight"]], truth)
    assert uniform["target_auc"] == pytest.approx(0.75)  # x (the positive) ties y, beats z
    # Weight x's click and y's skip up: x's target 3/4, y's 1/4 -> x ranks first outright.
    w = pd.DataFrame({"event_id": list("abcde"), "weight": [3.0, 1.0, 1.0, 3.0, 1.0]})
    assert target_quality(w, truth)["target_auc"] == pytest.approx(1.0)
    # Examined-only drops y's unseen skip (y's target becomes 1, above x's 1/2) and z's only row
    # (z ties at the base rate 2/3, above x as well): x, the one positive, now ranks last.
    assert examined_only(truth)["pairs_without_rows"] == 1
    assert examined_only(truth)["target_auc"] == pytest.approx(0.0)
