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

The same solve gives a row's leave-one-out relevance exactly (held_out_relevance): the pair's gamma
re-solved from its cells with the row taken out of its (pair, position) cell, theta, eps and m held.
Rows of a cell share the answer, one for its clicks and one for its skips.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from udfs.weighting import weights
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.slots import slot_context
from udfs.weighting.weights import EPS, _e_step

NEWTON_STEPS = 100     # safeguarded Newton per pair: quadratic near the root, bisection where it strays
NEWTON_TOL = 1e-12


@dataclass(frozen=True)
class SharedParameters:
    """The click model's parameters shared by pairs: theta per position index, the noise floor, the
    regression prior's pooled relevance per group (empty: no prior), its strength in rows, and the
    fitted pairs' pooled relevance sum R / sum n (what a held-out relevance with no evidence left
    falls back to without a prior)."""
    theta: np.ndarray
    eps: float
    group_relevance: np.ndarray
    prior_rows: float
    pooled_relevance: float


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
        power_positions=np.asarray(positions, dtype=np.float64) if w.em_examination == "power" else None,
        blocks=slot_context(positions) if w.click_context else None)
    group_relevance = np.zeros(0)
    r_j, n_j, _ = weights.em_bucket_evidence(k, pair, n, c, theta, gamma, n_pairs, eps=eps)
    if n_groups:
        group_relevance = weights.pooled_group_relevance(pair_group, r_j, n_j, n_groups)
        # a group no sampled pair fell in: the log's pooled relevance, not 0 (its pairs' labels shrink
        # toward it, and p_scorer_click is theta_k times it)
        unseen = np.bincount(pair_group, weights=n_j, minlength=n_groups) <= 0
        group_relevance[unseen] = pooled_relevance(r_j, n_j)
    return (SharedParameters(np.asarray(theta, dtype=np.float64), float(eps), group_relevance,
                             float(prior_rows) if n_groups else 0.0, pooled_relevance(r_j, n_j)), iterations)


def pooled_relevance(r_j: np.ndarray, n_j: np.ndarray) -> float:
    """The pairs' pooled relevance sum R / sum n: a held-out relevance's fallback without a prior."""
    return float(np.sum(r_j) / max(float(np.sum(n_j)), EPS))


HELD_OUT_CHUNK_CELLS = 1 << 18   # pseudo-pair cells solved at once: ~50 MB peak whatever the pairs' sizes


def held_out_relevance(k: np.ndarray, pair: np.ndarray, n: np.ndarray, c: np.ndarray, n_pairs: int,
                       theta: np.ndarray, eps: float, prior_m: np.ndarray | None, prior_rows: float,
                       fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell (position index k, pair, n impressions, c clicks): the pair's gamma re-solved
    (solve_pair_relevance, theta, eps and the pair's m held) with one of the cell's clicks left out,
    and with one of its skips left out; NaN where the cell has none. A pair left with no evidence
    (n - 1 + a <= 0: the row was its only impression and there is no prior) gets `fallback` (per pair),
    never its own click rate.

    Each (cell, kind) is a pseudo-pair holding all its pair's cells, the one cell decremented: at most
    2 x cells pseudo-pairs of their pair's size, solved HELD_OUT_CHUNK_CELLS cells at a time. Each
    pseudo-pair stops at its own convergence, so neither the chunks nor the pairs solved alongside
    move a bit."""
    k, pair = np.asarray(k, dtype=np.int64), np.asarray(pair, dtype=np.int64)
    n, c = np.asarray(n, dtype=np.float64), np.asarray(c, dtype=np.float64)
    a = prior_rows if prior_m is not None else 0.0
    order = np.argsort(pair, kind="stable")   # a pair's cells in their given (position) order
    size = np.bincount(pair, minlength=n_pairs)
    start = np.cumsum(size) - size
    cell = np.arange(len(k))
    task_cell = np.concatenate([cell[c > 0], cell[n - c > 0]])
    task_click = np.concatenate([np.ones(int((c > 0).sum()), dtype=bool), np.zeros(int((n - c > 0).sum()), dtype=bool)])
    task_pair = pair[task_cell]
    task_size = size[task_pair]
    ends = np.cumsum(task_size)
    solved = np.empty(len(task_cell))
    lo = 0
    while lo < len(task_cell):
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + HELD_OUT_CHUNK_CELLS, side="right")))
        sz = task_size[lo:hi]
        pseudo = np.repeat(np.arange(hi - lo), sz)
        offset = np.arange(int(sz.sum())) - np.repeat(np.cumsum(sz) - sz, sz)
        members = order[np.repeat(start[task_pair[lo:hi]], sz) + offset]
        own = members == task_cell[lo:hi][pseudo]
        solved[lo:hi] = solve_pair_relevance(
            k[members], pseudo, n[members] - own, c[members] - (own & task_click[lo:hi][pseudo]), hi - lo, theta,
            eps, None if prior_m is None else prior_m[task_pair[lo:hi]], prior_rows)
        lo = hi
    left = np.bincount(pair, weights=n, minlength=n_pairs)[task_pair] - 1.0 + a
    solved = np.where(left > EPS, solved, np.asarray(fallback, dtype=np.float64)[task_pair])
    g_click, g_skip = np.full(len(k), np.nan), np.full(len(k), np.nan)
    g_click[task_cell[task_click]] = solved[task_click]
    g_skip[task_cell[~task_click]] = solved[~task_click]
    return g_click, g_skip


def pair_held_out(k: np.ndarray, pair: np.ndarray, n: np.ndarray, c: np.ndarray, n_pairs: int,
                  pair_group: np.ndarray | None, shared: SharedParameters) -> tuple[np.ndarray, np.ndarray]:
    """held_out_relevance with the shared parameters: each pair's m its group's pooled relevance (the
    fallback too); without a prior no m, and the fallback is the pooled relevance of all fitted pairs."""
    has_prior = len(shared.group_relevance) > 0 and pair_group is not None and shared.prior_rows > 0
    prior_m = shared.group_relevance[pair_group] if has_prior else None
    fallback = prior_m if prior_m is not None else np.full(n_pairs, shared.pooled_relevance)
    return held_out_relevance(k, pair, n, c, n_pairs, shared.theta, shared.eps, prior_m,
                              shared.prior_rows if has_prior else 0.0, fallback)


def click_probability(theta: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    """eps + (1 - eps) theta gamma, gamma clipped to [EPS, 1 - EPS] and the result as clip_prob."""
    g = np.clip(np.asarray(gamma, dtype=np.float64), EPS, 1.0 - EPS)
    return weights.clip_prob(eps + (1.0 - eps) * np.asarray(theta, dtype=np.float64) * g)


def click_model_probability(row_theta: np.ndarray, row_pair: np.ndarray, row_cell: np.ndarray, clicked: np.ndarray,
                            k: np.ndarray, pair: np.ndarray, n: np.ndarray, c: np.ndarray, n_pairs: int,
                            pair_group: np.ndarray | None, shared: SharedParameters) -> np.ndarray:
    """Leave-one-out P(click) of rows under the position-based click model: eps + (1 - eps) theta_k
    gamma_-i, gamma_-i the pair's relevance re-solved without the row (a noise click cannot vouch for
    itself; confident learning and RHO-LOSS's irreducible loss need such out-of-sample probabilities).
    Rows: theta of the row's position (carried down to positions too rare to fit), its pair, its cell
    among the fitted cells (k, pair, n, c) or -1 when its position was not fitted (its pair's gamma
    never saw it: the fitted gamma as is), its click. The numpy reference of the score job's p_click
    (udfs/weighting/spark.py with_click_probability)."""
    row_cell = np.asarray(row_cell, dtype=np.int64)
    gamma = pair_evidence(k, pair, n, c, n_pairs, pair_group, shared)[0]
    g_click, g_skip = pair_held_out(k, pair, n, c, n_pairs, pair_group, shared)
    cell = np.maximum(row_cell, 0)
    held = np.where(np.asarray(clicked) > 0, g_click[cell], g_skip[cell])
    return click_probability(row_theta, np.where(row_cell >= 0, held, gamma[np.asarray(row_pair)]), shared.eps)
