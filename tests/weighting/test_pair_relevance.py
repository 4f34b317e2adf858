"""Each pair's relevance solved from its own cells given the click model's shared parameters is the
driver EM's gamma at its fixed point (udfs/weighting/pair_relevance.py against weights.propensity_em)."""
from __future__ import annotations

import numpy as np
import pytest

from udfs.weighting import weights as W
from udfs.weighting.pair_relevance import SharedParameters, pair_evidence, solve_pair_relevance


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
    got, r_got, n_got, m_got = pair_evidence(k, j, n, c, 400, group, SharedParameters(theta, eps, m_g, prior_rows))
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
