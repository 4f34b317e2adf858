"""The weighting's statistics from (position, relevance bucket) cells, on the driver.

Every statistic the weights need before the weight pass (base rate, Platt calibration, the
examination propensities and click model, confident learning's thresholds, the loss strategy's
shift) depends on a row only through its position, its pair's score and its click. So one Spark
aggregate to cells (position, pair: rows n, clicks c, the pair's score) carries all of them, and
the iterations (Newton steps, EM) run here on that small table instead of as one Spark pass each
over every row. The score job falls back to Spark passes when the cells are too many to hold.

Cells are sorted by (position, _bucket) first: sums then run in one fixed order, so the results do
not depend on how Spark happened to return the groups.
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from udfs.weighting import calibration, weights
from udfs.weighting.pair_relevance import SharedParameters, pair_held_out, pooled_relevance
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.slots import (
    SLOT_STRIDE,
    marginal_by_position,
    position_theta,
    slot_context,
    slot_position,
    theta_by_context,
)

MIN_ROWS_PER_POSITION = 20  # positions seen less often inherit the previous position's propensity


def sorted_cells(cells: pd.DataFrame) -> pd.DataFrame:
    # groupBy output order varies run to run; EM, factorize and rank ties must not see that.
    return cells.sort_values(["position", "_bucket"], kind="stable").reset_index(drop=True)


def base_rate(cells: pd.DataFrame) -> float:
    return float(np.clip(cells["c"].sum() / max(cells["n"].sum(), 1), weights.EPS, 1 - weights.EPS))


def fit_platt(relevance: np.ndarray, n: np.ndarray, c: np.ndarray, base: float) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a * relevance + b) on the clicks: each cell is n rows, c of them clicked."""
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray(c, dtype=np.float64) / np.maximum(n, 1.0)
    return calibration.fit_scorer_platt(lambda a, b: calibration.logistic_sums(relevance, y, n, a, b), base)


def noise_thresholds(p: np.ndarray, n: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Confident learning's (t0, t1): mean 1 - p over skipped rows, mean p over clicked rows (0.5 if none)."""
    p, n, c = (np.asarray(v, dtype=np.float64) for v in (p, n, c))
    skips = n - c
    t0 = float(np.sum(skips * (1 - p)) / skips.sum()) if skips.sum() > 0 else 0.5
    t1 = float(np.sum(c * p) / c.sum()) if c.sum() > 0 else 0.5
    return t0, t1


def max_loss(p: np.ndarray, n: np.ndarray, c: np.ndarray) -> float:
    """The largest per-row BCE of p (clipped as udfs/weighting/weights.py clips it) over the rows the cells hold."""
    p = weights.clip_prob(np.asarray(p, dtype=np.float64))
    clicked = np.where(np.asarray(c) > 0, -np.log(p), -np.inf)
    skipped = np.where(np.asarray(n) - np.asarray(c) > 0, -np.log(1 - p), -np.inf)
    return float(max(clicked.max(initial=-np.inf), skipped.max(initial=-np.inf)))


def carry_forward(positions, fitted: dict[int, float], first: float) -> dict[int, float]:
    """Every seen position gets its fitted value, or the previous position's when too rare to fit. An
    examination slot past context 0 too rare to fit, before any fitted slot of its context, gets the
    same position's value one context down."""
    out: dict[int, float] = {}
    prev: float | None = None
    block = 0
    for k in sorted(int(x) for x in positions):
        if k // SLOT_STRIDE != block:
            block, prev = k // SLOT_STRIDE, None
        if k in fitted:
            prev = fitted[k]
        elif prev is None:
            prev = out.get(k - SLOT_STRIDE, first) if block > 0 else first
        out[k] = prev
    return out


def ratio_propensity(cells: pd.DataFrame, floor: float) -> dict[int, float]:
    """The CTR-ratio estimator: clicks / sum of p_model per position, relative to position 1."""
    per = cells.assign(r=cells["pm"] * cells["n"]).groupby("position")[["n", "c", "r"]].sum().reset_index()
    return weights.position_propensity(per["position"].to_numpy(), per["c"].to_numpy(), per["r"].to_numpy(),
                                       per["n"].to_numpy(), floor=floor, min_rows=MIN_ROWS_PER_POSITION)


PRIOR_POSITION_BINS = 4  # em_prior_groups p_model_position: bins of the pair's mean logged position


def prior_group_counts(w: WeightingSettings, n_pairs: int) -> tuple[int, int]:
    """(p_model bins, mean-position bins) of the regression prior's groups."""
    if w.em_prior_groups == "p_model_position":
        return max(1, min(w.em_buckets // PRIOR_POSITION_BINS, n_pairs)), min(PRIOR_POSITION_BINS, n_pairs)
    if w.em_prior_groups == "position":
        return 1, min(w.em_buckets, n_pairs)
    return min(w.em_buckets, n_pairs), 1


def prior_groups(p_model: pd.Series, mean_position: pd.Series, w: WeightingSettings) -> np.ndarray:
    """Each pair's group of the regression prior: a quantile bin of its p_model (by rank), split, with
    em_prior_groups p_model_position, into quantile bins of its mean logged position within that p_model
    bin (the logging ranker's opinion of the pair beside the scorer's: a pair it keeps on top is likelier
    relevant, evidence the position correction of its clicks does not keep; within the bin, because the
    two opinions correlate and crossed marginal bins would leave groups empty). em_prior_groups position:
    mean-position bins alone (the ranker's opinion, which the trainee, started from the scorer, lacks)."""
    n_pm, n_pos = prior_group_counts(w, len(p_model))
    group = pd.qcut(p_model.rank(method="first"), n_pm, labels=False).to_numpy()
    if n_pos > 1:
        within = mean_position.groupby(group).rank(method="first", pct=True).to_numpy()
        group = group * n_pos + np.minimum(np.ceil(within * n_pos).astype(np.int64) - 1, n_pos - 1)
    return group


def held_out_table(buckets: np.ndarray, position: np.ndarray, k: np.ndarray, pair: np.ndarray, n: np.ndarray,
                   c: np.ndarray, pair_group: np.ndarray | None, shared: SharedParameters) -> pd.DataFrame:
    """Per fitted cell (_bucket, _position): its pair's relevance without one of its clicks (_g_click) and
    without one of its skips (_g_skip), pair_relevance.pair_held_out's; rows join it for p_click."""
    g_click, g_skip = pair_held_out(k, pair, n, c, len(buckets), pair_group, shared)
    return pd.DataFrame({"_bucket": buckets[pair], "_position": np.asarray(position, dtype=np.int64),
                         "_g_click": g_click, "_g_skip": g_skip})


def em_propensity(cells: pd.DataFrame, kind: str, w: WeightingSettings
                  ) -> tuple[dict[int, float], dict[str, Any], dict[str, Any] | None]:
    """Regression-EM over sorted cells (position, _bucket, n, c, pm): the relative propensity per seen
    position, the fit's description, and the click model's parts (theta per position on the absolute
    scale, the per-bucket evidence, the prior, a callable giving the per-cell held-out relevance
    table held_out_table) or None when nothing could be fitted."""
    per_pos = cells.groupby("position")["n"].sum()
    fitted = np.sort(per_pos.index[per_pos >= MIN_ROWS_PER_POSITION].to_numpy())
    info: dict[str, Any] = {"estimator": "em", "buckets": kind, "cells": len(cells)}
    if not len(fitted) or cells.loc[cells["position"].isin(fitted), "c"].sum() <= 0:
        return position_theta(carry_forward(per_pos.index, {}, 1.0)), info, None
    cells = cells[cells["position"].isin(fitted)]
    pos_idx = np.searchsorted(fitted, cells["position"].to_numpy())
    bucket_idx, uniques = pd.factorize(cells["_bucket"])
    group, prior = None, 0.0
    if kind == "query_title_pairs":
        # Regression step: a pair's relevance is shrunk toward that of pairs the scorer rates alike
        # (same p_model quantile bin), so pairs seen once do not flatten the curve.
        by_pair = cells.assign(kn=slot_position(cells["position"]) * cells["n"]).groupby(bucket_idx)
        pm = by_pair["pm"].first().sort_index()
        mean_position = (by_pair["kn"].sum() / by_pair["n"].sum()).sort_index()
        group = prior_groups(pm, mean_position, w)
        prior = w.em_prior_rows
    n, c = cells["n"].to_numpy(), cells["c"].to_numpy()
    theta, gamma, iters, eps, prior = weights.propensity_em_with_prior(
        pos_idx, bucket_idx, n, c, len(fitted), len(uniques), group, prior, w.em_prior_fit,
        noise_floor=w.em_noise_floor, monotone=w.em_monotone, shared_fit=w.em_shared_fit,
        power_positions=fitted.astype(np.float64) if w.em_examination == "power" else None,
        blocks=slot_context(fitted) if w.click_context else None)
    info.update(n_buckets=int(len(uniques)), iterations=iters, noise_floor=eps, prior_rows=prior)
    r, n_b, m = weights.em_bucket_evidence(pos_idx, bucket_idx, n, c, theta, gamma, len(uniques),
                                           bucket_group=group, prior_rows=prior, eps=eps)
    buckets = np.asarray(uniques).astype(np.int64)
    evidence = pd.DataFrame({"_bucket": buckets, "_r": r, "_n": n_b, "_m": m, "_gamma": gamma})
    theta_abs = {int(k): float(t) for k, t in zip(fitted, theta)}
    has_prior = group is not None and prior > 0
    n_groups = int(group.max()) + 1 if has_prior else 0
    group_relevance = weights.pooled_group_relevance(group, r, n_b, n_groups) if has_prior else np.zeros(0)
    shared = SharedParameters(np.asarray(theta, dtype=np.float64), float(eps), group_relevance,
                              float(prior) if has_prior else 0.0, pooled_relevance(r, n_b))
    # Lazy: only p_click reads it, and it solves up to two pseudo-pairs a cell.
    held_out = partial(held_out_table, buckets, cells["position"].to_numpy(), pos_idx, bucket_idx, n, c,
                       group if has_prior else None, shared)
    theta_all = carry_forward(per_pos.index, theta_abs, float(theta[0]))
    model = {"theta": theta_all, "evidence": evidence,
             "prior_rows": prior, "eps": eps, "held_out": held_out, "cells": len(cells)}
    return examination_answer(per_pos.to_dict(), fitted, theta, theta_all, info, w), info, model


def examination_answer(rows_per_slot: Mapping[int, float], fitted: np.ndarray, theta: np.ndarray,
                       theta_all: dict[int, float], info: dict[str, Any], w: WeightingSettings) -> dict[int, float]:
    """The relative propensity per seen position, relative to the first position's. With em_click_context
    it is each position's examination averaged over its click contexts, weighted by their rows (what a
    row at that position is examined with, not knowing the clicks above it: what the per-position
    readers, ipw and the gate's examination_loss, ask), and the fit's description gains every context's
    absolute examination by position."""
    slots = sorted(int(k) for k in rows_per_slot)
    if not w.click_context:
        return carry_forward(slots, weights.propensity_from_em(fitted, theta, w.propensity_min), 1.0)
    info["examination_by_click_context"] = theta_by_context(theta_all)
    marginal = marginal_by_position(theta_all, {k: float(rows_per_slot[k]) for k in slots})
    first = marginal[min(marginal)]
    return {k: float(np.clip(v / max(first, weights.EPS), w.propensity_min, 1.0)) for k, v in marginal.items()}
