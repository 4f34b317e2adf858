"""Pair compaction: one training row per distinct (query, title), with the same loss.

The trainee sees only (query, title), so every impression of a pair shares one prediction p and

    sum_i w_i * BCE(p, y_i) = W * BCE(p, y_bar),   W = sum_i w_i,   y_bar = sum_i w_i y_i / W

(BCE is linear in the label). Training on pairs with soft label y_bar and weight W is therefore
exact, and costs steps per distinct pair instead of per impression. `weight` is W rescaled to mean
1 over pairs (a constant factor, so the optimum is unchanged) and `weight_sum` keeps W itself.
"""
from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from udfs.aggregates import exact_avg, exact_sum
from udfs.clickstream.schema import (
    MODEL_INPUT_COLUMNS,
    POSITION_CLICKS,
    POSITION_IMPRESSIONS,
    POSITION_LABEL,
    POSITION_WEIGHT,
    QUERY_KEY,
)

PAIR_KEY = ("query", "title")  # trimmed: the scorer and the trainee see the trimmed texts
# Per-pair constants carried from any of its rows (equal on every row of the pair).
PAIR_CONSTANTS = ("query_bucket", "relevance", "p_model", "prior_logit", *MODEL_INPUT_COLUMNS)


def compact_pairs(rows: DataFrame, position_buckets: int = 10) -> DataFrame:
    """Weighted rows -> one row per trimmed (query, title): label, weight_sum, impressions, clicks,
    query_key, and per position bucket (positions 1 .. B-1 each, B and deeper pooled) the summed
    weight `_pos_w`, weighted click rate `position_label` (0 where the pair was not shown there),
    impressions and clicks (what the gate counts).
    train.position_tower trains on those: sum_k W_k BCE(p_k, y_k) is the row loss of a model whose
    click probability depends on the position too, exactly as the pair label is for one that does not.

    `weight` and `position_weight` (mean 1 over pairs) are added by `with_pair_weight` once the mean
    is known."""
    w, y = F.col("weight"), F.col("clicked")
    present = [c for c in (*PAIR_CONSTANTS, "pair_relevance") if c in rows.columns]
    bucket = F.least(F.col("position"), F.lit(position_buckets))
    ks = range(1, position_buckets + 1)
    per_position = [agg for k in ks
                    for agg in (exact_sum(F.when(bucket == k, w).otherwise(0.0)).alias(f"_w{k}"),
                                exact_sum(F.when(bucket == k, w * y).otherwise(0.0)).alias(f"_wy{k}"),
                                F.sum(F.when(bucket == k, 1).otherwise(0)).alias(f"_n{k}"),
                                F.sum(F.when(bucket == k, y).otherwise(0)).cast("long").alias(f"_c{k}"))]
    pairs = (rows.groupBy(F.trim("query").alias("query"), F.trim("title").alias("title"))
                 .agg(exact_sum(w * y).alias("_wy"), exact_sum(w).alias("weight_sum"),
                      F.count("*").alias("impressions"), F.sum(y).cast("long").alias("clicks"),
                      *per_position, *[F.first(c).alias(c) for c in present])
                 .withColumns({   # one projection (each withColumn would be analysed on its own)
                     "label": F.col("_wy") / F.col("weight_sum"),
                     QUERY_KEY: F.xxhash64("query"),
                     "_pos_w": F.array(*[F.col(f"_w{k}") for k in ks]),
                     POSITION_LABEL: F.array(*[F.when(F.col(f"_w{k}") > 0, F.col(f"_wy{k}") / F.col(f"_w{k}"))
                                               .otherwise(0.0) for k in ks]),
                     POSITION_IMPRESSIONS: F.array(*[F.col(f"_n{k}").cast("long") for k in ks]),
                     POSITION_CLICKS: F.array(*[F.col(f"_c{k}") for k in ks])})
                 .drop("_wy", *[f"_{v}{k}" for k in ks for v in ("w", "wy", "n", "c")]))
    if "pair_relevance" in present:  # weighting.pair_label=click_model: the click model's corrected label
        pairs = (pairs.withColumn("label", F.coalesce(F.col("pair_relevance"), F.col("label")))
                      .drop("pair_relevance"))
    return pairs


def pair_totals(pairs: DataFrame) -> dict[str, float]:
    """pairs, impressions (must equal the row table's rows) and mean weight_sum, in one pass."""
    row = pairs.agg(F.count("*").alias("pairs"), F.sum("impressions").alias("impressions"),
                    exact_avg("weight_sum").alias("mean_weight_sum")).first()
    return {"pairs": int(row["pairs"]), "impressions": int(row["impressions"] or 0),
            "mean_weight_sum": float(row["mean_weight_sum"] or 0.0)}


def with_pair_weight(pairs: DataFrame, mean_weight_sum: float) -> DataFrame:
    scale = F.lit(mean_weight_sum)
    return (pairs.withColumn("weight", F.col("weight_sum") / scale)
                 .withColumn(POSITION_WEIGHT, F.transform("_pos_w", lambda v: v / scale))
                 .drop("_pos_w"))


def pair_targets(label: np.ndarray, weight: np.ndarray, impressions: np.ndarray, prior_p: np.ndarray,
                 prior_impressions: float = 0.0, weight_power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Training target and weight per pair. Defaults give the exact row-level loss.

    prior_impressions k > 0 shrinks each soft label toward the scorer's calibrated p by k
    pseudo-impressions (empirical Bayes: a pair seen once cannot pull the model far);
    weight_power < 1 tempers head pairs: weight * impressions ** (power - 1), so a pair's weight
    grows like impressions ** power (0.5: square root) instead of linearly.
    """
    n = np.asarray(impressions, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    if prior_impressions > 0:
        label = (n * label + prior_impressions * np.asarray(prior_p, dtype=np.float64)) / (n + prior_impressions)
    weight = np.asarray(weight, dtype=np.float64)
    if weight_power != 1.0:
        weight = weight * np.maximum(n, 1.0) ** (weight_power - 1.0)
    return label, weight
