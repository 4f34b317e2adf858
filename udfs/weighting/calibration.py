"""Logistic calibration: Platt scaling p = sigmoid(a x + b) fitted by Newton steps on aggregated sums.

The score job fits it on the scorer's cosine against the clicks (one Spark aggregate per step);
the recipe refits the start's click head to the weighted training target (sums all-reduced over
the ranks). Both call these pure functions.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from udfs.weighting.weights import sigmoid


def platt_newton_step(sums: Mapping[str, float], a: float, b: float, ridge: float = 1e-6) -> tuple[float, float]:
    """One Newton step of logistic regression y ~ sigmoid(a x + b) from aggregated sums.

    sums holds g_a = sum((p-y)x), g_b = sum(p-y), h_aa = sum(w x^2), h_ab = sum(w x), h_bb = sum(w)
    with w = p(1-p), computed by one Spark aggregate over the table at the current (a, b).
    """
    g = np.array([sums["g_a"], sums["g_b"]])
    h = np.array([[sums["h_aa"] + ridge, sums["h_ab"]], [sums["h_ab"], sums["h_bb"] + ridge]])
    da, db = np.linalg.solve(h, g)
    return float(a - da), float(b - db)


def logistic_sums(x: np.ndarray, y: np.ndarray, w: np.ndarray, a: float, b: float,
                  offset: np.ndarray | float = 0.0) -> dict[str, float]:
    """platt_newton_step's sums for sample-weighted, soft-label logistic regression y ~ sigmoid(a x + b
    + offset), the offset fixed (a known logit term per row, e.g. log examination at its position)."""
    x, y, w = (np.asarray(v, dtype=np.float64) for v in (x, y, w))
    z = a * x + b + offset
    p = sigmoid(z)
    h = w * p * (1 - p)
    r = w * (p - y)
    return {"g_a": float(np.sum(r * x)), "g_b": float(np.sum(r)), "h_aa": float(np.sum(h * x * x)),
            "h_ab": float(np.sum(h * x)), "h_bb": float(np.sum(h)),
            "loss": float(np.sum(w * (np.logaddexp(0.0, z) - y * z)))}  # weighted soft-label BCE


def fit_logistic(sums_at, a: float, b: float, fit_a: bool = True, iterations: int = 25,
                 tol: float = 1e-9) -> tuple[float, float]:
    """Damped Newton on (a, b), or on b alone with a fixed; sums_at(a, b) returns logistic_sums
    (summed over every shard: the caller all-reduces, so every rank takes the same steps).

    A full Newton step on a logistic loss can overshoot and run away (a pair table with examination
    weights from 0.015 to 25 sent a start head to a = 2.5e9): each step is halved until the weighted
    loss does not rise, and the fit stops where no step lowers it."""
    sums = sums_at(a, b)
    for _ in range(iterations):
        if fit_a:
            new_a, new_b = platt_newton_step(sums, a, b)
        else:
            new_a, new_b = a, b - sums["g_b"] / (sums["h_bb"] + 1e-6)
        step = 1.0
        for _ in range(40):
            try_a, try_b = a + step * (new_a - a), b + step * (new_b - b)
            tried = sums_at(try_a, try_b)
            if np.isfinite(tried["loss"]) and tried["loss"] <= sums["loss"] + 1e-12 * abs(sums["loss"]):
                break
            step /= 2
        else:
            break  # no step lowers the loss: (a, b) is the optimum to rounding
        done = abs(try_a - a) + abs(try_b - b) < tol
        a, b, sums = try_a, try_b, tried
        if done:
            break
    return a, b


# The smallest slope a sentence encoder's Platt scaling may take. A log in which clicks do not rise with
# the scorer's cosine (a few hundred impressions, clicks led by position) can fit a <= 0: p_model would
# then rank pairs against the scorer, and the trainee, whose head keeps its start's sign, would export
# an encoder ranking backwards (a 40-query log did: AUC 0.38 against zero-shot's 0.62). At this floor
# p_model is flat (it moves by under 0.3 % over the cosine's range) and keeps the scorer's order.
MIN_SCORER_SLOPE = 0.01


def fit_scorer_platt(sums_at, base_rate: float, iterations: int = 25, tol: float = 1e-9) -> tuple[float, float]:
    """Platt scaling of a sentence encoder's cosine to the clicks, from (0, logit(base rate)); a fitted
    slope below MIN_SCORER_SLOPE is held there and only b is fitted (the constrained optimum: the loss
    is convex in (a, b))."""
    b0 = float(np.log(base_rate / (1 - base_rate)))
    a, b = fit_logistic(sums_at, 0.0, b0, iterations=iterations, tol=tol)
    if a >= MIN_SCORER_SLOPE:
        return a, b
    return fit_logistic(sums_at, MIN_SCORER_SLOPE, b0, fit_a=False, iterations=iterations, tol=tol)


def fit_start_head(sums_at, a0: float, b0: float, fit_a: bool = True) -> tuple[float, float]:
    """The trainee's start head refitted to the training target, keeping the scorer's direction:
    (a, b) by Newton from the scorer's (a0, b0); if the slope would not stay positive (a weighted
    target in which the cosine no longer rises with clicks, e.g. weights on the rows the scorer
    gets wrong), the slope stays a0 and only b is refitted. A head with a <= 0 would export a
    start that ranks against the encoder (or not at all)."""
    a, b = fit_logistic(sums_at, a0, b0, fit_a=fit_a)
    if fit_a and not a > 0:
        a, b = fit_logistic(sums_at, a0, b0, fit_a=False)
    return a, b
