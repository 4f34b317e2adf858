"""Importance signals and weighting strategies: pure numpy functions (Spark glue is elsewhere).

Notation: y click label, p model probability of a click / relevance, y_bar base click rate,
H binary entropy. Every strategy returns a *raw* positive weight; the score job then rescales
all rows to a global mean of 1 and clips to [w_min, w_max] (see `normalise_scale`).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EPS = 1e-6


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


def el2n(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """EL2N score |p - y| (Paul et al. 2021) for a single-logit binary model."""
    return np.abs(np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64))


def information_gain(p: np.ndarray, base_rate: float) -> np.ndarray:
    """IG = H(y_bar) - H(p) (seed 001): how much the model's view of the row beats the prior."""
    return binary_entropy(np.array([base_rate]))[0] - binary_entropy(p)


def calibrate_platt(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """p = sigmoid(a * x + b): maps a zero-shot relevance score to a click probability."""
    return sigmoid(a * np.asarray(x, dtype=np.float64) + b)


def platt_newton_step(sums: Mapping[str, float], a: float, b: float, ridge: float = 1e-6) -> tuple[float, float]:
    """One Newton step of logistic regression y ~ sigmoid(a x + b) from aggregated sums.

    sums holds g_a = sum((p-y)x), g_b = sum(p-y), h_aa = sum(w x^2), h_ab = sum(w x), h_bb = sum(w)
    with w = p(1-p), computed by one Spark aggregate over the table at the current (a, b).
    """
    g = np.array([sums["g_a"], sums["g_b"]])
    h = np.array([[sums["h_aa"] + ridge, sums["h_ab"]], [sums["h_ab"], sums["h_bb"] + ridge]])
    da, db = np.linalg.solve(h, g)
    return float(a - da), float(b - db)


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


def signal_weight(name: str, cols: Mapping[str, np.ndarray], params: Mapping) -> np.ndarray:
    """Raw (unnormalised, positive) weight of one signal for a batch of rows."""
    y = cols["clicked"]
    p = cols["p_model"]
    if name == "none":
        return np.ones(len(y))
    if name == "relevance":  # seed 003: sentence-encoder cosine, negatives carry no evidence
        return np.maximum(np.asarray(cols["relevance"], dtype=np.float64), 0.0) + EPS
    if name == "confidence":  # seed 002: sigma(z) of the scorer
        return clip_prob(p)
    if name == "information_gain":  # seed 001
        return np.maximum(information_gain(p, params["base_rate"]), 0.0) + EPS
    if name == "loss":  # seed 000: softmax over per-row loss == exp(loss / T) up to the global scale
        return np.exp(np.minimum(bce(p, y) / params["temperature"], 50.0))
    if name == "el2n":
        return el2n(p, y) + EPS
    if name == "ipw":  # clicks weighted by 1 / examination propensity (Joachims et al. 2017)
        prop = np.asarray(cols["propensity"], dtype=np.float64)
        return np.where(np.asarray(y) > 0, 1.0 / prop, 1.0)
    if name == "action_value":
        return action_value(y, cols["added_to_cart"], cols["purchased"], cols["dwell_ms"],
                            params["action_values"], params["long_dwell_ms"])
    raise ValueError(f"unknown weighting signal {name!r}")


def raw_weights(strategy: str, cols: Mapping[str, np.ndarray], params: Mapping) -> np.ndarray:
    """Raw weight of `strategy` (a signal, or `combined`: product of signals ** exponents)."""
    if strategy == "combined":
        w = np.ones(len(cols["clicked"]))
        for name, exponent in params["combined"].items():
            w = w * signal_weight(name, cols, params) ** float(exponent)
    else:
        w = signal_weight(strategy, cols, params)
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise FloatingPointError(f"strategy {strategy!r} produced a non-finite or non-positive raw weight")
    return w


def normalised(raw: np.ndarray, scale: float, w_min: float, w_max: float) -> np.ndarray:
    return np.clip(np.asarray(raw, dtype=np.float64) * scale, w_min, w_max)


def normalise_scale(mean_of_clipped, w_min: float, w_max: float, raw_mean: float,
                    tol: float = 1e-9, max_iter: int = 60) -> float:
    """Find s with mean(clip(s * raw, w_min, w_max)) == 1.

    `mean_of_clipped(s)` evaluates that mean (in Spark: one aggregate over cached raw weights).
    The mean is continuous and non-decreasing in s, so a bracketed secant/bisection converges;
    w_min <= 1 <= w_max (validated in config) guarantees a solution exists.
    """
    lo, hi = 0.0, None
    s = 1.0 / raw_mean
    for _ in range(max_iter):
        m = mean_of_clipped(s)
        if abs(m - 1.0) <= tol:
            return s
        if m < 1.0:
            lo = s
        else:
            hi = s
        nxt = s / m  # fixed-point guess: exact when nothing is clipped
        if hi is not None and not (lo < nxt < hi):
            nxt = (lo + hi) / 2.0
        elif hi is None and nxt <= lo:
            nxt = lo * 2.0
        s = nxt
    return s
