from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics


def test_auc_known_values():
    y = np.array([0, 0, 1, 1])
    assert metrics.auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert metrics.auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert metrics.auc(y, np.array([0.1, 0.6, 0.4, 0.9])) == 0.75
    assert metrics.auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_log_loss_by_hand():
    assert metrics.log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2)


def test_ndcg_known_values_and_single_item_queries_skipped():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    labels = np.array([3.0, 2.0, 1.0, 3.0, 1.0, 2.0])
    perfect = np.array([0.9, 0.5, 0.1, 0.3, 0.1, 0.9])
    value, used = metrics.ndcg_at_k(groups, labels, perfect)
    assert value == pytest.approx(1.0) and used == 2  # 'b' has one item
    worst = np.array([0.1, 0.5, 0.9, 0.3, 0.9, 0.1])
    ideal_a = 7 + 3 / math.log2(3) + 1 / 2
    got_a = 1 + 3 / math.log2(3) + 7 / 2
    ideal_c, got_c = 3 + 1 / math.log2(3), 1 + 3 / math.log2(3)
    value, _ = metrics.ndcg_at_k(groups, labels, worst)
    assert value == pytest.approx((got_a / ideal_a + got_c / ideal_c) / 2)


def test_ndcg_constant_scores_get_no_credit_from_input_order():
    value, _ = metrics.ndcg_at_k(np.array(["a", "a"]), np.array([3.0, 1.0]), np.array([0.5, 0.5]))
    assert value < 1.0


def test_recalibrated_loss_judges_the_ranking_not_the_calibration():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(2 * z - 1)))).astype(float)
    w = rng.uniform(0.5, 2.0, 4000)
    best = metrics.recalibrated_loss(z, y, w)
    # any affine change of the logits (a shifted, rescaled head) leaves it unchanged ...
    assert metrics.recalibrated_loss(3 * z + 5, y, w) == pytest.approx(best, rel=1e-9)
    # ... it is at most the plain weighted loss of any such head, and a worse ranking scores worse
    from udfs.weighting.weights import bce_with_logits

    assert best <= float(np.sum(w * bce_with_logits(2 * z - 1, y)) / w.sum()) + 1e-12
    assert metrics.recalibrated_loss(z + rng.normal(0, 1, 4000), y, w) > best


def test_impression_loss_is_one_yardstick_whatever_the_weights():
    """Weights that favour the rows a model gets right cannot flatter it under the default criterion:
    the weighted loss prefers the worse ranker, the impression loss does not."""
    rng = np.random.default_rng(3)
    n = np.full(2000, 10.0)
    p = rng.uniform(0.05, 0.95, 2000)
    clicks = rng.binomial(10, p).astype(float)
    good = np.log(p / (1 - p))
    bad = good + rng.normal(0, 2.0, 2000)
    label = clicks / n
    # weights concentrated on the rows where the bad ranker happens to be closer to the observed rate
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    w = np.where(np.abs(sig(bad) - label) < np.abs(sig(good) - label), 10.0, 0.01) * n
    tg = {"label": label, "weight": w, "impressions": n, "clicks": clicks}
    good_m, bad_m = metrics.held_out_metrics(good, tg), metrics.held_out_metrics(bad, tg)
    assert bad_m[metrics.SELECT_KEYS["recalibrated_loss"]] < good_m[metrics.SELECT_KEYS["recalibrated_loss"]]
    assert good_m[metrics.SELECT_KEYS["impression_loss"]] < bad_m[metrics.SELECT_KEYS["impression_loss"]]


def test_recalibration_keeps_the_direction():
    """An inverted ranker is worth a constant: the exported model ranks with its logits as they are."""
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-2 * z))).astype(float)
    w = np.ones(4000)
    rate = y.mean()
    constant = metrics.recalibrated_loss(np.zeros(4000), y, w)
    assert constant == pytest.approx(-(rate * np.log(rate) + (1 - rate) * np.log(1 - rate)), rel=1e-6)
    assert metrics.recalibrated_loss(z, y, w) < constant - 0.05
    assert metrics.recalibrated_loss(-z, y, w) == pytest.approx(constant, rel=1e-9)


def test_start_head_keeps_the_scorers_direction():
    """A weighted target in which clicks fall with the cosine: only b is refitted, a stays the scorer's."""
    from udfs.weighting.calibration import fit_start_head, logistic_sums

    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, 3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(3 * x))).astype(float)  # inverted relation
    w = np.ones(3000)
    a, b = fit_start_head(lambda a, b: logistic_sums(x, y, w, a, b), 1.2, -1.0)
    assert a == 1.2 and b != -1.0
    y_up = (rng.random(3000) < 1 / (1 + np.exp(-3 * x))).astype(float)
    a_up, _ = fit_start_head(lambda a, b: logistic_sums(x, y_up, w, a, b), 1.2, -1.0)
    assert a_up > 0 and a_up != 1.2


def test_start_head_fit_does_not_run_away_on_widely_weighted_soft_labels():
    """Soft labels with weights spanning e^±4 (as examination weights over a click model's labels):
    25 plain Newton steps from the scorer's head run away to |a| ~ 1e8; the damped fit lands on the
    optimum (zero gradient) with a lower loss than the start."""
    from udfs.weighting.calibration import fit_start_head, logistic_sums, platt_newton_step

    rng = np.random.default_rng(35)
    x = rng.uniform(-0.1, 0.95, 200)
    y = np.clip(1 / (1 + np.exp(-(3 * x - 0.5))) + rng.normal(0, 0.1, 200), 0.05, 0.99)
    w = np.exp(rng.normal(0, 1.5, 200))
    sums_at = lambda a, b: logistic_sums(x, y, w, a, b)  # noqa: E731
    a, b = 1.4, -2.35
    for _ in range(25):
        a, b = platt_newton_step(sums_at(a, b), a, b)
    assert not abs(a) < 1e3  # the undamped iteration this test guards against
    a, b = fit_start_head(sums_at, 1.4, -2.35)
    assert 0 < a < 10 and abs(b) < 10
    at = sums_at(a, b)
    assert abs(at["g_a"]) < 1e-6 * w.sum() and abs(at["g_b"]) < 1e-6 * w.sum()
    assert at["loss"] < sums_at(1.4, -2.35)["loss"]


def test_recalibration_with_examination_offsets_recovers_the_relevance_head():
    """criterion_contributions with offset: the affine fit is on z alone, log theta_k fixed beside it."""
    from training.metrics import _recalibrated_logits, criterion_contributions

    rng = np.random.default_rng(0)
    z = rng.normal(size=20000)
    offset = np.log(rng.choice([1.0, 0.5, 0.25, 0.1], size=z.size))
    n = rng.integers(1, 30, size=z.size).astype(float)
    x = (z - z.mean()) / z.std()
    label = rng.binomial(n.astype(int), 1 / (1 + np.exp(-(1.3 * x - 0.7 + offset)))) / n
    fitted = _recalibrated_logits(z, label, n, offset)
    np.testing.assert_allclose(fitted - offset, 1.3 * x - 0.7, atol=0.08)
    # knowing the examination fits these clicks better than pooling it into the logits
    assert criterion_contributions(z, label, n, offset=offset).sum() < criterion_contributions(z, label, n).sum()
    # a logit that ranks against the clicks is worth the constant: slope held at 0
    against = _recalibrated_logits(-z, label, n, offset)
    assert np.ptp(against - offset) < 1e-9


def test_select_by_auto_is_examination_loss_where_clicks_per_position_are_at_hand():
    from training.metrics import resolve_select_by

    assert resolve_select_by("auto", compact_pairs=True, position_tower=False) == "examination_loss"
    assert resolve_select_by("auto", compact_pairs=True, position_tower=True) == "impression_loss"
    assert resolve_select_by("auto", compact_pairs=False, position_tower=False) == "impression_loss"
    # a log the EM could not fit leaves no propensities: auto falls back, an explicit choice stays
    assert resolve_select_by("auto", True, False, has_propensity=False) == "impression_loss"
    assert resolve_select_by("examination_loss", True, False, has_propensity=False) == "examination_loss"
    assert resolve_select_by("loss", compact_pairs=True, position_tower=False) == "loss"
