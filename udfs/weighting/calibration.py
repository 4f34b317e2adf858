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


def logistic_sums(x: np.ndarray, y: np.ndarray, w: np.ndarray, a: float, b: float) -> dict[str, float]:
    """platt_newton_step's sums for sample-weighted, soft-label logistic regression y ~ sigmoid(a x + b)."""
    x, y, w = (np.asarray(v, dtype=np.float64) for v in (x, y, w))
    p = sigmoid(a * x + b)
    h = w * p * (1 - p)
    r = w * (p - y)
    return {"g_a": float(np.sum(r * x)), "g_b": float(np.sum(r)), "h_aa": float(np.sum(h * x * x)),
            "h_ab": float(np.sum(h * x)), "h_bb": float(np.sum(h))}


def fit_logistic(sums_at, a: float, b: float, fit_a: bool = True, iterations: int = 25) -> tuple[float, float]:
    """Newton's method on (a, b), or on b alone with a fixed; sums_at(a, b) returns logistic_sums
    (summed over every shard: the caller all-reduces)."""
    for _ in range(iterations):
        sums = sums_at(a, b)
        if fit_a:
            new_a, new_b = platt_newton_step(sums, a, b)
        else:
            new_a, new_b = a, b - sums["g_b"] / (sums["h_bb"] + 1e-6)
        done = abs(new_a - a) + abs(new_b - b) < 1e-9
        a, b = new_a, new_b
        if done:
            break
    return a, b


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
