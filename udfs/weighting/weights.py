"""Importance signals and weighting strategies: pure numpy functions (Spark glue is elsewhere).

Notation: y click label, p model probability of a click / relevance, y_bar base click rate,
H binary entropy. Every strategy returns a *raw* positive weight; the score job then rescales
all rows to a global mean of 1 and clips to [w_min, w_max] (see `normalise_scale`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

EPS = 1e-6
BCE_MAX = float(-np.log(EPS))  # the largest BCE a clipped probability can give
TINY = 1e-300                  # positive floor for raw weights that underflow


def clip_prob(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) in nats."""
    p = clip_prob(p)
    return -(p * np.log(p) + (1.0 - p) * np.log(1.0 - p))


def bce(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row binary cross-entropy of probability p against label y (seed 000)."""
    p = clip_prob(p)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def bce_with_logits(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """BCE(sigmoid(z), y) from the logit, without clipping: log(1 + e^z) - y z, computed stably."""
    z = np.asarray(z, dtype=np.float64)
    return np.logaddexp(0.0, z) - np.asarray(y, dtype=np.float64) * z


def el2n(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """EL2N score |p - y| (Paul et al. 2021) for a single-logit binary model."""
    return np.abs(np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64))


def information_gain(p: np.ndarray, base_rate: float) -> np.ndarray:
    """IG = H(y_bar) - H(p) (seed 001): how much the model's view of the row beats the prior."""
    return binary_entropy(np.array([base_rate]))[0] - binary_entropy(p)


def reducible(signal_model: np.ndarray, signal_holdout: np.ndarray, temperature: float) -> np.ndarray:
    """exp((s_model - s_holdout) / T), the difference clipped to [-20, 20]: RHO-LOSS's reducible form
    of a hardness signal (Mindermann et al. 2022). s_holdout is the same signal under a model that did
    not see the row (here the click model's leave-one-out P(click)): a noisy click is hard for both,
    so its reducible part is small; a row the scorer gets wrong but the log's other impressions
    explain is what is left to learn."""
    d = np.asarray(signal_model, dtype=np.float64) - np.asarray(signal_holdout, dtype=np.float64)
    return np.exp(np.clip(d, -20.0, 20.0) / float(temperature))


def position_propensity(
    positions: np.ndarray, clicks: np.ndarray, relevance: np.ndarray, rows: np.ndarray,
    floor: float, min_rows: int = 20,
) -> dict[int, float]:
    """Examination propensity per position, estimated from the log itself.

    Per position k: clicks_k / sum_k(p_rel), i.e. the click-through rate the position actually
    got relative to what the scorer says its items deserve (clicks = examination x relevance).
    Normalised to position 1, made non-increasing (examination does not grow with rank), and
    floored. Positions with fewer than `min_rows` rows inherit the previous estimate.
    """
    order = np.argsort(positions)
    positions, clicks, relevance, rows = (np.asarray(a)[order] for a in (positions, clicks, relevance, rows))
    out: dict[int, float] = {}
    prev = 1.0
    first: float | None = None
    for k, c, r, n in zip(positions, clicks, relevance, rows):
        if n >= min_rows and r > 0 and c > 0:
            ratio = float(c) / float(r)
            if first is None:
                first = ratio
            est = min(prev, ratio / first)
        else:
            est = prev
        est = float(np.clip(est, floor, 1.0))
        out[int(k)] = est
        prev = est
    return out


def action_value(
    clicked: np.ndarray, added_to_cart: np.ndarray, purchased: np.ndarray, dwell_ms: np.ndarray,
    values: Mapping[str, float], long_dwell_ms: float,
) -> np.ndarray:
    """purchase > cart > click with long dwell > click > skip."""
    clicked = np.nan_to_num(np.asarray(clicked, dtype=np.float64))
    cart = np.nan_to_num(np.asarray(added_to_cart, dtype=np.float64))
    bought = np.nan_to_num(np.asarray(purchased, dtype=np.float64))
    dwell = np.nan_to_num(np.asarray(dwell_ms, dtype=np.float64))
    w = np.full(clicked.shape, float(values["skip"]))
    w = np.where(clicked > 0, values["click"], w)
    w = np.where((clicked > 0) & (dwell >= long_dwell_ms), values["long_dwell"], w)
    w = np.where(cart > 0, values["cart"], w)
    return np.where(bought > 0, values["purchase"], w)


def loss_weight(p: np.ndarray, y: np.ndarray, temperature: float, shift: float = BCE_MAX) -> np.ndarray:
    """exp((BCE - shift) / T): seed 000's softmax over per-row losses, up to the global scale.

    Worked in the log domain so a small T cannot overflow: `shift` is the largest loss in the
    table (the score job measures it), so the largest raw weight is exactly 1 and the mean is at
    least 1/rows, well inside the exact decimal aggregates. Rows whose weight underflows get
    TINY, which normalisation clips to w_min like any row that far below the rest.
    """
    return np.maximum(np.exp((bce(p, y) - shift) / temperature), TINY)


def normalised(raw: np.ndarray, scale: float, w_min: float, w_max: float) -> np.ndarray:
    return np.clip(np.asarray(raw, dtype=np.float64) * scale, w_min, w_max)


def normalise_scale(mean_of_clipped, w_min: float, w_max: float, raw_mean: float,
                    tol: float = 1e-9, max_iter: int = 200) -> float:
    """Find s with mean(clip(s * raw, w_min, w_max)) == 1.

    `mean_of_clipped(s)` evaluates that mean (in Spark: one aggregate over cached raw weights).
    The mean is continuous and non-decreasing in s, so a bracketed search converges;
    w_min <= 1 <= w_max (validated in config) guarantees a solution exists. Raw weights can span
    hundreds of orders of magnitude (the loss strategy at a small temperature), so the search
    grows s geometrically until the root is bracketed and bisects in log space while the bracket
    is wide, then refines with secant / plain bisection.
    """
    lo, hi, f_lo, f_hi = 0.0, None, -1.0, None
    s = 1.0 / raw_mean  # exact when nothing is clipped
    growth, last_side = 2.0, 0
    for _ in range(max_iter):
        f = mean_of_clipped(s) - 1.0
        if abs(f) <= tol:
            return s
        side = 1 if f > 0 else -1
        if side > 0:
            hi, f_hi = s, f
        else:
            lo, f_lo = s, f
        if hi is None:
            growth = max(growth * growth, 1.0 / (1.0 + f))  # the step factor squares: 1e300 is ~10 steps away
            s = min(s * growth, 1e308)
        elif lo == 0.0:
            s = hi / (2.0 * (1.0 + f))
        elif hi / lo > 2.0:
            s = math.sqrt(lo * hi)  # geometric bisection across orders of magnitude
        else:
            if side == last_side:  # Illinois: the endpoint kept twice has its value halved
                if side > 0:
                    f_lo /= 2.0
                else:
                    f_hi /= 2.0
            s = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)  # regula falsi
            if not (lo < s < hi):
                s = (lo + hi) / 2.0
        last_side = side
    return s


# ---------------------------------------------------------------- label-noise suspicion (denoise)

def confident_thresholds(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Per-class thresholds of confident learning (Northcutt et al. 2021), binary case.

    t1 = mean p(click) over rows labelled 1, t0 = mean p(no click) over rows labelled 0: the
    model's average self-confidence in each class. The score job computes the same two means with
    one Spark aggregate; this array version is for tests and small data.
    """
    p, y = clip_prob(p), np.asarray(y, dtype=np.float64)
    pos, neg = y > 0, y <= 0
    t1 = float(p[pos].mean()) if pos.any() else 0.5
    t0 = float((1.0 - p[neg]).mean()) if neg.any() else 0.5
    return t0, t1


def label_noise(p: np.ndarray, y: np.ndarray, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """(noise_score in (0, 1), suspect bool) per row: how confidently the model is against the label.

    With p_other = the model's probability of the class the row is *not* labelled with, t_other /
    t_label that class's / the label's threshold:
      suspect     = p_other >= t_other and (p_label < t_label or p_other > p_label)
                    (the row falls off the diagonal of the confident joint: the other class is
                    above its threshold and wins the arg-max among classes above threshold);
      noise_score = (p_other / t_other) / (p_other / t_other + p_label / t_label)
                    (the other class's share after per-class threshold calibration; > 0.5 iff the
                    threshold-scaled evidence is against the label; used for ranking / soft weights).
    Dividing by the thresholds is what makes both classes comparable under click imbalance.
    """
    p, y = clip_prob(p), np.asarray(y, dtype=np.float64)
    pos = y > 0
    t0, t1 = float(np.clip(t0, EPS, 1.0)), float(np.clip(t1, EPS, 1.0))
    p_other = np.where(pos, 1.0 - p, p)
    p_label = 1.0 - p_other
    t_other = np.where(pos, t0, t1)
    t_label = np.where(pos, t1, t0)
    suspect = (p_other >= t_other) & ((p_label < t_label) | (p_other > p_label))
    a, b = p_other / t_other, p_label / t_label
    return a / (a + b), suspect


def denoise_weight(noise_score: np.ndarray, suspect: np.ndarray, down_weight: float, mode: str) -> np.ndarray:
    """hard: suspects get `down_weight`, others 1; soft: 1 - (1 - down_weight) * noise_score."""
    if mode == "hard":
        return np.where(np.asarray(suspect, dtype=bool), float(down_weight), 1.0)
    if mode == "soft":
        return 1.0 - (1.0 - float(down_weight)) * np.asarray(noise_score, dtype=np.float64)
    raise ValueError(f"unknown denoise mode {mode!r}")


# ---------------------------------------------------------------- text quality (mlm_quality)

def mlm_quality(mlm_pll: np.ndarray) -> np.ndarray:
    """exp(mean per-token pseudo-log-likelihood) (Salazar et al. 2020): the geometric-mean
    probability the masked LM gives each title token with that token masked, in (0, 1].
    Per-token (not summed) so long titles are not penalised for length. Floored at e^-50."""
    pll = np.asarray(mlm_pll, dtype=np.float64)
    if np.any(np.isnan(pll)):
        raise ValueError("mlm_quality needs the mlm_pll column (a masked-LM score per title)")
    return np.exp(np.clip(pll, -50.0, 0.0))


# ---------------------------------------------------------------- position propensity by regression-EM

def _e_step(n: np.ndarray, c: np.ndarray, th: np.ndarray, ga: np.ndarray, eps: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected examined, relevant and noise impressions per cell under P(click) = eps + (1 - eps) theta gamma.

    A skip is never noise: examined with P = theta (1 - gamma) / (1 - theta gamma), relevant with
    (1 - theta) gamma / (...). A click is noise with P = eps / P(click); a noise click says nothing
    about examination or relevance (theta, gamma as a priori), a real one that both held."""
    tg = th * ga
    denom = np.maximum(1.0 - tg, EPS)
    unclicked = n - c
    if eps <= 0.0:
        return c + unclicked * th * (1.0 - ga) / denom, c + unclicked * (1.0 - th) * ga / denom, np.zeros_like(n)
    p_click = np.maximum(eps + (1.0 - eps) * tg, EPS)
    z = eps / p_click
    real = 1.0 - z
    return (c * (real + z * th) + unclicked * th * (1.0 - ga) / denom,
            c * (real + z * ga) + unclicked * (1.0 - th) * ga / denom, c * z)


def non_increasing(values: np.ndarray, weights_: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-increasing fit (pool adjacent violators): examination cannot grow
    with rank, and a sparse deep position is pooled with its neighbours instead of standing alone."""
    v = list(np.asarray(values, dtype=np.float64))
    w = list(np.maximum(np.asarray(weights_, dtype=np.float64), EPS))
    blocks: list[list[float]] = []  # [mean, weight, count]
    for x, wx in zip(v, w):
        blocks.append([x, wx, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(int(k), m) for m, _, k in blocks]) if blocks else np.array([])


def monotone_theta(theta: np.ndarray, n_k: np.ndarray, blocks: np.ndarray | None = None) -> np.ndarray:
    """theta made non-increasing in position (non_increasing), separately within each block of indices
    sharing a `blocks` value (examination by position and click context: one chain per context;
    the indices of a block are contiguous and in rank order). None: one chain."""
    if blocks is None:
        return non_increasing(theta, n_k)
    out = np.asarray(theta, dtype=np.float64).copy()
    blocks = np.asarray(blocks)
    for b in np.unique(blocks):
        sel = blocks == b
        out[sel] = non_increasing(out[sel], np.asarray(n_k)[sel])
    return out


def propensity_em_with_prior(
    position_idx: np.ndarray, bucket_idx: np.ndarray, rows: np.ndarray, clicks: np.ndarray,
    n_positions: int, n_buckets: int, bucket_group: np.ndarray | None, prior_rows: float, prior_fit: str,
    **em: Any,
) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    """propensity_em with the regression prior's strength: `prior_rows` as given (prior_fit "fixed"), or
    with "empirical_bayes" estimated from the log (empirical_prior_rows on a first fit at `prior_rows`,
    then the EM again at the estimate). Returns theta, gamma, the EM's steps, eps, and the strength used."""
    theta, gamma, steps, eps = propensity_em(position_idx, bucket_idx, rows, clicks, n_positions, n_buckets,
                                             bucket_group=bucket_group, prior_rows=prior_rows, **em)
    if prior_fit != "empirical_bayes" or bucket_group is None or prior_rows <= 0:
        return theta, gamma, steps, eps, prior_rows
    group = np.asarray(bucket_group, dtype=np.int64)
    r_j, n_j, _ = em_bucket_evidence(position_idx, bucket_idx, rows, clicks, theta, gamma, n_buckets, eps=eps)
    m_g = pooled_group_relevance(group, r_j, n_j)
    a = empirical_prior_rows(position_idx, bucket_idx, rows, clicks, theta, eps, group, m_g)
    theta, gamma, more, eps = propensity_em(position_idx, bucket_idx, rows, clicks, n_positions, n_buckets,
                                            bucket_group=bucket_group, prior_rows=a, **em)
    return theta, gamma, steps + more, eps, a


def empirical_prior_rows(position_idx: np.ndarray, bucket_idx: np.ndarray, rows: np.ndarray, clicks: np.ndarray,
                         theta: np.ndarray, eps: float, bucket_group: np.ndarray, group_relevance: np.ndarray,
                         bounds: tuple[float, float] = (0.1, 1000.0)) -> float:
    """The regression prior's strength a estimated from the log (empirical Bayes, method of moments).

    Model: a pair's relevance gamma_j ~ Beta with its group's mean m and variance m (1 - m) / (a + 1);
    its clicks c_j = sum over its cells of Binomial(n_jk, p_jk), p_jk = eps + (1 - eps) theta_k gamma_j.
    Then E[(c_j - E c_j)^2] = A_j + v_j / (a + 1), where A_j = sum_k n_jk (E p - E p^2) at zero prior
    variance (the binomial noise) and v_j = m (1 - m) (1 - eps)^2 (e_j^2 - s_j), e_j = sum_k n_jk theta_k,
    s_j = sum_k n_jk theta_k^2 (the spread of relevance between pairs, seen through their examinations).
    Pooled over pairs: 1 / (a + 1) = sum_j [(c_j - E c_j)^2 - A_j] / sum_j v_j, so a shrinks a pair hard
    where pairs of a group differ little beyond what their clicks' noise explains, and lightly where they
    differ a lot. Clipped to `bounds`."""
    k = np.asarray(position_idx, dtype=np.int64)
    j = np.asarray(bucket_idx, dtype=np.int64)
    n = np.asarray(rows, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    th = np.asarray(theta, dtype=np.float64)[k]
    m = np.asarray(group_relevance, dtype=np.float64)[np.asarray(bucket_group, dtype=np.int64)]
    n_b = len(m)  # one per bucket, cells or not
    m_cell = m[j]
    ep = eps + (1.0 - eps) * th * m_cell                                   # E p at zero prior variance
    binomial = n * (ep - ep ** 2)
    mean_c = np.bincount(j, weights=n * ep, minlength=n_b)
    c_j = np.bincount(j, weights=c, minlength=n_b)
    a_j = np.bincount(j, weights=binomial, minlength=n_b)
    e_j = np.bincount(j, weights=n * th, minlength=n_b)
    s_j = np.bincount(j, weights=n * th ** 2, minlength=n_b)
    v_j = m * (1.0 - m) * (1.0 - eps) ** 2 * (e_j ** 2 - s_j)
    spread = v_j.sum()
    if spread <= 0:
        return float(bounds[1])
    rho = float(((c_j - mean_c) ** 2 - a_j).sum() / spread)
    if rho <= 0:
        return float(bounds[1])
    return float(np.clip(1.0 / rho - 1.0, *bounds))


def pooled_group_relevance(group: np.ndarray, r_j: np.ndarray, n_j: np.ndarray, n_groups: int = 0) -> np.ndarray:
    """Each group's pooled relevance m_g: its pairs' relevance evidence over their impressions (the prior
    a pair's gamma is shrunk toward)."""
    g = np.asarray(group, dtype=np.int64)
    return (np.bincount(g, weights=r_j, minlength=n_groups)
            / np.maximum(np.bincount(g, weights=n_j, minlength=n_groups), EPS))


def _group_prior(r_j: np.ndarray, n_j: np.ndarray, bucket_group: np.ndarray | None,
                 prior_rows: float) -> np.ndarray | None:
    """Per bucket, its group's pooled relevance m_g (the regression prior), or None without one."""
    if bucket_group is None or prior_rows <= 0:
        return None
    grp = np.asarray(bucket_group, dtype=np.int64)
    return pooled_group_relevance(grp, r_j, n_j)[grp]


def propensity_em(
    position_idx: np.ndarray, bucket_idx: np.ndarray, rows: np.ndarray, clicks: np.ndarray,
    n_positions: int, n_buckets: int, max_iter: int = 2000, tol: float = 1e-7,
    bucket_group: np.ndarray | None = None, prior_rows: float = 0.0, noise_floor: bool = False,
    monotone: bool = False, power_positions: np.ndarray | None = None, shared_fit: str = "joint",
    blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Position-based click model P(click) = theta_k * gamma_j fitted by EM (Wang et al. 2018).

    Input: aggregated counts, one entry per observed (position k, relevance bucket j) cell:
    `rows` impressions and `clicks` clicks. A bucket is a (query, title) pair or a p_model
    quantile bin (the regression part of regression-EM: relevance is shared by rows the scorer
    cannot tell apart). The EM of the paper, on counts:
      E-step, unclicked cells: P(E=1 | c=0) = theta (1 - gamma) / (1 - theta gamma),
                               P(R=1 | c=0) = (1 - theta) gamma / (1 - theta gamma);
      M-step: theta_k = sum_j [c_kj + (n_kj - c_kj) P(E=1|c=0)] / sum_j n_kj, gamma_j likewise.
    Regression step: with `bucket_group` (per bucket, e.g. its p_model quantile bin) and
    `prior_rows` = a > 0, gamma_j is shrunk toward its group's pooled estimate m_g (the regression
    prediction from the scorer's feature): gamma_j = (R_j + a m_g) / (n_j + a). Without it a pair
    seen once and clicked forces theta_k * gamma_j = 1 and drags theta towards flat.
    noise_floor: P(click) = eps + (1 - eps) theta_k gamma_j, eps fitted too: clicks that happen
    whatever the position and the item (misclicks, flipped labels). Without it they pile up where
    theta gamma is small and flatten theta at deep positions (Vardasbi et al. 2020's affine model).
    monotone: each M-step projects theta onto non-increasing in position (weighted by rows), which
    also pools sparse deep positions with their neighbours; with `blocks` (per index), separately within
    each block (an examination per position and click context: each context its own chain).
    power_positions: the 1-based position of each index: theta_k = theta_1 k^-eta, two parameters
    (`power_examination`); with a noise floor this is what makes the floor identifiable on a log
    whose ranker shows each pair at similar positions.
    shared_fit: "joint" fits theta, eps and every gamma together (above); "marginal" fits theta and eps
    with each pair's gamma integrated out (shared_fit_marginal: with a gamma per pair the joint fit's
    floor goes to 0), then each gamma with theta and eps held.
    Positions are the indices 0..n_positions-1 in rank order.
    Returns (theta, gamma, iterations, eps). theta is identified only up to a common scale (theta
    gamma is what the data see), so callers report theta_k / theta_1.
    """
    k = np.asarray(position_idx, dtype=np.int64)
    j = np.asarray(bucket_idx, dtype=np.int64)
    n = np.asarray(rows, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    n_k = np.maximum(np.bincount(k, weights=n, minlength=n_positions), EPS)
    n_j = np.maximum(np.bincount(j, weights=n, minlength=n_buckets), EPS)
    ctr_k = np.bincount(k, weights=c, minlength=n_positions) / n_k
    ctr_j = np.bincount(j, weights=c, minlength=n_buckets) / n_j
    if shared_fit == "marginal":
        # tol 1e-5 on theta and eps, at most 500 steps: the histogram and theta's common scale (which
        # gamma absorbs) crawl on long after theta's shape and the floor have settled
        theta, eps, steps = shared_fit_marginal(k, j, n, c, n_positions, bucket_group, noise_floor, monotone,
                                                power_positions, max_iter=min(max_iter, 500), tol=max(tol, 1e-5),
                                                blocks=blocks)
        fit = _em_from(k, j, n, c, n_k, n_j, ctr_k, ctr_j, eps, max_iter, tol, bucket_group, prior_rows, monotone,
                       power_positions, frozen=(theta, eps), blocks=blocks)
        return fit[0], fit[1], steps + fit[2], fit[3]
    if shared_fit != "joint":
        raise ValueError(f"shared_fit must be joint or marginal, not {shared_fit!r}")
    if not noise_floor:
        return (*_em_from(k, j, n, c, n_k, n_j, ctr_k, ctr_j, None, max_iter, tol, bucket_group, prior_rows,
                          monotone, power_positions, blocks=blocks)[:3], 0.0)
    # With a noise floor the likelihood has a poor local optimum at eps -> 0 with theta flat at deep
    # positions (the plain model's answer), which a start from the CTR shape walks straight into.
    # Start from several floors and keep the fit the data like best.
    best = None
    for eps0 in NOISE_FLOOR_STARTS:
        fit = _em_from(k, j, n, c, n_k, n_j, ctr_k, ctr_j, eps0, max_iter, tol, bucket_group, prior_rows, monotone,
                       power_positions, blocks=blocks)
        if best is None or fit[4] > best[4]:
            best = fit
    theta, gamma, iterations, eps, _ = best
    return theta, gamma, iterations, eps


NOISE_FLOOR_STARTS = (0.0, 0.02, 0.05, 0.1, 0.2)
MARGINAL_GRID = 32              # the relevance values a pair's gamma is integrated over (shared_fit_marginal)
MARGINAL_MAX_CELLS = 60_000     # past this many cells the marginal fit runs on a fixed sample of pairs


def shared_fit_marginal(position_idx: np.ndarray, bucket_idx: np.ndarray, rows: np.ndarray, clicks: np.ndarray,
                        n_positions: int, bucket_group: np.ndarray | None = None, noise_floor: bool = True,
                        monotone: bool = False, power_positions: np.ndarray | None = None, max_iter: int = 2000,
                        tol: float = 1e-6, grid: int = MARGINAL_GRID, max_cells: int = MARGINAL_MAX_CELLS,
                        blocks: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """theta per position and the noise floor eps of P(click) = eps + (1 - eps) theta_k gamma_j that
    maximise the *marginal* likelihood of the clicks: each pair's gamma integrated over its group's
    distribution of relevance (a histogram on `grid` values in (0, 1), fitted by the same EM: the
    nonparametric maximum likelihood prior of Kiefer and Wolfowitz), not maximised pair by pair.
    Returns (theta, eps, EM steps).

    Why: with a free gamma for every pair (the joint fit, propensity_em), a pair seen a few times
    explains its own noise clicks with its own gamma, the likelihood is highest at eps = 0 whatever the
    log's noise, and theta flattens at deep positions where the noise clicks pile up (every score run
    of docs/quality.md fitted eps = 0, flip20's included). Integrated over a distribution the pairs of a
    group share, a pair cannot absorb its noise clicks alone, and the floor is told from examination by
    clicks where examination is low. Pairs are the buckets; `bucket_group` (one per bucket) gives each
    group its own distribution (one for all without it). Past `max_cells` cells, the pairs of a fixed
    sample (seeded, so a rerun fits the same) up to that many cells."""
    k = np.asarray(position_idx, dtype=np.int64)
    j = np.asarray(bucket_idx, dtype=np.int64)
    n = np.asarray(rows, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    if len(k) > max_cells:
        pairs = np.unique(j)
        counts = np.bincount(j)[pairs]
        order = np.random.default_rng(0).permutation(len(pairs))
        keep_pairs = pairs[order[np.cumsum(counts[order]) <= max_cells]]
        keep = np.isin(j, keep_pairs)
        k, j, n, c = k[keep], j[keep], n[keep], c[keep]
    order = np.argsort(j, kind="stable")
    k, j, n, c = k[order], j[order], n[order], c[order]
    starts = np.r_[0, np.flatnonzero(np.diff(j)) + 1]
    pair_of_cell = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(j)]))
    groups = (np.zeros(len(starts), dtype=np.int64) if bucket_group is None
              else np.unique(np.asarray(bucket_group, dtype=np.int64)[j[starts]], return_inverse=True)[1])
    n_groups = int(groups.max()) + 1
    u = (np.arange(grid) + 0.5) / grid
    n_k = np.maximum(np.bincount(k, weights=n, minlength=n_positions), EPS)
    ctr_k = np.bincount(k, weights=c, minlength=n_positions) / n_k
    theta0 = np.clip(0.9 * ctr_k / max(ctr_k.max(), EPS), 0.02, 0.9)
    eps_floor = 1e-6 if noise_floor else 0.0   # eps = 0 is a fixed point of the EM: start and stay above it

    def step(x: np.ndarray) -> np.ndarray:
        th, ep = x[:n_positions], float(x[n_positions])
        prior = x[n_positions + 1:].reshape(n_groups, grid)
        tg = th[k][:, None] * u[None, :]
        p_click = np.clip(ep + (1.0 - ep) * tg, EPS, 1.0 - EPS)
        loglik = c[:, None] * np.log(p_click) + (n - c)[:, None] * np.log1p(-p_click)
        post = np.add.reduceat(loglik, starts, axis=0) + np.log(np.maximum(prior[groups], 1e-300))
        post = np.exp(post - post.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)                 # each pair's posterior over the grid
        w = post[pair_of_cell]
        z = ep / p_click
        examined = c[:, None] * ((1.0 - z) + z * th[k][:, None]) + \
            (n - c)[:, None] * th[k][:, None] * (1.0 - u[None, :]) / np.maximum(1.0 - tg, EPS)
        e_k = np.bincount(k, weights=(w * examined).sum(axis=1), minlength=n_positions)
        if power_positions is not None:
            new_theta = power_examination(e_k, n_k, power_positions)
        else:
            new_theta = e_k / n_k
            if monotone:
                new_theta = monotone_theta(new_theta, n_k, blocks)
        new_eps = (float(np.clip((w * (c[:, None] * z)).sum() / n.sum(), eps_floor, 0.5)) if noise_floor else 0.0)
        new_prior = np.stack([np.bincount(groups, weights=post[:, g], minlength=n_groups) for g in range(grid)], 1)
        new_prior /= np.maximum(new_prior.sum(axis=1, keepdims=True), EPS)
        return np.concatenate([np.clip(new_theta, EPS, 1.0 - EPS), [new_eps], new_prior.ravel()])

    def clip(jump: np.ndarray) -> np.ndarray:
        jump[:n_positions] = np.clip(jump[:n_positions], EPS, 1.0 - EPS)
        jump[n_positions] = np.clip(jump[n_positions], eps_floor, 0.5) if noise_floor else 0.0
        prior = np.maximum(jump[n_positions + 1:].reshape(n_groups, grid), 0.0)
        jump[n_positions + 1:] = (prior / np.maximum(prior.sum(axis=1, keepdims=True), EPS)).ravel()
        return jump

    x0 = np.concatenate([theta0, [0.05 if noise_floor else 0.0], np.full(n_groups * grid, 1.0 / grid)])
    x, iterations = squarem(step, x0, max_iter, tol, clip, watched=n_positions + 1)
    return x[:n_positions], float(x[n_positions]), iterations


def power_examination(e_k: np.ndarray, n_k: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The M-step for theta_k = theta_1 * position^-eta: the (theta_1, eta) that maximise the expected
    complete-data log-likelihood sum_k e_k log theta_k + (n_k - e_k) log(1 - theta_k), by a grid over
    eta with theta_1 refined per eta. Two parameters instead of one per position: deep, sparse
    positions borrow strength from the rest, and a noise floor becomes identifiable."""
    pos = np.asarray(positions, dtype=np.float64)
    eta = np.linspace(0.0, 3.0, 121)[:, None, None]
    t1 = np.linspace(0.02, 0.99, 98)[None, :, None]
    th = np.clip(t1 * pos[None, None, :] ** -eta, EPS, 1.0 - EPS)       # (eta, theta_1, position)
    ll = np.sum(e_k * np.log(th) + (n_k - e_k) * np.log1p(-th), axis=2)
    a, b = np.unravel_index(int(np.argmax(ll)), ll.shape)
    return th[a, b]


def _em_from(k, j, n, c, n_k, n_j, ctr_k, ctr_j, eps0: float | None, max_iter: int, tol: float,
             bucket_group, prior_rows: float, monotone: bool, positions: np.ndarray | None,
             accelerate: bool = True, frozen: tuple[np.ndarray, float] | None = None,
             blocks: np.ndarray | None = None):
    """One EM run from a start derived from the CTRs (and noise floor eps0; None: no floor fitted).
    Returns (theta, gamma, EM steps taken, eps, log-likelihood of the clicks).

    The EM stops where one more step moves no parameter by `tol` or more. On a sparse log (a few
    impressions a pair) plain EM crawls: 5 starts x 2,000 steps without getting there, 2.2 s of a
    10k-row job. accelerate: SQUAREM (Varadhan and Roland 2008, scheme S3): from two EM steps
    r = F(x) - x and v = F(F(x)) - 2 F(x) + x, jump to x - 2 a r + a^2 v with a = -|r|/|v| (a = -1 is
    the two plain steps), then one EM step from there; a jump after which one EM step moves the
    parameters 10x more than at the cycle's start is dropped for the two plain steps. Same fixed
    points, same stopping rule (one EM step moving less than `tol`), a fraction of the steps."""
    floor = eps0 or 0.0
    # theta_k ~ (ctr_k - floor) / max: the CTR shape above the floor (never exactly 1: theta=1 is a
    # fixed point of the E-step), gamma_j ~ ctr_j.
    above = np.maximum(ctr_k - floor, 0.0)
    theta = np.clip(0.9 * above / max(above.max(), EPS), 0.02, 0.9)
    gamma = np.clip(np.maximum(ctr_j - floor, 0.0) / max(1.0 - floor, EPS) / theta.mean(), 0.01, 0.99)
    eps = floor
    if frozen is not None:
        theta, eps = np.asarray(frozen[0], dtype=np.float64), float(frozen[1])
        gamma = np.clip(np.maximum(ctr_j - eps, 0.0) / max(1.0 - eps, EPS) / theta.mean(), 0.01, 0.99)
    n_theta = len(n_k)

    def step(x: np.ndarray) -> np.ndarray:
        """One EM step on x = [theta, gamma, eps]."""
        th, ga, ep = x[:n_theta], x[n_theta:-1], float(x[-1])
        e1, r1, z1 = _e_step(n, c, th[k], ga[j], ep)
        new_theta = np.bincount(k, weights=e1, minlength=n_theta) / n_k
        if positions is not None:
            new_theta = power_examination(np.bincount(k, weights=e1, minlength=n_theta), n_k, positions)
        elif monotone:
            new_theta = monotone_theta(new_theta, n_k, blocks)
        new_theta = np.clip(new_theta, EPS, 1.0 - EPS)
        new_eps = float(np.clip(z1.sum() / max(n.sum(), EPS), 0.0, 0.5)) if eps0 is not None else 0.0
        r_j = np.bincount(j, weights=r1, minlength=len(n_j))
        m_j = _group_prior(r_j, n_j, bucket_group, prior_rows)
        new_gamma = r_j / n_j if m_j is None else (r_j + prior_rows * m_j) / (n_j + prior_rows)
        if frozen is not None:  # theta and eps fitted elsewhere (shared_fit_marginal): gamma alone moves
            new_theta, new_eps = frozen[0], frozen[1]
        return np.concatenate([new_theta, np.clip(new_gamma, EPS, 1.0 - EPS), [new_eps]])

    def clip(jump: np.ndarray) -> np.ndarray:
        jump[:-1] = np.clip(jump[:-1], EPS, 1.0 - EPS)
        # A jump may put the floor at 0, a fixed point of the EM (no noise click, no evidence for one);
        # of the five starts, the fit with the best likelihood is the one kept (propensity_em).
        jump[-1] = np.clip(jump[-1], 0.0, 0.5)
        return jump

    x, iterations = squarem(step, np.concatenate([theta, gamma, [eps]]), max_iter, tol, clip, accelerate)
    theta, gamma, eps = x[:n_theta], x[n_theta:-1], float(x[-1])
    return theta, gamma, iterations, eps, _em_loglik(k, j, n, c, theta, gamma, eps)


def _em_loglik(k, j, n, c, theta: np.ndarray, gamma: np.ndarray, eps: float) -> float:
    p = np.clip(eps + (1.0 - eps) * theta[k] * gamma[j], EPS, 1.0 - EPS)
    return float(np.sum(c * np.log(p) + (n - c) * np.log1p(-p)))


def squarem(step: Callable[[np.ndarray], np.ndarray], x: np.ndarray, max_iter: int, tol: float,
            clip: Callable[[np.ndarray], np.ndarray], accelerate: bool = True, watched: int | None = None
            ) -> tuple[np.ndarray, int]:
    """The fixed point of an EM map `step` from `x`, and the steps taken: plain EM, or SQUAREM (Varadhan
    and Roland 2008, scheme S3): from two EM steps r = F(x) - x and v = F(F(x)) - 2 F(x) + x, jump to
    x - 2 a r + a^2 v with a = -|r|/|v| (a = -1 is the two plain steps), `clip` the jump back into the
    parameter space, then one EM step from there. Stops where one EM step moves no parameter by `tol`
    (with `watched`, none of the first `watched`: the rest are nuisance parameters)."""
    def moved(a: np.ndarray, b: np.ndarray) -> bool:
        return not np.abs(a[:watched] - b[:watched]).max() < tol

    iterations = 0
    while iterations < max_iter:
        x1 = step(x)
        iterations += 1
        if not moved(x1, x) or not accelerate or iterations >= max_iter:
            converged, x = not moved(x1, x), x1
            if converged:
                break
            continue
        x2 = step(x1)
        iterations += 1
        if not moved(x2, x1) or iterations >= max_iter:
            x = x2
            break
        r, v = x1 - x, x2 - 2.0 * x1 + x
        vv = float(v @ v)
        alpha = min(-np.sqrt(float(r @ r) / vv), -1.0) if vv > 0 else -1.0
        if alpha == -1.0:
            x = x2
            continue
        jump = clip(x - 2.0 * alpha * r + alpha * alpha * v)
        x3 = step(jump)
        iterations += 1
        # A jump is kept unless it lands where one EM step moves the parameters 10x more than at the
        # cycle's start (a divergence). Not a likelihood check: with the regression prior the EM climbs
        # a penalised likelihood, and a plain-likelihood check refused most good jumps (on a 1M-row log
        # the accelerated EM then took longer than plain EM; benchmarks/em_acceleration.py).
        if not np.all(np.isfinite(x3)) or np.abs(x3 - jump).max() > 10.0 * np.abs(x1 - x).max():
            x = x2   # the jump overshot: keep the two plain steps
            continue
        converged, x = not moved(x3, jump), x3
        if converged:
            break
    return x, iterations


def em_bucket_evidence(
    position_idx: np.ndarray, bucket_idx: np.ndarray, rows: np.ndarray, clicks: np.ndarray,
    theta: np.ndarray, gamma: np.ndarray, n_buckets: int,
    bucket_group: np.ndarray | None = None, prior_rows: float = 0.0, eps: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bucket (R_j, n_j, m_j) of a fitted EM: expected relevant impressions, impressions, and
    the regression prior m_j of its group (R_j / n_j without a prior), so that
    gamma_j = (R_j + a m_j) / (n_j + a). (A row's leave-one-out relevance re-solves its pair without it:
    pair_relevance.held_out_relevance; taking its E-step share out of R_j alone would keep the other
    rows' posteriors at the gamma fitted with it.)"""
    k = np.asarray(position_idx, dtype=np.int64)
    j = np.asarray(bucket_idx, dtype=np.int64)
    n = np.asarray(rows, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    _, r1, _ = _e_step(n, c, theta[k], gamma[j], eps)
    r_j = np.bincount(j, weights=r1, minlength=n_buckets)
    n_j = np.bincount(j, weights=n, minlength=n_buckets)
    m_j = _group_prior(r_j, n_j, bucket_group, prior_rows)
    return r_j, n_j, (r_j / np.maximum(n_j, EPS) if m_j is None else m_j)


def propensity_from_em(positions: np.ndarray, theta: np.ndarray, floor: float) -> dict[int, float]:
    """theta_k relative to the first (lowest) position, clipped to [floor, 1]."""
    rel = np.asarray(theta, dtype=np.float64) / max(float(theta[0]), EPS)
    return {int(pos): float(np.clip(r, floor, 1.0)) for pos, r in zip(positions, rel)}


# ---------------------------------------------------------------- importance sampling

def keep_probability(importance: np.ndarray, c: float) -> np.ndarray:
    """q_i = min(1, c * importance_i)."""
    return np.minimum(1.0, float(c) * np.asarray(importance, dtype=np.float64))


def solve_keep_scale(mean_q, keep_fraction: float, c_start: float, tol: float = 1e-9, max_iter: int = 100) -> float:
    """c with mean(min(1, c * importance)) == keep_fraction.

    `mean_q(c)` evaluates that mean (in Spark: one aggregate). It is continuous, non-decreasing in
    c and m(c)/c non-increasing, so the fixed-point step c <- c * f / m(c) climbs monotonically from
    below (start at c = f / mean(importance)); bisection inside the bracket guards it.
    """
    lo, hi = 0.0, None
    c = c_start
    for _ in range(max_iter):
        m = mean_q(c)
        if abs(m - keep_fraction) <= tol:
            return c
        if m < keep_fraction:
            lo = c
        else:
            hi = c
        nxt = c * keep_fraction / max(m, EPS)
        if hi is not None and not (lo < nxt < hi):
            nxt = (lo + hi) / 2.0
        c = nxt
    return c

