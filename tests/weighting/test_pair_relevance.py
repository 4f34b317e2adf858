"""Each pair's relevance solved from its own cells given the click model's shared parameters is the
driver EM's gamma at its fixed point (udfs/weighting/pair_relevance.py against weights.propensity_em)."""
from __future__ import annotations

import numpy as np
import pytest

from udfs.weighting import pair_relevance
from udfs.weighting import weights as W
from udfs.weighting.pair_relevance import (
    SharedParameters,
    click_model_probability,
    held_out_relevance,
    pair_evidence,
    pair_held_out,
    shared_from_sample,
    solve_pair_relevance,
)


def _log(rng, n_pairs: int, rows_per_pair: int, eps: float = 0.0):
    gamma = rng.uniform(0.05, 0.9, n_pairs)
    theta = 1 / np.arange(1, 11) ** 0.8
    k, j, n, c = [], [], [], []
    for pair in range(n_pairs):
        shown = np.clip(np.round(rng.normal((1 - gamma[pair]) * 9, 3.0, rows_per_pair)), 0, 9).astype(int)
        for pos in np.unique(shown):
            m = int((shown == pos).sum())
            k.append(pos)
            j.append(pair)
            n.append(m)
            c.append(rng.binomial(m, eps + (1 - eps) * theta[pos] * gamma[pair]))
    return np.array(k), np.array(j), np.array(n, dtype=float), np.array(c, dtype=float)


@pytest.mark.parametrize("prior_rows, noise_floor", [(0.0, False), (1.0, True), (5.0, False)])
def test_solved_relevance_is_the_em_fixed_points(prior_rows, noise_floor):
    rng = np.random.default_rng(11)
    k, j, n, c = _log(rng, n_pairs=400, rows_per_pair=12, eps=0.05 if noise_floor else 0.0)
    group = np.arange(400) % 4
    theta, gamma, _, eps = W.propensity_em(k, j, n, c, 10, 400, max_iter=20000, tol=1e-10,
                                           bucket_group=group if prior_rows else None, prior_rows=prior_rows,
                                           noise_floor=noise_floor, monotone=True)
    r_j, n_j, m_j = W.em_bucket_evidence(k, j, n, c, theta, gamma, 400, bucket_group=group if prior_rows else None,
                                         prior_rows=prior_rows, eps=eps)
    m_g = np.bincount(group, weights=r_j) / np.bincount(group, weights=n_j) if prior_rows else np.zeros(0)
    got, r_got, n_got, m_got = pair_evidence(k, j, n, c, 400, group, SharedParameters(theta, eps, m_g, prior_rows, 0.0))
    np.testing.assert_allclose(got, gamma, atol=2e-6)
    np.testing.assert_allclose(r_got, r_j, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(n_got, n_j)
    np.testing.assert_allclose(m_got, m_j, rtol=1e-4, atol=1e-6)


def test_a_pair_with_only_clicks_or_only_skips_sits_on_the_bound():
    """Without a prior the likelihood of a pair clicked at every impression rises to gamma = 1 and of a
    pair never clicked falls to 0: the solve returns the EM's clip bounds, not a Newton overshoot."""
    k = np.array([0, 1, 0, 2, 1])
    pair = np.array([0, 0, 1, 1, 2])
    n = np.array([3.0, 2.0, 4.0, 1.0, 5.0])
    c = np.array([3.0, 2.0, 0.0, 0.0, 2.0])
    theta = np.array([0.9, 0.6, 0.4])
    gamma = solve_pair_relevance(k, pair, n, c, 3, theta, 0.0, None, 0.0)
    assert gamma[0] == 1 - W.EPS and gamma[1] == W.EPS and W.EPS < gamma[2] < 1 - W.EPS
    # Pair 2 alone: the likelihood's stationary point 2 / (5 x 0.6) by hand.
    assert gamma[2] == pytest.approx(2 / 3, abs=1e-9)
    # A prior pulls both off the bounds toward m.
    shrunk = solve_pair_relevance(k, pair, n, c, 3, theta, 0.0, np.full(3, 0.3), 1.0)
    assert W.EPS < shrunk[1] < shrunk[0] < 1 - W.EPS


def test_a_pairs_relevance_does_not_depend_on_the_pairs_solved_with_it():
    """Spark solves pairs in Arrow batches whose make-up follows the config (maxRecordsPerBatch): each
    pair's bits must come from its own cells alone."""
    rng = np.random.default_rng(2)
    k, j, n, c = _log(rng, n_pairs=300, rows_per_pair=6, eps=0.05)
    theta = 1 / np.arange(1, 11) ** 0.7
    prior = np.full(300, 0.35)
    together = solve_pair_relevance(k, j, n, c, 300, theta, 0.03, prior, 1.0)
    for first, last in ((0, 7), (7, 150), (150, 300)):   # the same pairs, three batches
        cells = (j >= first) & (j < last)
        alone = solve_pair_relevance(k[cells], j[cells] - first, n[cells], c[cells], last - first, theta, 0.03,
                                     prior[first:last], 1.0)
        np.testing.assert_array_equal(alone, together[first:last])


def _shared(theta, eps: float, m: float | None, prior_rows: float, pooled: float = 0.5) -> SharedParameters:
    return SharedParameters(np.asarray(theta, dtype=float), eps, np.zeros(0) if m is None else np.array([m]),
                            prior_rows, pooled)


def test_leave_one_out_re_solves_the_pair_without_the_row():
    """A click at theta 1 and a skip at theta 0.3, a = 1, m = 0.2: the full fit's gamma is 0.556. Taking
    the click's E-step evidence out of R alone (the other rows' posteriors kept at 0.556) gave 0.333; the
    pair re-solved from the skip and the prior alone gives 0.158, the click's P(click) theta x 0.158."""
    k, pair, n, c = np.array([0, 1]), np.array([0, 0]), np.array([1.0, 1.0]), np.array([1.0, 0.0])
    group = np.array([0])
    shared = _shared([1.0, 0.3], 0.0, 0.2, 1.0)
    assert pair_evidence(k, pair, n, c, 1, group, shared)[0][0] == pytest.approx(5 / 9, abs=1e-9)
    g_click, g_skip = pair_held_out(k, pair, n, c, 1, group, shared)
    assert g_click[0] == pytest.approx(0.158084, abs=1e-6) and np.isnan(g_click[1]) and np.isnan(g_skip[0])
    assert g_skip[1] == pytest.approx(0.6, abs=1e-9)    # the click and the prior: (1 + 0.2) / (1 + 1)
    p = click_model_probability(np.array([1.0, 0.3]), np.array([0, 0]), np.array([0, 1]), np.array([1, 0]),
                                k, pair, n, c, 1, group, shared)
    assert p.tolist() == pytest.approx([0.158084, 0.3 * 0.6], abs=1e-6)
    # With a noise floor: eps + (1 - eps) theta gamma_-i, gamma_-i the skip-and-prior pair's maximiser.
    floored = _shared([1.0, 0.3], 0.05, 0.2, 1.0)
    alone = solve_pair_relevance(np.array([1]), np.array([0]), np.array([1.0]), np.array([0.0]), 1,
                                 floored.theta, 0.05, np.array([0.2]), 1.0)[0]
    p = click_model_probability(np.array([1.0]), np.array([0]), np.array([0]), np.array([1]), k, pair, n, c, 1,
                                group, floored)
    assert p[0] == pytest.approx(0.05 + 0.95 * alone, abs=1e-9) and alone < 0.2


def test_a_row_outside_the_fit_gets_the_pairs_fitted_relevance():
    """A click at a position too rare to fit (theta carried down: 1) on a pair whose only fitted impression
    is a skip at theta 1, a = 1, m = 0.2: the fit never saw the click, so nothing is subtracted; its P(click)
    is theta x the pair's gamma 0.1 (the old code took the click out of evidence it was never in: 1e-6)."""
    k, pair, n, c = np.array([0]), np.array([0]), np.array([1.0]), np.array([0.0])
    group, shared = np.array([0]), _shared([1.0], 0.0, 0.2, 1.0)
    p = click_model_probability(np.array([1.0, 1.0]), np.array([0, 0]), np.array([-1, 0]), np.array([1, 0]),
                                k, pair, n, c, 1, group, shared)
    assert p[0] == pytest.approx(0.1, abs=1e-9)            # (0 + 0.2) / (1 + 1)
    assert p[1] == pytest.approx(0.2, abs=1e-9)            # the skip held out: the prior alone


def test_a_pairs_only_impression_without_a_prior_falls_back_to_the_pooled_relevance():
    """a = 0 and the row the pair's only impression: no evidence is left, so the pooled relevance of the
    fitted pairs, never the pair's own click rate (1: a noise click vouching for itself)."""
    k, pair, n, c = np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([1.0, 2.0, 1.0]), np.array([1.0, 1.0, 0.0])
    shared = _shared([0.8, 0.5], 0.0, None, 0.0, pooled=0.37)
    g_click, g_skip = pair_held_out(k, pair, n, c, 2, None, shared)
    assert g_click[0] == 0.37 and np.isnan(g_skip[0])
    assert g_click[1] == W.EPS      # evidence left (two skips): the pair's own maximiser, no fallback
    p = click_model_probability(np.array([0.8]), np.array([0]), np.array([0]), np.array([1]), k, pair, n, c, 2,
                                None, shared)
    assert p[0] == pytest.approx(0.8 * 0.37, abs=1e-12)


def test_leave_one_out_matches_a_solve_per_row_and_not_the_batch(monkeypatch):
    """Every (cell, click/skip) against the pair re-solved by hand with that one row taken out; the answer
    does not depend on the pairs solved alongside or on the chunking (Spark's batches)."""
    rng = np.random.default_rng(5)
    k, j, n, c = _log(rng, n_pairs=60, rows_per_pair=8, eps=0.05)
    theta = 1 / np.arange(1, 11) ** 0.7
    prior = rng.uniform(0.1, 0.5, 60)
    g_click, g_skip = held_out_relevance(k, j, n, c, 60, theta, 0.03, prior, 2.0, prior)
    for i in range(len(k)):
        cells = np.flatnonzero(j == j[i])
        for clicked, got in ((True, g_click[i]), (False, g_skip[i])):
            if (c[i] if clicked else n[i] - c[i]) == 0:
                assert np.isnan(got)
                continue
            nn, cc = n[cells].copy(), c[cells].copy()
            own = cells == i
            nn[own] -= 1
            cc[own] -= clicked
            expected = solve_pair_relevance(k[cells], np.zeros(len(cells), dtype=int), nn, cc, 1, theta, 0.03,
                                            prior[j[i]:j[i] + 1], 2.0)[0]
            assert got == pytest.approx(expected, abs=1e-10)
    monkeypatch.setattr(pair_relevance, "HELD_OUT_CHUNK_CELLS", 7)
    small = held_out_relevance(k, j, n, c, 60, theta, 0.03, prior, 2.0, prior)
    first = j < 25
    part = held_out_relevance(k[first], j[first], n[first], c[first], 25, theta, 0.03, prior[:25], 2.0, prior[:25])
    for whole, got, piece in zip((g_click, g_skip), small, part):
        np.testing.assert_array_equal(got, whole)
        np.testing.assert_array_equal(piece, whole[first])


def test_a_group_no_sampled_pair_fell_in_gets_the_pooled_relevance_not_zero():
    """Past max_driver_cells the shared parameters come from a sample of pairs: a p_model group the sample
    missed has no evidence of its own, and its prior is the pooled relevance (0 would pull its pairs'
    labels to 0 and put the scorer's P(click) there at the floor)."""
    from jobs.config import load_config
    from udfs.weighting.settings import WeightingSettings

    k, j, n, c = _log(np.random.default_rng(5), 60, 30)
    group = (np.arange(60) % 3).astype(np.int64)        # groups 0-2 sampled; group 3 holds no sampled pair
    w = WeightingSettings.from_config(load_config()).but(em_prior_rows=1.0)
    shared, _ = shared_from_sample(k, j, n, c, 60, group, 4, np.arange(1, 11), w)
    assert np.all(shared.group_relevance[:3] > 0)
    assert shared.group_relevance[3] == pytest.approx(shared.pooled_relevance) and shared.pooled_relevance > 0
