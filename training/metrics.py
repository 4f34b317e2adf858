"""Ranking and classification metrics: pure numpy, no sklearn."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from training.settings import TrainSettings
from udfs.clickstream.pairs import pair_targets
from udfs.weighting.calibration import fit_logistic, logistic_sums
from udfs.weighting.weights import bce, bce_with_logits

# train.objective: pointwise (weighted BCE per pair) | listwise (training.model.weighted_listwise).
OBJECTIVES = ("pointwise", "listwise")


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC via the Mann-Whitney statistic with tie-averaged ranks; None if one class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def weighted_auc(scores: np.ndarray, pos_weight: np.ndarray, neg_weight: np.ndarray) -> float | None:
    """ROC AUC where each score stands for pos_weight positives and neg_weight negatives (ties: half).

    A pair with c clicks out of n impressions (pos c, neg n - c) gives exactly the AUC of its rows."""
    s = np.asarray(scores, dtype=np.float64)
    pw = np.asarray(pos_weight, dtype=np.float64)
    nw = np.asarray(neg_weight, dtype=np.float64)
    total_pos, total_neg = pw.sum(), nw.sum()
    if total_pos <= 0 or total_neg <= 0:
        return None
    frame = pd.DataFrame({"s": s, "p": pw, "n": nw}).groupby("s", sort=True)[["p", "n"]].sum()
    neg_below = np.concatenate([[0.0], np.cumsum(frame["n"].to_numpy())[:-1]])
    wins = frame["p"].to_numpy() * (neg_below + 0.5 * frame["n"].to_numpy())
    return float(wins.sum() / (total_pos * total_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(bce(probs, labels).mean())


def dcg(gains_in_rank_order: np.ndarray, k: int) -> float:
    g = np.asarray(gains_in_rank_order, dtype=np.float64)[:k]
    return float(np.sum((2.0 ** g - 1.0) / np.log2(np.arange(2, len(g) + 2))))


def ndcg_at_k(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10) -> tuple[float, int]:
    """Mean NDCG@k over groups (queries) with >= 2 items and some positive gain; (mean, groups used).

    Gain 2^label - 1 on the graded label; ties in score are broken by the worse label first, so a
    constant scorer gets no credit from the input order.
    """
    frame = pd.DataFrame({"g": groups, "y": np.asarray(labels, dtype=np.float64),
                          "s": np.asarray(scores, dtype=np.float64)})
    values = []
    for _, part in frame.groupby("g", sort=False):
        if len(part) < 2:
            continue
        ideal = dcg(np.sort(part["y"].to_numpy())[::-1], k)
        if ideal <= 0:
            continue
        ranked = part.sort_values(["s", "y"], ascending=[False, True], kind="mergesort")
        values.append(dcg(ranked["y"].to_numpy(), k) / ideal)
    return (float(np.mean(values)) if values else float("nan")), len(values)


# ---------------------------------------------------------------- training-table targets and held-out clicks

# train.select_by -> the held-out metric that picks the exported model among {start, each epoch}.
SELECT_KEYS = {
    "impression_loss": "eval_impression_loss_recalibrated",  # every impression once: one yardstick for all
    "recalibrated_loss": "eval_loss_recalibrated",           # weighted by the strategy's own weights
    "loss": "eval_loss",                                     # as recalibrated_loss, without the recalibration
    "examination_loss": "eval_examination_loss_recalibrated",  # impression_loss per position, offset log theta_k
}


def resolve_select_by(select_by: str, compact_pairs: bool, position_tower: bool, has_propensity: bool = True
                      ) -> str:
    """train.select_by, with `auto` made concrete: examination_loss where the held-out clicks per position
    are at hand (the pair table) and the score run estimated examination propensities; impression_loss
    with the position tower (whose candidates are judged per position with their own tower terms
    already), on the row table, or when the score run has no propensities (a log the EM could not fit)."""
    if select_by != "auto":
        return select_by
    return ("examination_loss" if compact_pairs and not position_tower and has_propensity
            else "impression_loss")


def criterion_inputs(select_key: str, tg: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(label, weight, recalibrate) of the held-out criterion a select key names, from held_out_metrics'
    targets: criterion_contributions of these rows sum to held_out_metrics' value of that key."""
    if select_key == SELECT_KEYS["impression_loss"]:
        n = tg["impressions"]
        return tg["clicks"] / np.maximum(n, 1), n, True
    return tg["label"], tg["weight"], select_key == SELECT_KEYS["recalibrated_loss"]


def paired_standard_error(a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> float:
    """Standard error of sum(a) - sum(b) when rows are dependent within a group (a held-out query) and
    groups are independent: sqrt(G var(d_g)) over the groups' summed differences d_g."""
    d = pd.Series(np.asarray(a, np.float64) - np.asarray(b, np.float64)).groupby(np.asarray(groups)).sum()
    return float(np.sqrt(len(d) * d.var(ddof=1))) if len(d) > 1 else math.inf


GATE_TOLERANCE = 1e-6  # a candidate must beat the best so far by more than this to replace it


def gate_keeps(value: float, best_value: float, best_is_start: bool, margin_se: float = 0.0,
               se_vs_start: float | None = None) -> bool:
    """The gate's rule for one candidate (an epoch), against the best so far: kept if its criterion is
    lower by more than GATE_TOLERANCE; and, while the best is still the start, with `margin_se` > 0,
    also unless the start leads it by more than `margin_se` standard errors of their paired held-out
    difference (train.select_margin_se). One place for the trainer (training/recipe.py) and the
    offline replays (benchmarks/gate_study.py, benchmarks/quality.py)."""
    if value < best_value - GATE_TOLERANCE:
        return True
    return bool(best_is_start and margin_se > 0 and se_vs_start is not None
                and value - best_value <= margin_se * se_vs_start)


def targets(batch: dict[str, np.ndarray], compact: bool, t: TrainSettings | None = None) -> dict[str, np.ndarray]:
    """label / weight (what the loss uses) and clicks / impressions (what metrics count), per row of
    the batch. t: the training settings, for the pair table's training variants (None: the exact loss)."""
    if not compact:
        clicked = batch["clicked"].astype(np.float64)
        return {"label": clicked, "weight": batch["weight"].astype(np.float64), "clicks": clicked,
                "impressions": np.ones_like(clicked)}
    label, weight = batch["label"], batch["weight"]
    if t is not None:
        label, weight = pair_targets(label, weight, batch["impressions"], batch["p_model"],
                                     t.label_prior_impressions, t.pair_weight_power)
    n = batch["impressions"].astype(np.float64)
    return {"label": np.asarray(label, np.float64), "weight": np.asarray(weight, np.float64),
            "clicks": batch["clicks"].astype(np.float64), "impressions": n}


def floored_logit(logits: np.ndarray, floor_logit: float) -> np.ndarray:
    """logit(eps + (1 - eps) sigmoid(l)), eps = sigmoid(floor_logit) (training/model.py's
    `with_noise_floor`, for the gate's numpy side)."""
    def log_sigmoid(x):
        return -np.logaddexp(0.0, -x)
    z = np.asarray(logits, np.float64)
    log_1m_eps = log_sigmoid(-floor_logit)
    return np.logaddexp(log_sigmoid(floor_logit), log_1m_eps + log_sigmoid(z)) - log_1m_eps - log_sigmoid(-z)


def criterion_contributions(z: np.ndarray, label: np.ndarray, weight: np.ndarray, recalibrate: bool = True,
                            offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Each row's share of a held-out criterion (they sum to it): weight * log loss / total weight, the
    logits after recalibrated_loss's affine fit (or as they are), plus a fixed per-row offset (log
    examination at the row's position: examination_cells). Summed per held-out query, the difference
    of two candidates' shares gives the paired standard error the gate's margin uses."""
    z, label, weight = (np.asarray(v, dtype=np.float64) for v in (z, label, weight))
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), z.shape)
    total = max(weight.sum(), 1e-12)
    logits = _recalibrated_logits(z, label, weight, offset) if recalibrate else z + offset
    return weight * bce_with_logits(logits, label) / total


def _recalibrated_logits(z: np.ndarray, label: np.ndarray, weight: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """recalibrated_loss's logits: a x + b + offset on the standardised z (standardised, Newton starts
    from the base rate: stable; a >= 0), or the constant b0 + offset where that fits better."""
    total = max(weight.sum(), 1e-12)
    x = (z - z.mean()) / max(z.std(), 1e-12)
    rate = float(np.clip(np.sum(weight * label) / total, 1e-6, 1 - 1e-6))
    b0 = float(np.log(rate / (1 - rate)) - np.sum(weight * offset) / total)
    a, b = fit_logistic(lambda a, b: logistic_sums(x, label, weight, a, b, offset), 0.0, b0)
    fitted = a * x + b + offset
    base = b0 + offset
    if not (np.isfinite(fitted).all() and a >= 0):
        return base
    return fitted if np.sum(weight * bce_with_logits(fitted, label)) <= np.sum(weight * bce_with_logits(base, label)) \
        else base


def log_examination(propensity: dict | None, floor: float, buckets: int) -> np.ndarray:
    """log theta_k per position bucket 1..buckets from a score summary's `propensity` ({position: theta},
    relative to position 1), floored at `floor` (weighting.propensity_min); the last bucket, k and
    deeper, takes theta_k."""
    theta = {int(k): float(v) for k, v in (propensity or {}).items()}
    return np.log([max(theta.get(k, floor), floor) for k in range(1, buckets + 1)])


def examination_cells(z: np.ndarray, position_impressions: np.ndarray, position_clicks: np.ndarray,
                      query: np.ndarray, log_theta: np.ndarray) -> dict[str, np.ndarray]:
    """Held-out pairs as (pair, position bucket) cells where they were shown: the pair's logit z, the
    bucket's log examination propensity as a fixed offset, click rate and impressions, the query. A
    candidate is then judged on P(click at k) = sigmoid(a z + b + log theta_k): it is not paid for
    reproducing the logging ranker's position bias, which a model trained on corrected labels does not."""
    n = np.asarray(position_impressions, np.float64)
    shown = n > 0
    grid = np.broadcast_to
    return {"z": grid(np.asarray(z, np.float64)[:, None], n.shape)[shown],
            "offset": grid(np.asarray(log_theta, np.float64)[None, : n.shape[1]], n.shape)[shown],
            "label": np.asarray(position_clicks, np.float64)[shown] / n[shown], "weight": n[shown],
            "query": grid(np.asarray(query)[:, None], n.shape)[shown]}


def recalibrated_loss(z: np.ndarray, label: np.ndarray, weight: np.ndarray) -> float:
    """Weighted log loss after the best affine recalibration a z + b of the logits (2 parameters
    fitted on these rows): what a model's ranking is worth, whatever its (a, b) happen to be.
    Comparing models by it, a start whose head was just refitted and an epoch whose head drifted
    with the weights are judged on what their encoders rank, not on a calibration wobble."""
    # (the fit: _recalibrated_logits; a >= 0 only: a model is exported with its logits' direction, so one
    # that ranks against the clicks is worth no more than a constant, however well a negative slope fits)
    return float(criterion_contributions(z, label, weight).sum())


def held_out_metrics(z: np.ndarray, tg: dict[str, np.ndarray]) -> dict[str, Any]:
    """Held-out clicks: log loss weighted by the strategy's weights (as is and recalibrated), click log
    loss with every impression counted once (as is and recalibrated: the default selection criterion,
    the same yardstick for every strategy), click AUC."""
    if len(z) == 0:
        return {"eval_rows": 0}
    w, n, c = tg["weight"], tg["impressions"], tg["clicks"]
    return {"eval_rows": int(len(z)), "eval_impressions": int(n.sum()),
            "eval_loss": float(np.sum(w * bce_with_logits(z, tg["label"])) / max(w.sum(), 1e-12)),
            "eval_loss_recalibrated": recalibrated_loss(z, tg["label"], w),
            "eval_impression_loss_recalibrated": recalibrated_loss(z, c / np.maximum(n, 1), n),
            "eval_logloss": float(np.sum(n * bce_with_logits(z, c / np.maximum(n, 1))) / n.sum()),
            "eval_auc": weighted_auc(z, c, n - c)}
