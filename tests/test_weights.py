"""Weight maths on hand-computed cases, and the invariants every strategy must keep."""
from __future__ import annotations

import math

import numpy as np
import pytest

from udfs import weights as W

PARAMS = {"base_rate": 0.2, "temperature": 1.0, "propensity_min": 0.05,
          "action_values": {"skip": 1.0, "click": 2.0, "long_dwell": 2.5, "cart": 3.0, "purchase": 4.0},
          "long_dwell_ms": 30000, "combined": {"relevance": 1.0, "ipw": 2.0}}


def cols(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"clicked": rng.integers(0, 2, n).astype(float), "p_model": rng.uniform(0.01, 0.99, n),
            "relevance": rng.uniform(-0.3, 1.0, n), "propensity": rng.uniform(0.1, 1.0, n),
            "added_to_cart": np.zeros(n), "purchased": np.zeros(n), "dwell_ms": np.zeros(n)}


def test_bce_and_el2n_by_hand():
    assert W.bce(np.array([0.8]), np.array([1]))[0] == pytest.approx(-math.log(0.8))
    assert W.bce(np.array([0.8]), np.array([0]))[0] == pytest.approx(-math.log(0.2))
    assert W.el2n(np.array([0.8, 0.3]), np.array([0, 1])).tolist() == pytest.approx([0.8, 0.7])


def test_information_gain_by_hand():
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    ig = W.information_gain(np.array([0.9, 0.2, 0.5]), 0.2)
    assert ig.tolist() == pytest.approx([h(0.2) - h(0.9), 0.0, h(0.2) - h(0.5)], abs=1e-9)


def test_sigmoid_is_stable_for_large_inputs():
    assert W.sigmoid(np.array([-1000.0, 0.0, 1000.0])).tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_none_is_exactly_uniform():
    assert np.array_equal(W.raw_weights("none", cols(), PARAMS), np.ones(6))


def test_ipw_weights_clicks_by_inverse_propensity_only():
    c = cols()
    w = W.raw_weights("ipw", c, PARAMS)
    clicked = c["clicked"] > 0
    assert np.allclose(w[clicked], 1 / c["propensity"][clicked])
    assert np.all(w[~clicked] == 1.0)


def test_action_value_orders_purchase_cart_dwell_click_skip():
    w = W.action_value(clicked=np.array([1, 1, 1, 1, 0]), added_to_cart=np.array([1, 1, 0, 0, 0]),
                       purchased=np.array([1, 0, 0, 0, 0]), dwell_ms=np.array([0, 0, 60000, 10, np.nan]),
                       values=PARAMS["action_values"], long_dwell_ms=30000)
    assert w.tolist() == [4.0, 3.0, 2.5, 2.0, 1.0]


def test_combined_is_product_of_signals_to_exponents():
    c = cols()
    expected = W.signal_weight("relevance", c, PARAMS) * W.signal_weight("ipw", c, PARAMS) ** 2
    assert np.allclose(W.raw_weights("combined", c, PARAMS), expected)


@pytest.mark.parametrize("strategy", ["none", "relevance", "confidence", "information_gain", "loss", "el2n",
                                      "ipw", "action_value", "combined"])
def test_every_strategy_gives_finite_positive_weights_that_normalise(strategy):
    c = cols(500, seed=3)
    raw = W.raw_weights(strategy, c, PARAMS)
    assert np.all(np.isfinite(raw)) and np.all(raw > 0)
    s = W.normalise_scale(lambda k: W.normalised(raw, k, 0.1, 10.0).mean(), 0.1, 10.0, raw.mean())
    w = W.normalised(raw, s, 0.1, 10.0)
    assert w.mean() == pytest.approx(1.0, abs=1e-8)
    assert w.min() >= 0.1 and w.max() <= 10.0


def test_normalise_scale_honours_clipping_with_heavy_tail():
    raw = np.concatenate([np.full(990, 1.0), np.full(10, 1e6)])  # plain rescaling would clip the tail
    s = W.normalise_scale(lambda k: W.normalised(raw, k, 0.1, 5.0).mean(), 0.1, 5.0, raw.mean())
    w = W.normalised(raw, s, 0.1, 5.0)
    assert w.mean() == pytest.approx(1.0, abs=1e-8)
    assert w.max() == 5.0 and w.min() > 0.1


def test_platt_newton_recovers_known_parameters():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 20000)
    y = rng.random(20000) < W.sigmoid(3.0 * x - 1.0)
    a, b = 0.0, 0.0
    for _ in range(10):
        p = W.sigmoid(a * x + b)
        w = p * (1 - p)
        sums = {"g_a": np.sum((p - y) * x), "g_b": np.sum(p - y), "h_aa": np.sum(w * x * x),
                "h_ab": np.sum(w * x), "h_bb": np.sum(w)}
        a, b = W.platt_newton_step(sums, a, b)
    assert a == pytest.approx(3.0, abs=0.15) and b == pytest.approx(-1.0, abs=0.1)


def test_position_propensity_recovers_simulated_examination_curve():
    rng = np.random.default_rng(1)
    positions = np.arange(1, 11)
    true_exam = 1 / positions ** 0.8
    rel_mean = np.linspace(0.6, 0.3, 10)  # better items ranked higher, as in a real log
    n = np.full(10, 20000)
    clicks = rng.binomial(n, true_exam * rel_mean)
    est = W.position_propensity(positions, clicks, rel_mean * n, n, floor=0.05)
    assert est[1] == 1.0
    assert [est[k] for k in positions] == pytest.approx(true_exam.tolist(), rel=0.08)
    assert all(est[k] >= est[k + 1] for k in range(1, 10))


def test_position_propensity_floor_and_sparse_positions():
    est = W.position_propensity(np.array([1, 2, 3]), np.array([100, 1, 0]), np.array([100.0, 100.0, 5.0]),
                                np.array([1000, 1000, 3]), floor=0.05)
    assert est == {1: 1.0, 2: 0.05, 3: 0.05}
