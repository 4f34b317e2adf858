"""Each pair's relevance under the click model, given the model's shared parameters: how the score job
labels every pair of a log whose cells do not all come to the driver. Pure numpy.

The driver's EM (weights.propensity_em) fits theta per position, the noise floor eps, each pair's
gamma and (with the regression prior) each p_model group's pooled relevance m, all together. Given
theta, eps and m, a pair's gamma at the EM's fixed point is the one maximiser of that pair's own
penalised likelihood

    sum over its cells  c log(eps + (1 - eps) theta_k gamma) + (n - c) log(1 - theta_k gamma)
                        + a m log(gamma) + a (1 - m) log(1 - gamma)

(concave in gamma; its stationary point is the EM's gamma update gamma = (R + a m) / (n + a)). So a
fit of the shared parameters on a sample of pairs (udfs/weighting/spark_em.py) labels every other
pair from that pair's cells alone, inside the partition that holds it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from udfs.weighting import weights
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.weights import EPS, _e_step

NEWTON_STEPS = 100     # safeguarded Newton per pair: quadratic near the root, bisection where it strays
NEWTON_TOL = 1e-12


@dataclass(frozen=True)
class SharedParameters:
    """The click model's parameters shared by pairs: theta per position index, the noise floor, the
    regression prior's pooled relevance per group (empty: no prior) and its strength in rows."""
    theta: np.ndarray
    eps: float
    group_relevance: np.ndarray
    prior_rows: float


def solve_pair_relevance(k: np.ndarray, pair: np.ndarray, n: np.ndarray, c: np.ndarray, n_pairs: int,
                         theta: np.ndarray, eps: float, prior_m: np.ndarray | None, prior_rows: float
                         ) -> np.ndarray:
    """Each pair's gamma in [EPS, 1 - EPS] maximising its penalised likelihood given theta, eps and its
    group's m (`prior_m`, one per pair; None or prior_rows 0: no prior). Cells: position index k,
    pair index `pair` (0..n_pairs-1), impressions n, clicks c."""
    th = theta[k]
    u = n - c
    live = 1.0 - eps
    a = prior_rows if prior_m is not None else 0.0
    m = prior_m if prior_m is not None else np.zeros(n_pairs)

    def slope(gamma: np.ndarray, curvature: bool) -> tuple[np.ndarray, np.ndarray | None]:
        g = gamma[pair]
        p_click = np.maximum(eps + live * th * g, EPS * EPS)
        skip = np.maximum(1.0 - th * g, EPS * EPS)
        d1 = np.bincount(pair, weights=c * live * th / p_click - u * th / skip, minlength=n_pairs)
        d1 += a * m / gamma - a * (1.0 - m) / (1.0 - gamma)
        if not curvature:
            return d1, None
        d2 = np.bincount(pair, weights=-c * (live * th / p_click) ** 2 - u * (th / skip) ** 2, minlength=n_pairs)
        d2 -= a * m / gamma ** 2 + a * (1.0 - m) / (1.0 - gamma) ** 2
        return d1, d2

    lo, hi = np.full(n_pairs, EPS), np.full(n_pairs, 1.0 - EPS)
    at_hi, at_lo = slope(hi, False)[0] >= 0, slope(lo, False)[0] <= 0   # the maximum sits on a bound
    n_j = np.bincount(pair, weights=n, minlength=n_pairs)
    exposure = np.bincount(pair, weights=n * th, minlength=n_pairs)
    clicks = np.bincount(pair, weights=c, minlength=n_pairs)
    # Start: the pair's clicks above the floor over its expected examinations.
    gamma = np.clip((clicks - eps * n_j) / np.maximum(live * exposure, EPS), 0.01, 0.99)
    gamma = np.where(at_hi, hi, np.where(at_lo, lo, gamma))
    free = ~(at_hi | at_lo)
    for _ in range(NEWTON_STEPS):
        # Newton on h = gamma (1 - gamma) d1, which has d1's root but stays bounded near 0 and 1 (where
        # d1's a m / gamma and skip terms make plain Newton crawl); bisection where a step leaves the
        # bracket or h rises.
        d1, d2 = slope(gamma, True)
        lo = np.where(free & (d1 > 0), gamma, lo)
        hi = np.where(free & (d1 < 0), gamma, hi)
        spread = gamma * (1.0 - gamma)
        h, dh = spread * d1, (1.0 - 2.0 * gamma) * d1 + spread * d2
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = np.where(dh < 0, gamma - h / dh, np.nan)
        inside = (newton >= lo) & (newton <= hi)
        new = np.where(free, np.where(inside, newton, 0.5 * (lo + hi)), gamma)
        # A pair stops at its own convergence: its steps, and so its bits, depend on its cells alone,
        # never on which pairs share its Arrow batch.
        free &= ~(np.abs(new - gamma) < NEWTON_TOL)
        gamma = new
        if not free.any():
            break
    return gamma


def pair_evidence(k: np.ndarray, pair: np.ndarray, n: np.ndarray, c: np.ndarray, n_pairs: int,
                  pair_group: np.ndarray | None, shared: SharedParameters
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: gamma, and weights.em_bucket_evidence's R (expected relevant impressions), n and m (the
    group's pooled relevance; r / n without a prior), from the pairs' cells and the shared parameters."""
    has_prior = len(shared.group_relevance) > 0 and pair_group is not None
    prior_m = shared.group_relevance[pair_group] if has_prior else None
    gamma = solve_pair_relevance(k, pair, n, c, n_pairs, shared.theta, shared.eps, prior_m, shared.prior_rows)
    _, r1, _ = _e_step(n, c, shared.theta[k], gamma[pair], shared.eps)
    r_j = np.bincount(pair, weights=r1, minlength=n_pairs)
    n_j = np.bincount(pair, weights=n, minlength=n_pairs)
    return gamma, r_j, n_j, (prior_m if prior_m is not None else r_j / np.maximum(n_j, EPS))


def shared_from_sample(k: np.ndarray, pair: np.ndarray, n: np.ndarray, c: np.ndarray, n_pairs: int,
                       pair_group: np.ndarray | None, n_groups: int, positions: np.ndarray, w: WeightingSettings
                       ) -> tuple[SharedParameters, int]:
    """The click model's shared parameters fitted by the driver's EM (weights.propensity_em, with the
    score job's settings) on the cells of a sample of pairs: theta per position index (`positions`,
    1-based, for em_examination power), the noise floor, each group's pooled relevance at the fit (as
    em_bucket_evidence's prior m; none without a prior, n_groups 0). Also the EM's steps."""
    grouped = pair_group if n_groups else None
    theta, gamma, iterations, eps, prior_rows = weights.propensity_em_with_prior(
        k, pair, n, c, len(positions), n_pairs, grouped, w.em_prior_rows, w.em_prior_fit,
        noise_floor=w.em_noise_floor, monotone=w.em_monotone, shared_fit=w.em_shared_fit,
        power_positions=np.asarray(positions, dtype=np.float64) if w.em_examination == "power" else None)
    group_relevance = np.zeros(0)
    if n_groups:
        r_j, n_j, _ = weights.em_bucket_evidence(k, pair, n, c, theta, gamma, n_pairs, eps=eps)
        group_relevance = (np.bincount(pair_group, weights=r_j, minlength=n_groups)
                           / np.maximum(np.bincount(pair_group, weights=n_j, minlength=n_groups), EPS))
    return (SharedParameters(np.asarray(theta, dtype=np.float64), float(eps), group_relevance,
                             float(prior_rows) if n_groups else 0.0), iterations)
