"""The click model for logs whose (position, pair) cells are too many for the driver (past
weighting.max_driver_cells): the EM's shared parameters (theta per position, the noise floor, the
regression prior's pooled relevance per p_model group) are fitted on the driver from the cells of a
hash sample of pairs, about max_driver_cells of them; then one Spark pass solves every pair's
relevance from its own cells (udfs/weighting/pair_relevance.py), and, when p_click is read, another
solves each cell's leave-one-out relevance from its pair's cells (held_out), joined back to the rows
by (pair, position) in Spark. The driver's memory stays bounded by the sample whatever the log's size;
the per-position parameters rest on hundreds of thousands of impressions a position even so.

Bits: pairs are sampled by a hash of the pair and sorted by pair on the driver, and each pair's
relevance is solved with its own stopping point (pair_relevance.solve_pair_relevance), so neither the
partitions (a count fixed by the number of pairs) nor the Arrow batches nor the cores move a bit: a
laptop, a cluster and a rerun fit the same parameters and labels.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from udfs.weighting.cells import MIN_ROWS_PER_POSITION, carry_forward, examination_answer, prior_group_counts
from udfs.weighting.pair_relevance import SharedParameters, pair_evidence, pair_held_out, shared_from_sample
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.slots import SLOT_STRIDE, position_theta

log = logging.getLogger("clickweight")

PAIRS_PER_PARTITION = 50_000    # the pair table's partitions: a function of the pair count only (bits)
MIN_SAMPLE_CELLS = 20_000       # the sample when max_driver_cells is smaller (0 included)
GROUP_QUANTILE_ERROR = 1e-4     # approxQuantile's relative error for the prior's p_model groups
HASH_RANGE = 1 << 31


def _flat_cells(table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pair rows (Arrow; list columns k, n, c and a group) as cells: position index, pair index (the
    row), n, c; and each pair's group."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def column(name: str):
        col = table.column(name)
        return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col

    k_list = column("k")
    n_pairs = len(k_list)
    lengths = pc.list_value_length(k_list).to_numpy(zero_copy_only=False)
    pair = np.repeat(np.arange(n_pairs), lengths)
    flat = [pc.list_flatten(column(name)).to_numpy(zero_copy_only=False) for name in ("k", "n", "c")]
    group = column("group").to_numpy(zero_copy_only=False).astype(np.int64)
    return (flat[0].astype(np.int64), pair, flat[1].astype(np.float64), flat[2].astype(np.float64), group,
            n_pairs)


def _evidence(pairs: DataFrame, shared: SharedParameters) -> DataFrame:
    """Per pair: _bucket, _r, _n, _m, _gamma, as udfs/weighting/cells.py em_propensity's evidence holds them."""
    import pyarrow as pa

    def per_pair(batches):
        for batch in batches:
            k, pair, n, c, group, n_pairs = _flat_cells(batch)
            gamma, r_j, n_j, m_j = pair_evidence(k, pair, n, c, n_pairs, group, shared)
            yield pa.RecordBatch.from_arrays([batch.column("_bucket"), pa.array(r_j), pa.array(n_j),
                                              pa.array(m_j, type=pa.float64()), pa.array(gamma)],
                                             names=["_bucket", "_r", "_n", "_m", "_gamma"])

    return pairs.mapInArrow(per_pair, "_bucket long, _r double, _n double, _m double, _gamma double")


def held_out(pairs: DataFrame, shared: SharedParameters, positions: np.ndarray,
             persisted: list[DataFrame] | None = None) -> DataFrame:
    """Per fitted cell: _bucket, _position, _g_click, _g_skip, as udfs/weighting/cells.py held_out_table
    holds them; solved where each pair's cells are (a pair's answer depends on its cells alone, never on
    the batch), nothing collected. Persisted (appended to `persisted`) when given: several passes read
    p_click, and each cell costs up to two solves."""
    import pyarrow as pa

    def per_cell(batches):
        for batch in batches:
            k, pair, n, c, group, n_pairs = _flat_cells(batch)
            g_click, g_skip = pair_held_out(k, pair, n, c, n_pairs, group, shared)
            bucket = batch.column("_bucket").to_numpy(zero_copy_only=False)[pair]
            yield pa.RecordBatch.from_arrays(
                [pa.array(bucket, type=pa.int64()), pa.array(positions[k], type=pa.int64()),
                 pa.array(g_click, mask=np.isnan(g_click)), pa.array(g_skip, mask=np.isnan(g_skip))],
                names=["_bucket", "_position", "_g_click", "_g_skip"])

    frame = pairs.mapInArrow(per_cell, "_bucket long, _position long, _g_click double, _g_skip double")
    if persisted is not None:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        persisted.append(frame)
    return frame


def _quantile_bin(pairs: DataFrame, column: str, bins: int) -> Column:
    """The bin (0 .. bins - 1) of `column` among `bins` approximate quantiles over the pairs."""
    if bins <= 1:
        return F.lit(0)
    cuts = sorted(set(pairs.approxQuantile(column, [i / bins for i in range(1, bins)], GROUP_QUANTILE_ERROR)))
    return sum((F.col(column) > F.lit(x)).cast("int") for x in cuts) if cuts else F.lit(0)


def _quantile_bin_within(pairs: DataFrame, column: str, bins: int, outer: Column) -> Column:
    """The bin of `column` among its approximate quantiles within each `outer` bin (one aggregate job;
    the driver gets a few cuts per outer bin)."""
    probs = [i / bins for i in range(1, bins)]
    rows = (pairs.groupBy(outer.alias("_outer"))
                 .agg(F.percentile_approx(column, probs, int(1 / GROUP_QUANTILE_ERROR)).alias("cuts")).collect())
    expr: Column = F.lit(0)
    for row in rows:
        cuts = sorted(set(row["cuts"] or []))
        inner = sum((F.col(column) > F.lit(x)).cast("int") for x in cuts) if cuts else F.lit(0)
        expr = F.when(outer == F.lit(int(row["_outer"])), inner).otherwise(expr)
    return expr


def fit(frame: DataFrame, w: WeightingSettings, persisted: list[DataFrame]
        ) -> tuple[dict[int, float], dict[str, Any], dict[str, Any] | None]:
    """em_propensity's answer (relative propensity per seen position, the fit's description, the click
    model's parts) from the (position, pair) cells in Spark: position, _bucket, n, c and pm (the pair's
    calibrated p_model). The click model's evidence is a Spark DataFrame, persisted (appended to
    `persisted`, as are the pair rows)."""
    per_pos = {int(r["position"]): (int(r["n"]), int(r["c"])) for r in
               frame.groupBy("position").agg(F.sum("n").alias("n"), F.sum("c").alias("c")).collect()}
    positions = sorted(per_pos)
    fitted = np.array([k for k in positions if per_pos[k][0] >= MIN_ROWS_PER_POSITION], dtype=np.int64)
    info: dict[str, Any] = {"estimator": "em", "buckets": "query_title_pairs"}
    if not len(fitted) or sum(per_pos[int(k)][1] for k in fitted) <= 0:
        return position_theta(carry_forward(positions, {}, 1.0)), info, None
    index = F.create_map(*[F.lit(int(x)) for i, k in enumerate(fitted) for x in (k, i)])
    cells = (frame.filter(F.col("position").isin([int(k) for k in fitted]))
                  .select("_bucket", F.element_at(index, F.col("position")).alias("k"), "n", "c", "pm",
                          ((F.col("position") % F.lit(SLOT_STRIDE)) * F.col("n")).alias("kn")))
    by_pair = (cells.groupBy("_bucket")
                    .agg(F.sort_array(F.collect_list(F.struct("k", "n", "c"))).alias("cells"),
                         F.min("pm").alias("pm"), F.count("*").alias("n_cells"),
                         (F.sum("kn") / F.sum("n")).alias("mean_position"))
                    .persist(StorageLevel.MEMORY_AND_DISK))
    persisted.append(by_pair)
    n_pairs, n_cells = (int(v or 0) for v in by_pair.agg(F.count("*"), F.sum("n_cells")).first())
    n_pm, n_pos = prior_group_counts(w, n_pairs)
    n_groups = n_pm * n_pos if w.em_prior_rows > 0 else 0
    group: Column = F.lit(0)
    if n_groups > 1:   # the regression prior's groups: p_model quantiles over the pairs (cells.prior_groups)
        group = _quantile_bin(by_pair, "pm", n_pm)
        if n_pos > 1:  # each p_model bin split at its own mean-position quantiles
            group = group * F.lit(n_pos) + _quantile_bin_within(by_pair, "mean_position", n_pos, group)
    partitions = max(2, -(-n_pairs // PAIRS_PER_PARTITION))
    pairs = (by_pair.select("_bucket", group.cast("long").alias("group"), F.col("cells.k").alias("k"),
                            F.col("cells.n").alias("n"), F.col("cells.c").alias("c"))
                    .repartition(partitions, "_bucket").sortWithinPartitions("_bucket")
                    .persist(StorageLevel.MEMORY_AND_DISK))
    persisted.append(pairs)
    # The sample: pairs whose hash falls under the fraction that brings about max_driver_cells cells.
    fraction = min(1.0, max(w.max_driver_cells, MIN_SAMPLE_CELLS) / max(n_cells, 1))
    unit = F.pmod(F.xxhash64("_bucket"), F.lit(HASH_RANGE)) / F.lit(float(HASH_RANGE))
    sample = pairs.filter(unit < F.lit(fraction)) if fraction < 1.0 else pairs
    table = sample.toArrow()
    table = table.take(np.argsort(table.column("_bucket").to_numpy(), kind="stable"))  # a fixed order
    k, pair, n, c, pair_group, s_pairs = _flat_cells(table)
    del table
    shared, iterations = shared_from_sample(k, pair, n, c, s_pairs, pair_group, n_groups, fitted, w)
    theta, eps = shared.theta, shared.eps
    evidence = _evidence(pairs, shared).persist(StorageLevel.MEMORY_AND_DISK)
    persisted.append(evidence)
    info.update(cells=n_cells, n_buckets=n_pairs, iterations=iterations, noise_floor=eps, prior_rows=shared.prior_rows,
                em_sample={"pairs": s_pairs, "cells": int(len(k)), "fraction": fraction})
    log.info("click model: EM on a sample of %d of %d pairs (%d of %d cells), every pair's relevance in Spark",
             s_pairs, n_pairs, len(k), n_cells)
    theta_abs = {int(p): float(t) for p, t in zip(fitted, theta)}
    # Built only when p_click is read (a join by pair and position, in Spark).
    theta_all = carry_forward(positions, theta_abs, float(theta[0]))
    model = {"theta": theta_all, "evidence": evidence,
             "prior_rows": shared.prior_rows, "eps": float(eps),
             "held_out": partial(held_out, pairs, shared, fitted.astype(np.int64), persisted), "cells": n_cells}
    return examination_answer({k: n for k, (n, _) in per_pos.items()}, fitted, theta, theta_all, info, w), info, model
