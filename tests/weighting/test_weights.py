"""Weight maths on hand-computed cases, and the invariants every strategy must keep."""
from __future__ import annotations

import math

import numpy as np
import pytest
from signal_columns import synthetic_signal_columns

from udfs.weighting import strategies
from udfs.weighting import weights as W
from udfs.weighting.calibration import platt_newton_step
from udfs.weighting.pair_relevance import SharedParameters, click_model_probability, pooled_relevance
from udfs.weighting.strategies import raw_weights

PARAMS = {"base_rate": 0.2, "temperature": 1.0, "propensity_min": 0.05,
          "action_values": {"skip": 1.0, "click": 2.0, "long_dwell": 2.5, "cart": 3.0, "purchase": 4.0},
          "long_dwell_ms": 30000, "combined": {"relevance": 1.0, "ipw": 2.0},
          "denoise_weight": 0.1, "denoise_mode": "hard"}


def cols(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    return synthetic_signal_columns(n, seed)


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
    assert np.array_equal(raw_weights("none", cols(), PARAMS), np.ones(6))


def test_ipw_weights_clicks_by_inverse_propensity_only():
    c = cols()
    w = raw_weights("ipw", c, PARAMS)
    clicked = c["clicked"] > 0
    assert np.allclose(w[clicked], 1 / c["propensity"][clicked])
    assert np.all(w[~clicked] == 1.0)


def test_examination_weighs_each_impression_by_its_position_propensity_click_or_not():
    c = cols(200, seed=5)
    w = raw_weights("examination", c, PARAMS)
    assert np.array_equal(w, c["propensity"])
    # a pair's weight (the sum over its impressions) is its expected examinations: two impressions at
    # a position seen half the time count as much as one at position 1
    assert raw_weights("examination", {**c, "propensity": np.array([0.5, 0.5, 1.0])}, PARAMS, rows=3)[:2].sum() == 1.0


def test_action_value_orders_purchase_cart_dwell_click_skip():
    w = W.action_value(clicked=np.array([1, 1, 1, 1, 0]), added_to_cart=np.array([1, 1, 0, 0, 0]),
                       purchased=np.array([1, 0, 0, 0, 0]), dwell_ms=np.array([0, 0, 60000, 10, np.nan]),
                       values=PARAMS["action_values"], long_dwell_ms=30000)
    assert w.tolist() == [4.0, 3.0, 2.5, 2.0, 1.0]


def test_combined_is_product_of_signals_to_exponents():
    # combined = prod_s signal_s ** exponent_s, each factor worked out by hand from the formulas:
    # relevance max(cos, 0) + 1e-6; ipw 1 / propensity on clicks, 1 on skips; confidence p.
    c = {"clicked": np.array([1.0, 1.0, 0.0, 0.0]), "relevance": np.array([0.5, -0.2, 0.8, 0.0]),
         "propensity": np.array([0.25, 0.5, 0.1, 0.4]), "p_model": np.array([0.64, 0.25, 0.81, 0.5])}
    # relevance ** 1 * ipw ** 2
    assert raw_weights("combined", c, PARAMS).tolist() == pytest.approx(
        [0.500001 * 16.0, 0.000001 * 4.0, 0.800001 * 1.0, 0.000001 * 1.0], rel=1e-9, abs=0)
    # confidence ** 0.5 * ipw ** 1 * relevance ** 0 (a zero exponent contributes exactly 1)
    params = {**PARAMS, "combined": {"confidence": 0.5, "ipw": 1.0, "relevance": 0.0}}
    assert raw_weights("combined", c, params).tolist() == pytest.approx(
        [0.8 * 4.0, 0.5 * 2.0, 0.9 * 1.0, 0.7071067811865476 * 1.0], rel=1e-9, abs=0)


@pytest.mark.parametrize("strategy", strategies.names())
def test_every_strategy_gives_finite_positive_weights_that_normalise(strategy):
    c = cols(500, seed=3)
    raw = raw_weights(strategy, c, PARAMS)
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
        a, b = platt_newton_step(sums, a, b)
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


# ---------------------------------------------------------------- denoise (confident learning)

def test_confident_thresholds_by_hand():
    p = np.array([0.9, 0.5, 0.2, 0.4, 0.1])
    y = np.array([1, 1, 0, 0, 0])
    t0, t1 = W.confident_thresholds(p, y)
    assert t1 == pytest.approx(0.7)                   # mean p over clicks: (0.9 + 0.5) / 2
    assert t0 == pytest.approx((0.8 + 0.6 + 0.9) / 3)  # mean (1 - p) over skips


def test_label_noise_suspects_and_score_by_hand():
    t0, t1 = 0.8, 0.6
    p = np.array([0.9, 0.1, 0.7, 0.3, 0.15])
    y = np.array([1, 1, 0, 0, 0])
    score, suspect = W.label_noise(p, y, t0, t1)
    # row 1: click with p(skip)=0.9 >= t0 and skip wins -> suspect; row 2: skip with p(click)=0.7 >= t1,
    # p(skip)=0.3 < t0 -> suspect; row 3: skip, p(click)=0.3 < t1 -> clean; row 0 / 4 agree with the label.
    assert suspect.tolist() == [False, True, True, False, False]
    a, b = 0.9 / 0.8, 0.1 / 0.6  # row 1: (p_other / t_other) / (that + p_label / t_label)
    assert score[1] == pytest.approx(a / (a + b))
    a, b = 0.7 / 0.6, 0.3 / 0.8
    assert score[2] == pytest.approx(a / (a + b))
    assert np.all((score > 0) & (score < 1)) and score[1] > 0.5 > score[0]


def test_denoise_weight_hard_and_soft():
    score, suspect = np.array([0.9, 0.2]), np.array([True, False])
    assert W.denoise_weight(score, suspect, 0.1, "hard").tolist() == [0.1, 1.0]
    assert W.denoise_weight(score, suspect, 0.1, "soft").tolist() == pytest.approx([1 - 0.9 * 0.9, 1 - 0.9 * 0.2])
    c = cols()
    c["suspect"] = np.array([True, False, True, False, False, False])
    assert raw_weights("denoise", c, PARAMS).tolist() == [0.1, 1.0, 0.1, 1.0, 1.0, 1.0]


def test_denoise_flags_simulated_flipped_labels_auroc():
    from training.metrics import auc

    rng = np.random.default_rng(5)
    n = 20000
    clean = (rng.random(n) < 0.2).astype(float)              # imbalanced, like clicks
    p = W.sigmoid(rng.normal(0, 1.0, n) + np.where(clean > 0, 1.5, -2.5))  # informative, imperfect scorer
    flipped = rng.random(n) < 0.15
    y = np.where(flipped, 1 - clean, clean)
    t0, t1 = W.confident_thresholds(p, y)
    score, suspect = W.label_noise(p, y, t0, t1)
    assert auc(flipped.astype(float), score) >= 0.85
    assert flipped[suspect].mean() > 3 * flipped.mean()      # suspects are mostly flipped rows


def test_em_bucket_evidence_reproduces_the_fitted_gamma():
    rng = np.random.default_rng(6)
    k, j, n, c, _ = _simulated_log(rng)
    n_b = int(j.max()) + 1
    group = np.arange(n_b) % 4
    theta, gamma, _, _ = W.propensity_em(k, j, n, c, 10, n_b, bucket_group=group, prior_rows=5.0, tol=1e-10)
    r, nn, m = W.em_bucket_evidence(k, j, n, c, theta, gamma, n_b, bucket_group=group, prior_rows=5.0)
    assert ((r + 5.0 * m) / (nn + 5.0)).tolist() == pytest.approx(gamma.tolist(), rel=1e-5, abs=1e-7)


def test_click_model_denoise_flags_noise_clicks_a_content_scorer_cannot():
    """Position-biased clicks on repeated pairs plus uniform noise clicks (20% of clicks): a scorer
    that knows relevance only roughly, and ignores position, barely separates noise clicks; the
    click model (position x the pair's leave-one-out click evidence) comes close to the oracle that
    knows the true theta * gamma. (The oracle itself stays near 0.77: a noise click on a relevant
    item at the top looks like a real one.)"""
    from training.metrics import auc

    rng = np.random.default_rng(8)
    n_pairs, sessions, positions = 3000, 8, 8
    gamma = rng.beta(2, 2, n_pairs)
    theta = 1 / np.arange(1, positions + 1) ** 0.8
    pair = np.repeat(np.arange(n_pairs), sessions)
    pos = rng.integers(0, positions, len(pair))
    true_click = rng.random(len(pair)) < theta[pos] * gamma[pair]
    skips = np.flatnonzero(~true_click)
    noise = np.zeros(len(pair), dtype=bool)
    noise[rng.choice(skips, int(true_click.sum() * 0.25), replace=False)] = True
    y = (true_click | noise).astype(float)
    cells = np.unique(np.stack([pos, pair]), axis=1)
    key = pos * n_pairs + pair
    ck = cells[0] * n_pairs + cells[1]
    idx = np.searchsorted(ck, key)
    n_cell, c_cell = np.bincount(idx, minlength=len(ck)).astype(float), np.bincount(idx, weights=y, minlength=len(ck))
    # The job's default prior (em_prior_rows 1, one group here): without it a pair's only click is held
    # out against its skips alone (AUROC 0.664 here against 0.674; the old one-step approximation of the
    # leave-one-out relevance gave 0.682 and 0.685).
    group = np.zeros(n_pairs, dtype=np.int64)
    est_theta, est_gamma, _, _ = W.propensity_em(cells[0], cells[1], n_cell, c_cell, positions, n_pairs,
                                                 bucket_group=group, prior_rows=1.0)
    r, nn, _ = W.em_bucket_evidence(cells[0], cells[1], n_cell, c_cell, est_theta, est_gamma, n_pairs)
    shared = SharedParameters(est_theta, 0.0, np.array([r.sum() / nn.sum()]), 1.0, pooled_relevance(r, nn))
    p_click = click_model_probability(est_theta[pos], pair, idx, y, cells[0], cells[1], n_cell, c_cell, n_pairs,
                                      group, shared)
    scorer = W.clip_prob(gamma[pair] + rng.normal(0, 0.3, len(pair)))      # rough content-only relevance
    clicked = y > 0
    detect = {}
    for name, p in (("click_model", p_click), ("scorer", scorer), ("oracle", theta[pos] * gamma[pair])):
        t0, t1 = W.confident_thresholds(p, y)
        score, _ = W.label_noise(p, y, t0, t1)
        detect[name] = auc(noise[clicked], score[clicked])
    assert detect["oracle"] > 0.7
    assert detect["click_model"] >= detect["oracle"] - 0.1
    assert detect["click_model"] > detect["scorer"] + 0.05, detect


# ---------------------------------------------------------------- mlm_quality

def test_mlm_quality_is_geometric_mean_token_probability():
    pll = np.array([math.log(0.5), math.log(0.01), -1000.0])
    assert W.mlm_quality(pll).tolist() == pytest.approx([0.5, 0.01, math.exp(-50)])
    with pytest.raises(ValueError, match="mlm_pll"):
        W.mlm_quality(np.array([np.nan]))


# ---------------------------------------------------------------- ipw: regression-EM propensity

def _simulated_log(rng, n_pairs=200, positions=10, power=0.8, rows_per_pair=400):
    """Pairs shown at several positions; the ranker puts better pairs higher (but not always)."""
    gamma = rng.uniform(0.05, 0.9, n_pairs)
    pos_idx, pair_idx, n, c = [], [], [], []
    theta = 1 / np.arange(1, positions + 1) ** power
    for j in range(n_pairs):
        centre = (1 - gamma[j]) * (positions - 1)
        shown = np.clip(np.round(rng.normal(centre, 3.0, rows_per_pair)), 0, positions - 1).astype(int)
        for k in np.unique(shown):
            m = int((shown == k).sum())
            pos_idx.append(k)
            pair_idx.append(j)
            n.append(m)
            c.append(rng.binomial(m, theta[k] * gamma[j]))
    return np.array(pos_idx), np.array(pair_idx), np.array(n), np.array(c), theta


def test_propensity_em_exact_on_expected_counts():
    theta = np.array([0.9, 0.5, 0.3])
    gamma = np.array([0.8, 0.4, 0.1, 0.6])
    k, j = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    k, j = k.ravel(), j.ravel()
    n = np.full(k.shape, 10000.0)
    c = n * theta[k] * gamma[j]                 # noiseless expected clicks
    est, g, iters, _ = W.propensity_em(k, j, n, c, 3, 4, max_iter=5000, tol=1e-12)
    assert (est / est[0]).tolist() == pytest.approx((theta / theta[0]).tolist(), rel=1e-3)
    assert (est[k] * g[j]).tolist() == pytest.approx((theta[k] * gamma[j]).tolist(), rel=1e-3)
    assert iters >= 1


def test_propensity_em_recovers_simulated_power_curve_with_ranker_bias():
    rng = np.random.default_rng(2)
    k, j, n, c, theta = _simulated_log(rng)
    est, _, _, _ = W.propensity_em(k, j, n, c, 10, int(j.max()) + 1)
    prop = W.propensity_from_em(np.arange(1, 11), est, floor=0.05)
    assert prop[1] == 1.0
    assert [prop[p] for p in range(1, 11)] == pytest.approx(theta.tolist(), rel=0.10)
    # The CTR ratio per position confounds examination with the ranker's ordering: EM must beat it.
    ctr = np.bincount(k, weights=c) / np.bincount(k, weights=n)
    naive = ctr / ctr[0]
    assert np.abs(np.array([prop[p] for p in range(1, 11)]) - theta).max() < np.abs(naive - theta).max() / 2


# ---------------------------------------------------------------- importance sampling

def test_keep_scale_hits_the_keep_fraction_with_saturation():
    imp = np.concatenate([np.full(900, 1.0), np.full(100, 50.0)])  # heavy rows saturate at q = 1
    c = W.solve_keep_scale(lambda s: W.keep_probability(imp, s).mean(), 0.3, 0.3 / imp.mean())
    q = W.keep_probability(imp, c)
    assert q.mean() == pytest.approx(0.3, abs=1e-8)
    assert np.all(q[900:] == 1.0) and q[0] == pytest.approx((0.3 * 1000 - 100) / 900)


# test_importance_sampling_is_unbiased_in_expectation: on the job's Spark path, in
# tests/weighting/test_importance_sampling.py.


def test_propensity_em_regression_prior_tames_pairs_seen_once_or_twice():
    """Most real pairs are seen 1-3 times; a clicked singleton forces theta * gamma = 1 without a prior."""
    rng = np.random.default_rng(2)
    n_pairs = 20000
    gamma, theta = rng.uniform(0.05, 0.9, n_pairs), 1 / np.arange(1, 11) ** 0.8
    j = np.repeat(np.arange(n_pairs), rng.integers(1, 4, n_pairs))
    k = np.clip(np.round(rng.normal((1 - gamma[j]) * 9, 3.0)), 0, 9).astype(int)
    clicked = (rng.random(len(j)) < theta[k] * gamma[j]).astype(float)
    cell, inv = np.unique(k * n_pairs + j, return_inverse=True)
    n, c = np.bincount(inv).astype(float), np.bincount(inv, weights=clicked)
    feature = gamma + rng.normal(0, 0.1, n_pairs)  # the scorer's noisy view of relevance
    group = np.digitize(feature, np.quantile(feature, np.linspace(0, 1, 21)[1:-1]))
    plain, _, _, _ = W.propensity_em(cell // n_pairs, cell % n_pairs, n, c, 10, n_pairs)
    shrunk, _, _, _ = W.propensity_em(cell // n_pairs, cell % n_pairs, n, c, 10, n_pairs,
                                   bucket_group=group, prior_rows=5.0)
    err = lambda t: np.abs(t / t[0] / theta - 1).max()  # noqa: E731
    assert err(shrunk) < 0.25 and err(plain) > 4 * err(shrunk)


def test_loss_weight_is_log_domain_and_bounded_at_tiny_temperature():
    p, y = np.array([0.999999, 0.5, 1e-6, 0.3]), np.array([1.0, 1.0, 1.0, 0.0])
    shift = W.bce(p, y).max()
    w = W.loss_weight(p, y, 0.01, shift)
    assert np.all(np.isfinite(w)) and np.all(w > 0) and w.max() == 1.0
    # ratios between rows that do not underflow are those of exp(BCE / T)
    w1 = W.loss_weight(p, y, 1.0, shift)
    assert w1[1] / w1[3] == pytest.approx(math.exp((W.bce(p, y)[1] - W.bce(p, y)[3]) / 1.0), rel=1e-12)


def test_normalise_scale_reaches_mean_one_across_hundreds_of_orders_of_magnitude():
    # the loss strategy at T = 0.02: a few rows near 1, most underflowed to the floor
    raw = np.concatenate([np.exp(-np.linspace(0, 600, 300)), np.full(700, W.TINY)])
    s = W.normalise_scale(lambda k: W.normalised(raw, k, 0.1, 10.0).mean(), 0.1, 10.0, raw.mean())
    assert W.normalised(raw, s, 0.1, 10.0).mean() == pytest.approx(1.0, abs=1e-8)


# ---------------------------------------------------------------- click model with a noise floor

def test_non_increasing_is_pool_adjacent_violators():
    got = W.non_increasing(np.array([1.0, 0.5, 0.7, 0.2, 0.3]), np.array([1.0, 1.0, 1.0, 1.0, 3.0]))
    assert got.tolist() == pytest.approx([1.0, 0.6, 0.6, 0.275, 0.275])
    assert W.non_increasing(np.array([0.9, 0.4]), np.ones(2)).tolist() == [0.9, 0.4]


def test_propensity_em_noise_floor_recovers_examination_under_flipped_clicks():
    """Clicks that happen whatever the position (flips) flatten plain EM's theta at deep positions;
    with the noise floor, theta / theta_1 comes back within 0.05 and eps near its true value."""
    rng = np.random.default_rng(4)
    positions, n_pairs = 10, 400
    theta = 1.0 / np.arange(1, positions + 1) ** 1.2
    gamma = rng.uniform(0.05, 0.95, n_pairs)
    k = rng.integers(0, positions, 60_000)
    j = rng.integers(0, n_pairs, 60_000)
    flip = rng.random(len(k)) < 0.2
    real = rng.random(len(k)) < theta[k] * gamma[j]
    clicked = np.where(flip, rng.random(len(k)) < 0.5, real)
    cell = k * n_pairs + j
    n = np.bincount(cell, minlength=positions * n_pairs).astype(float)
    c = np.bincount(cell, weights=clicked, minlength=positions * n_pairs)
    keep = n > 0
    kk, jj = np.divmod(np.flatnonzero(keep), n_pairs)
    plain, _, _, _ = W.propensity_em(kk, jj, n[keep], c[keep], positions, n_pairs)
    floor, _, _, eps = W.propensity_em(kk, jj, n[keep], c[keep], positions, n_pairs, noise_floor=True, monotone=True)
    err = lambda t: np.abs(t / t[0] - theta).mean()  # noqa: E731
    assert err(floor) < 0.05 < err(plain)
    assert eps == pytest.approx(0.1, abs=0.03)
    assert np.all(np.diff(floor) <= 1e-12)


def test_power_examination_fits_theta1_and_eta_from_expected_counts():
    pos = np.arange(1, 11, dtype=float)
    n_k = np.full(10, 5000.0)
    e_k = n_k * 0.8 * pos ** -1.2
    th = W.power_examination(e_k, n_k, pos)
    np.testing.assert_allclose(th, 0.8 * pos ** -1.2, rtol=0.03)


def test_propensity_em_with_power_examination_keeps_its_shape():
    rng = np.random.default_rng(5)
    theta = 0.9 / np.arange(1, 11) ** 1.5
    gamma = rng.uniform(0.05, 0.95, 300)
    k, j = rng.integers(0, 10, 40_000), rng.integers(0, 300, 40_000)
    clicked = rng.random(len(k)) < theta[k] * gamma[j]
    cell = k * 300 + j
    n = np.bincount(cell, minlength=3000).astype(float)
    c = np.bincount(cell, weights=clicked, minlength=3000)
    keep = n > 0
    kk, jj = np.divmod(np.flatnonzero(keep), 300)
    est, _, _, eps = W.propensity_em(kk, jj, n[keep], c[keep], 10, 300, power_positions=np.arange(1.0, 11.0))
    ratio = est / est[0]
    assert eps == 0.0
    np.testing.assert_allclose(np.log(ratio[1:]) / np.log(1 / np.arange(2, 11)), 1.5, atol=0.1)  # one eta


def _em_inputs(k, j, n, c, positions, n_buckets):
    n_k = np.maximum(np.bincount(k, weights=n, minlength=positions), W.EPS)
    n_j = np.maximum(np.bincount(j, weights=n, minlength=n_buckets), W.EPS)
    return (k, j, n, c, n_k, n_j, np.bincount(k, weights=c, minlength=positions) / n_k,
            np.bincount(j, weights=c, minlength=n_buckets) / n_j)


def test_squarem_reaches_plain_ems_fixed_point_in_fewer_steps():
    """The accelerated EM stops where plain EM stops (one step moving every parameter less than tol),
    at the same parameters, from every noise-floor start, in a fraction of the steps."""
    rng = np.random.default_rng(3)
    k, j, n, c, _ = _simulated_log(rng, n_pairs=150, rows_per_pair=200)
    n_b = int(j.max()) + 1
    args = _em_inputs(k, j, n.astype(float), c.astype(float), 10, n_b)
    group = np.arange(n_b) % 5
    for eps0 in W.NOISE_FLOOR_STARTS:
        plain = W._em_from(*args, eps0, 20000, 1e-9, group, 1.0, True, None, accelerate=False)
        fast = W._em_from(*args, eps0, 20000, 1e-9, group, 1.0, True, None)
        assert plain[2] < 20000 and fast[2] < plain[2] / 2
        np.testing.assert_allclose(fast[0] / fast[0][0], plain[0] / plain[0][0], atol=1e-5)
        np.testing.assert_allclose(fast[1], plain[1], atol=1e-5)
        assert fast[3] == pytest.approx(plain[3], abs=1e-5)
        assert fast[4] == pytest.approx(plain[4], abs=1e-3)


def test_squarem_converges_on_a_sparse_log_where_plain_em_runs_out_of_steps():
    """A few impressions a pair (the 10k-row fixed-cost log's shape): plain EM is still moving after
    2,000 steps; the accelerated one converges, to a likelihood at least as high."""
    rng = np.random.default_rng(5)
    k, j, n, c, _ = _simulated_log(rng, n_pairs=1500, rows_per_pair=3)
    n_b = int(j.max()) + 1
    args = _em_inputs(k, j, n.astype(float), c.astype(float), 10, n_b)
    plain = W._em_from(*args, 0.05, 2000, 1e-7, None, 0.0, True, None, accelerate=False)
    fast = W._em_from(*args, 0.05, 2000, 1e-7, None, 0.0, True, None)
    assert plain[2] == 2000 and fast[2] < 1000
    assert fast[4] >= plain[4] - 1e-9


def _beta_pairs(a_true: float, seed: int, pairs: int = 4000, shown: int = 16):
    """Pairs in 5 groups, relevance ~ Beta(a m_g, a (1 - m_g)), each shown `shown` times at random
    positions of 10 under theta_k = 1/k and 5 % noise clicks: cells (k, j, n, c)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 5, pairs)
    m_g = np.array([0.1, 0.2, 0.35, 0.5, 0.7])
    gamma = rng.beta(a_true * m_g[group], a_true * (1 - m_g[group]))
    theta = 1 / np.arange(1, 11)
    pos = rng.integers(0, 10, (pairs, shown))
    clicks = rng.random((pairs, shown)) < 0.05 + 0.95 * theta[pos] * gamma[:, None]
    return pos.ravel(), np.repeat(np.arange(pairs), shown), clicks.ravel().astype(float), theta, group, m_g


def test_the_empirical_prior_strength_recovers_how_much_pairs_of_a_group_differ():
    est = {}
    for a_true in (3.0, 30.0):
        k, j, c, theta, group, m_g = _beta_pairs(a_true, seed=1)
        est[a_true] = W.empirical_prior_rows(k, j, np.ones_like(c), c, theta, 0.05, group, m_g)
    assert 1.5 < est[3.0] < 6.0 and 15.0 < est[30.0] < 100.0


def test_the_em_with_an_empirical_prior_refits_at_the_estimated_strength():
    k, j, c, theta, group, _ = _beta_pairs(10.0, seed=2, pairs=2000)
    fixed = W.propensity_em_with_prior(k, j, np.ones_like(c), c, 10, 2000, group, 1.0, "fixed",
                                             noise_floor=True, monotone=True)
    fitted = W.propensity_em_with_prior(k, j, np.ones_like(c), c, 10, 2000, group, 1.0, "empirical_bayes",
                                              noise_floor=True, monotone=True)
    assert fixed[4] == 1.0 and 3.0 < fitted[4] < 40.0
    # the stronger prior pulls each pair's relevance toward its group's: less spread than the fixed fit
    assert np.var(fitted[1]) < np.var(fixed[1])
    assert W.propensity_em_with_prior(k, j, np.ones_like(c), c, 10, 2000, None, 1.0, "empirical_bayes")[4] == 1.0


def _ranked_flip_log(seed: int, flip: float, n_pairs: int = 1500, impressions: int = 16, positions: int = 10):
    """Cells of a log like the benchmark's: each pair seen `impressions` times near the position a
    noisy ranker gives it (not at every position), examination 1/k^1.2, a `flip` share of impressions
    whose click is a coin flip (P(click) = flip / 2 + (1 - flip) theta gamma)."""
    rng = np.random.default_rng(seed)
    gamma = rng.beta(0.6, 1.6, n_pairs)
    rank = np.argsort(np.argsort(-3.0 * gamma + rng.normal(0.0, 1.5, n_pairs))) / n_pairs * positions
    k = np.clip((rank[:, None] + rng.normal(0.0, 1.0, (n_pairs, impressions))).astype(int), 0, positions - 1)
    theta = 1.0 / np.arange(1, positions + 1) ** 1.2
    real = rng.random(k.shape) < theta[k] * gamma[:, None]
    clicked = np.where(rng.random(k.shape) < flip, rng.random(k.shape) < 0.5, real)
    cell = np.repeat(np.arange(n_pairs), impressions) * positions + k.ravel()
    uniq, inv = np.unique(cell, return_inverse=True)
    n = np.bincount(inv).astype(float)
    c = np.bincount(inv, weights=clicked.ravel().astype(float))
    return uniq % positions, uniq // positions, n, c, theta


def test_joint_fit_loses_the_noise_floor_that_the_marginal_fit_recovers():
    """With ~16 impressions a pair at the positions a ranker gives it, the joint fit (a free gamma per
    pair) puts the floor at 0 and flattens theta; with gamma integrated over the pairs' shared
    distribution, eps comes back near flip / 2 = 0.1 and theta / theta_1 within 0.05 on average."""
    k, j, n, c, theta = _ranked_flip_log(0, flip=0.2)
    args = (k, j, n, c, 10, int(j.max()) + 1)
    group = np.zeros(int(j.max()) + 1, dtype=np.int64)
    err = lambda t: np.abs(t / t[0] - theta).mean()  # noqa: E731
    joint, _, _, eps_joint = W.propensity_em(*args, bucket_group=group, prior_rows=1.0, noise_floor=True,
                                             monotone=True)
    marg, gamma, _, eps_marg = W.propensity_em(*args, bucket_group=group, prior_rows=1.0, noise_floor=True,
                                               monotone=True, shared_fit="marginal")
    assert eps_joint < 0.005 and err(joint) > 0.15
    assert 0.06 < eps_marg < 0.12 and err(marg) < 0.05
    assert np.all(np.diff(marg) <= 1e-12) and np.all((gamma > 0) & (gamma < 1))


def test_marginal_fit_finds_no_floor_where_there_is_no_noise():
    k, j, n, c, theta = _ranked_flip_log(1, flip=0.0)
    est, eps, steps = W.shared_fit_marginal(k, j, n, c, 10, monotone=True, max_iter=500, tol=1e-5)
    assert eps < 0.01 and np.abs(est / est[0] - theta).mean() < 0.05 and steps <= 500


def test_marginal_fit_samples_pairs_past_its_cell_budget_deterministically():
    k, j, n, c, _ = _ranked_flip_log(2, flip=0.2, n_pairs=800)
    full = W.shared_fit_marginal(k, j, n, c, 10, monotone=True, max_iter=300, tol=1e-5)
    a = W.shared_fit_marginal(k, j, n, c, 10, monotone=True, max_iter=300, tol=1e-5, max_cells=len(k) // 2)
    b = W.shared_fit_marginal(k, j, n, c, 10, monotone=True, max_iter=300, tol=1e-5, max_cells=len(k) // 2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and abs(a[1] - full[1]) < 0.03


def test_propensity_em_refuses_an_unknown_shared_fit():
    with pytest.raises(ValueError, match="shared_fit"):
        W.propensity_em(np.array([0]), np.array([0]), np.array([2.0]), np.array([1.0]), 1, 1, shared_fit="both")
