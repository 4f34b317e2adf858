"""The weighting benchmark's own parts: the click simulator (udfs/clickstream/simulate.py, shared with the demo
generator) and the target metric."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import graded_pairs

from benchmarks.weighting_quality import examined_only, target_quality
from udfs.clickstream.simulate import CLICKSTREAM_COLUMNS, SimulatorSettings, simulate, simulate_sessions


def _pairs(n_queries: int = 30, per_query: int = 8, seed: int = 0) -> pd.DataFrame:
    return graded_pairs(n_queries, per_query, seed, query="q{}")


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


def test_one_simulator_for_benchmarks_and_demo():
    import benchmarks.click_simulator as bench
    import jobs.generate as demo
    import udfs.clickstream.simulate as shared

    assert bench.simulate is shared.simulate and bench.SimulatorSettings is shared.SimulatorSettings
    assert demo.simulate_sessions is shared.simulate_sessions
    assert isinstance(demo.DEMO_CLICKS, shared.SimulatorSettings)


def test_simulator_purchases_determinism_and_schema():
    pairs = _pairs()
    clicks, truth = simulate(pairs, SimulatorSettings(), seed=3)
    again, _ = simulate(pairs, SimulatorSettings(), seed=3)
    pd.testing.assert_frame_equal(clicks, again)
    assert not clicks.equals(simulate(pairs, SimulatorSettings(), seed=4)[0])
    assert list(clicks.columns) == list(CLICKSTREAM_COLUMNS)
    assert str(clicks["event_ts"].dtype) == "datetime64[us, UTC]"
    assert clicks["event_id"].is_unique and (clicks["dwell_ms"].isna() == (clicks["clicked"] == 0)).all()
    j = clicks.merge(truth, on="event_id")
    # Every session shows all its query's pairs at positions 1..n, in one day window, one user.
    sess = j.groupby("session_id").agg(n=("position", "size"), top=("position", "max"),
                                       users=("user_id", "nunique"), queries=("query", "nunique"))
    assert (sess["n"] == sess["top"]).all() and (sess["n"] == 8).all()
    assert (sess["users"] == 1).all() and (sess["queries"] == 1).all()
    # Benchmark defaults: a purchase (= cart) only after a real click on a grade >= 2.67 item.
    bought = j["purchased"] == 1
    assert bought.sum() > 0 and (j["added_to_cart"] == j["purchased"]).all()
    assert (j.loc[bought, "true_relevance"] >= 2.67).all()
    assert not (bought & j["is_noise_click"]).any()


def test_simulate_sessions_noise_rate_and_checks():
    rng = np.random.default_rng(0)
    pool_rel = np.array([[3.0, 2.0, 1.0, -np.inf], [1.0, 1.5, 2.5, 3.0]])
    sess_q = rng.integers(0, 2, 2000)
    sess_len = np.where(sess_q == 0, 3, 4)
    s = SimulatorSettings(noise_rate=0.1)
    imp = simulate_sessions(pool_rel, sess_q, sess_len, s, np.random.default_rng(1))
    assert len(imp.position) == sess_len.sum() and imp.sessions == 2000
    assert imp.noise.sum() == round(0.1 * len(imp.position)) and imp.clicked[imp.noise].all()
    assert np.isfinite(imp.relevance).all()                  # padding is never shown
    assert (np.diff(imp.event_ts_us[imp.position == 1]) >= 0).all()   # sessions in start-time order
    assert (np.diff(imp.session) >= 0).all()
    with pytest.raises(ValueError):
        simulate_sessions(pool_rel, np.array([0]), np.array([4]), s, np.random.default_rng(1))
    with pytest.raises(ValueError):
        simulate_sessions(pool_rel, np.array([1]), np.array([2]), SimulatorSettings(noise_share=1.0),
                          np.random.default_rng(1))
