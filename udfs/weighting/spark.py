"""The weighting phases of the score job, on Spark DataFrames: Platt calibration, the position
click model (propensities, denoise's leave-one-out P(click)), per-row signals and raw weights (the
mapInArrow pass calls udfs/weighting/strategies.py), importance sampling, normalisation, and the summaries.

The statistics come from one aggregate of the persisted scored rows to (position, pair) cells, with
the iterations on the driver (udfs/weighting/cells.py), or, past weighting.max_driver_cells, from Spark
passes over that aggregate, the click model's EM then fitted on a sample of pairs
(udfs/weighting/spark_em.py); the maths they feed are the pure functions of udfs/weighting/weights.py,
udfs/weighting/cells.py and udfs/weighting/pair_relevance.py.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from udfs.aggregates import exact_avg, exact_sum
from udfs.errors import UserError
from udfs.job_phase import start_phase
from udfs.scoring import model_loader
from udfs.weighting import calibration, spark_em, strategies, weights
from udfs.weighting import cells as cells_mod
from udfs.weighting.settings import SamplingSettings, WeightingSettings
from udfs.weighting.slots import SLOT_STRIDE

log = logging.getLogger("clickweight")


def sigmoid(z: Column) -> Column:
    """weights.sigmoid as a column expression."""
    return 1 / (1 + F.exp(-z))


def fit_calibration(df: DataFrame, base_rate: float, iterations: int = 8, rows: Column | None = None,
                    clicks: Column | None = None) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a * relevance + b) fitted to the clicks by damped Newton steps
    (calibration.fit_logistic; one aggregate per step). Each row of df stands for `rows` impressions
    with `clicks` clicks (default: one impression, `clicked`): rows or (position, pair) cells."""
    n = F.lit(1.0) if rows is None else rows.cast("double")
    y = F.col("clicked") if clicks is None else clicks.cast("double")

    def sums_at(a: float, b: float) -> dict[str, float]:
        z = F.lit(a) * F.col("relevance") + F.lit(b)
        p = sigmoid(z)
        w = n * p * (1 - p)
        bce = n * (F.log1p(F.exp(-F.abs(z))) + F.greatest(z, F.lit(0.0))) - y * z  # n log(1 + e^z) - c z
        return df.select(
            exact_sum((n * p - y) * F.col("relevance")).alias("g_a"),
            exact_sum(n * p - y).alias("g_b"),
            exact_sum(w * F.col("relevance") ** 2).alias("h_aa"),
            exact_sum(w * F.col("relevance")).alias("h_ab"),
            exact_sum(w).alias("h_bb"),
            exact_sum(bce).alias("loss"),
        ).first().asDict()

    return calibration.fit_scorer_platt(sums_at, base_rate, iterations=iterations, tol=1e-7)


@dataclass
class ClickModel:
    """The fitted position-based click model, for denoise's leave-one-out P(click) per row."""
    bucket: Column                 # the relevance bucket of a row (same expression the EM grouped by)
    theta: dict[int, float]        # EM theta per position (absolute scale: theta * gamma is P(click))
    evidence: pd.DataFrame | DataFrame  # per bucket: _bucket, _r, _n, _m, _gamma (weights.em_bucket_evidence);
                                   # a Spark DataFrame when the EM ran in Spark (spark_em)
    prior_rows: float
    eps: float = 0.0               # the fitted noise floor: P(click) = eps + (1 - eps) theta gamma
    buckets: int = 0               # the evidence's rows (a Spark frame's, counted when it was fitted)
    held_out: Callable[[], pd.DataFrame | DataFrame] | None = None  # per fitted cell: _bucket, _position,
                                   # _g_click, _g_skip (cells.held_out_table; spark_em.held_out in Spark)
    cells: int = 0                 # the held-out table's rows
    scorer_prior: bool = True      # the prior's groups hold the scorer's p_model (not em_prior_groups=position)
    click_context: int = 0         # theta's keys are examination slots (udfs/weighting/slots.py) when > 0


CLICK_CONTEXT = "_click_context"  # each row's click context (before the cap), while the click model reads it
CLICK_CONTEXTS = ("clicks_above", "last_click_distance")


def with_click_context(df: DataFrame, by: str = "clicks_above") -> DataFrame:
    """Adds CLICK_CONTEXT, the row's click context within its search (its session_id and query), rows in
    position order (event_id breaking ties): `clicks_above`, the clicks at higher positions; or
    `last_click_distance`, how many positions below the last click above it the row is (0 with no click
    above), the user browsing model's context (Dupret and Piwowarski 2008): under a cascade a user still
    reading a row far below a click is one who did not stop there. One window over the rows (a shuffle by
    search). A row without a session_id (optional in the data contract) has no known search: 0, the
    position-based read."""
    if by not in CLICK_CONTEXTS:
        raise ValueError(f"click context by {by!r}: one of {CLICK_CONTEXTS}")
    search = (Window.partitionBy("session_id", "query").orderBy("position", "event_id")
              .rowsBetween(Window.unboundedPreceding, -1))  # event_id: ties in position keep one order
    if by == "clicks_above":
        context = F.coalesce(F.sum("clicked").over(search), F.lit(0))
    else:
        last_click = F.max(F.when(F.col("clicked") == 1, F.col("position"))).over(search)
        # at least 1 below a click above it, a row logged at the clicked row's own position included
        # (greatest skips nulls: "no click above" is tested first)
        context = F.when(last_click.isNull(), F.lit(0)).otherwise(F.greatest(F.col("position") - last_click, F.lit(1)))
    return df.withColumn(CLICK_CONTEXT, F.when(F.col("session_id").isNull(), F.lit(0)).otherwise(context).cast("long"))


def with_clicks_above(df: DataFrame) -> DataFrame:
    """with_click_context by the count of clicks above."""
    return with_click_context(df, "clicks_above")


def examination_slot(click_context: int) -> Column:
    """The EM's key for a row's examination: its position, or with click_context C > 0 its position plus
    SLOT_STRIDE x min(its click context, C) (udfs/weighting/slots.py; needs with_click_context)."""
    position = F.col("position").cast("long")
    if not click_context:
        return position
    return position + F.lit(SLOT_STRIDE) * F.least(F.col(CLICK_CONTEXT), F.lit(int(click_context)))


def pair_bucket() -> Column:
    """A row's (query, title) pair as the EM's relevance bucket (Wang et al.'s per-document gamma)."""
    return F.xxhash64(F.trim("query"), F.trim("title"))


def estimate_propensity(df: DataFrame, w: WeightingSettings, cells: pd.DataFrame | None = None,
                        persisted: list[DataFrame] | None = None, frame: DataFrame | None = None
                        ) -> tuple[dict[int, float], dict[str, Any], ClickModel | None]:
    """Examination propensity per position from the log: regression-EM (default) or the CTR ratio.
    With EM, also the fitted click model (None for the ratio estimator or a log without clicks).
    `cells`: the (position, pair) cells with pm already on the driver (collect_cells); without them the
    per-pair EM runs as Spark passes (udfs/weighting/spark_em.py; the frames it caches are appended to
    `persisted`, which the caller releases; `frame`: the cells in Spark with their calibrated pm, else
    aggregated from df)."""
    if w.propensity_estimator == "ratio":
        if cells is None:
            cells = (df.groupBy("position", F.lit(0).alias("_bucket"))
                       .agg(F.count("*").alias("n"), F.sum("clicked").alias("c"), exact_avg("p_model").alias("pm"))
                       .toPandas())  # one row per position: small
        return cells_mod.ratio_propensity(cells, w.propensity_min), {"estimator": "ratio"}, None
    # Relevance buckets: (query, title) pairs when few enough, else p_model quantile bins (rows the
    # scorer cannot tell apart share one relevance).
    n_pairs = (cells["_bucket"].nunique() if cells is not None
               else int(df.agg(F.approx_count_distinct(pair_bucket())).first()[0]))
    if n_pairs <= w.em_max_pairs:
        bucket, kind = pair_bucket(), "query_title_pairs"
        if cells is None:   # the cells stay in Spark: so does the EM
            if frame is None:
                frame = (df.groupBy(examination_slot(w.click_context).alias("position"), bucket.alias("_bucket"))
                           .agg(F.count("*").alias("n"), F.sum("clicked").alias("c"), F.min("p_model").alias("pm")))
            propensity, info, model = spark_em.fit(frame, w, persisted if persisted is not None else [])
            click_model = None if model is None else ClickModel(bucket, model["theta"], model["evidence"],
                                                                model["prior_rows"], model["eps"], info["n_buckets"],
                                                                model["held_out"], model["cells"],
                                                                w.em_prior_groups != "position", w.click_context)
            return propensity, info, click_model
    else:
        b = w.em_buckets
        cuts = sorted(set(df.approxQuantile("p_model", [i / b for i in range(1, b)], 1e-3)))
        bucket = sum((F.col("p_model") > F.lit(x)).cast("int") for x in cuts) if cuts else F.lit(0)
        kind, cells = "p_model_quantiles", None
    if cells is None:
        cells = cells_mod.sorted_cells(
            df.groupBy(examination_slot(w.click_context).alias("position"), bucket.alias("_bucket"))
              .agg(F.count("*").alias("n"), F.sum("clicked").alias("c"), exact_avg("p_model").alias("pm"))
              .toPandas())
    propensity, info, model = cells_mod.em_propensity(cells, kind, w)
    click_model = None if model is None else ClickModel(
        bucket, model["theta"], model["evidence"], model["prior_rows"], model.get("eps", 0.0),
        len(model["evidence"]), model["held_out"], model["cells"], w.em_prior_groups != "position",
        w.click_context)
    return propensity, info, click_model


def cell_frame(scored: DataFrame, click_context: int = 0) -> DataFrame:
    """The scored rows aggregated to (position, pair) cells: rows n, clicks c, the pair's relevance and
    p_model (p_raw). With click_context > 0 a cell's `position` is its examination slot (examination_slot)."""
    return (scored.groupBy(examination_slot(click_context).alias("position"), pair_bucket().alias("_bucket"))
                  .agg(F.count("*").alias("n"), F.sum("clicked").alias("c"),
                       F.min("relevance").alias("relevance"), F.min("p_model").alias("p_raw")))


def collect_cells(scored: DataFrame | None, max_cells: int, frame: DataFrame | None = None,
                  click_context: int = 0) -> pd.DataFrame | None:
    """The (position, pair) cells (cell_frame; `frame` when already built) on the driver, sorted, when
    there are at most max_cells, else None."""
    if max_cells <= 0:
        return None
    cells = (cell_frame(scored, click_context) if frame is None else frame).limit(max_cells + 1).toPandas()
    return None if len(cells) > max_cells else cells_mod.sorted_cells(cells)


BROADCAST_EVIDENCE_ROWS = 1_000_000  # ~40 MB: past it the rows shuffle-join the Spark EM's evidence


def _evidence(cm: ClickModel, spark_session: SparkSession, columns: list[str]) -> DataFrame:
    """The click model's per-bucket evidence as a frame to join the rows with: broadcast from the
    driver's table, or the Spark EM's frame, broadcast up to BROADCAST_EVIDENCE_ROWS buckets (through
    the JVM, never the driver's Python) and shuffle-joined past them."""
    if isinstance(cm.evidence, pd.DataFrame):
        return F.broadcast(spark_session.createDataFrame(cm.evidence[columns]))
    frame = cm.evidence.select(*columns)
    return F.broadcast(frame) if cm.buckets <= BROADCAST_EVIDENCE_ROWS else frame


def _held_out(cm: ClickModel, spark_session: SparkSession) -> DataFrame:
    """The click model's per-cell held-out relevance as a frame to join the rows with, broadcast as
    _evidence's is (a Spark EM's table past BROADCAST_EVIDENCE_ROWS cells shuffle-joins)."""
    if cm.held_out is None:
        raise ValueError("the click model carries no held-out relevance")
    table = cm.held_out()
    if isinstance(table, pd.DataFrame):
        return F.broadcast(spark_session.createDataFrame(table))
    return F.broadcast(table) if cm.cells <= BROADCAST_EVIDENCE_ROWS else table


def with_click_probability(df: DataFrame, cm: ClickModel, spark_session: SparkSession) -> DataFrame:
    """Adds p_click: the row's leave-one-out P(click) = eps + (1 - eps) theta_k gamma_-i
    (pair_relevance.click_model_probability), gamma_-i its pair's relevance re-solved without the row:
    the held-out table's for the row's (pair, position) cell and its click. A row at a position too rare
    to fit was never in the fit: its pair's fitted gamma, with theta carried down. Rows whose pair the EM
    did not see (all its positions too rare to fit) keep p_model.
    Also p_scorer_click, the scorer's P(click) at the row's position, eps + (1 - eps) theta_k m: m the
    prior's relevance of the pair's p_model group (what the click model makes of the scorer's rating);
    p_model without a prior (em_prior_rows 0: m is then the pair's own rate, not the scorer's), without
    p_model in the prior's groups (em_prior_groups=position: m is the logging ranker's) and where p_click
    keeps it."""
    ev = _evidence(cm, spark_session, ["_bucket", "_gamma", "_m"])
    held = _held_out(cm, spark_session)
    theta = F.create_map(*[F.lit(x) for k, t in sorted(cm.theta.items()) for x in (k, t)])
    th = F.col("_theta")
    eps, floor = F.lit(weights.EPS), F.lit(float(cm.eps))
    held_row = F.when(F.col("clicked") == 1, F.col("_g_click")).otherwise(F.col("_g_skip"))
    gamma = F.coalesce(held_row, F.col("_gamma"))   # null: the row's cell was not in the fit
    p = floor + (1 - floor) * th * F.least(F.greatest(gamma, eps), F.lit(1 - weights.EPS))
    p = F.least(F.greatest(p, eps), F.lit(1 - weights.EPS))
    fitted = F.col("_gamma").isNotNull() & F.col("_theta").isNotNull()
    scorer = floor + (1 - floor) * th * F.least(F.greatest(F.col("_m"), eps), F.lit(1 - weights.EPS))
    scorer = (F.least(F.greatest(scorer, eps), F.lit(1 - weights.EPS)) if cm.prior_rows > 0 and cm.scorer_prior
              else F.col("p_model"))
    return (df.withColumn("_bucket", cm.bucket).withColumn("_position", examination_slot(cm.click_context))
              .join(ev, "_bucket", "left").join(held, ["_bucket", "_position"], "left")
              .withColumn("_theta", F.element_at(theta, F.col("_position")))
              .withColumn("p_click", F.when(fitted, p).otherwise(F.col("p_model")))
              .withColumn("p_scorer_click", F.when(fitted, scorer).otherwise(F.col("p_model")))
              .drop("_bucket", "_position", "_gamma", "_m", "_g_click", "_g_skip", "_theta"))


def with_pair_relevance(df: DataFrame, cm: ClickModel, spark_session: SparkSession) -> DataFrame:
    """Adds pair_relevance: the click model's gamma of the row's pair, its P(click | examined) with
    position bias and the noise floor taken out, shrunk toward the pairs the scorer rates alike
    (`em_prior_rows`). Null for a pair the EM did not see (positions too rare to fit)."""
    ev = _evidence(cm, spark_session, ["_bucket", "_gamma"])
    return (df.withColumn("_bucket", cm.bucket).join(ev, "_bucket", "left")
              .withColumnRenamed("_gamma", "pair_relevance").drop("_bucket"))


RANKER_PRIOR = {"em_prior_groups": "p_model_position", "em_prior_fit": "empirical_bayes"}


def with_ranker_order_within_query(joined: DataFrame, w: WeightingSettings, cells: pd.DataFrame | None,
                                   persisted: list[DataFrame], frame: DataFrame | None
                                   ) -> tuple[DataFrame, dict[str, Any]]:
    """weighting.em_within_query ranker: each row's pair_relevance becomes the pair's relevance under a
    second fit whose prior keeps the logging ranker's placement (RANKER_PRIOR: groups by p_model and the
    pair's mean logged position, strength estimated from the log), minus that fit's mean over the query's
    rows, plus the label as fitted's mean over them. The order inside a query comes from the prior that
    reads the ranker's evidence (a pair it keeps on top is likelier relevant; with few impressions a pair
    the clicks alone order a query's pairs poorly); the level of each query from the label as fitted,
    whose weak prior keeps the query's own clicks (a strong prior pulls every query toward the groups'
    means, and a held-out AUC pooled over queries rewards the level too: benchmarks/label_accuracy.py).
    Means over rows are impression-weighted over pairs. Rows either fit left unlabelled keep theirs.
    Returns the rows and what the second fit estimated (its prior's strength)."""
    _, info, model = estimate_propensity(joined, w.but(**RANKER_PRIOR), cells, persisted, frame)
    if model is None:
        return joined, {"order": "fitted", "reason": "the ranker-prior fit found no click model"}
    within = _evidence(model, joined.sparkSession, ["_bucket", "_gamma"]).withColumnRenamed("_gamma", "_within")
    rows = joined.withColumn("_bucket", model.bucket).join(within, "_bucket", "left").drop("_bucket")
    both = F.col("pair_relevance").isNotNull() & F.col("_within").isNotNull()
    query = F.trim("query")
    means = rows.groupBy(query.alias("_query")).agg(
        F.avg(F.when(both, F.col("pair_relevance"))).alias("_level"),
        F.avg(F.when(both, F.col("_within"))).alias("_within_mean"))
    moved = F.col("_within") - F.col("_within_mean") + F.col("_level")
    relabelled = (rows.withColumn("_query", query).join(means, "_query", "left")
                      .withColumn("pair_relevance", F.when(both, F.least(F.greatest(moved, F.lit(weights.EPS)),
                                                                         F.lit(1 - weights.EPS)))
                                  .otherwise(F.col("pair_relevance")))
                      .drop("_query", "_within", "_within_mean", "_level"))
    return relabelled, {"order": "ranker", "prior_groups": RANKER_PRIOR["em_prior_groups"],
                        "prior_rows": info.get("prior_rows"), "noise_floor": info.get("noise_floor")}


SIGNAL_FIELDS = (("loss", "double"), ("info_gain", "double"), ("propensity", "double"),
                 ("noise_score", "double"), ("suspect", "boolean"), ("raw_weight", "double"))


def _numpy(batch, name: str, fill: float) -> np.ndarray:
    """One column of an Arrow batch as float64, nulls as `fill` (an absent column: all `fill`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if name not in batch.schema.names:
        return np.full(batch.num_rows, fill)
    col = batch.column(name).cast(pa.float64())
    return (pc.fill_null(col, fill) if col.null_count else col).to_numpy(zero_copy_only=False)


OPTIONAL_INPUTS = ("added_to_cart", "purchased", "dwell_ms")  # contract columns a log may lack: 0


def _signal_column(batch, name: str) -> np.ndarray:
    if name in OPTIONAL_INPUTS:
        return _numpy(batch, name, 0.0)
    if name not in batch.schema.names:
        raise UserError(f"the weighting strategy reads {name!r} ({strategies.SIGNAL_COLUMNS[name]}), "
                        "which this score run did not compute")
    return _numpy(batch, name, np.nan)


def make_signal_mapper(strategy: str, params: dict[str, Any], propensity: dict[int, float], p_noise: str,
                       drop: tuple[str, ...] = ()) -> Callable:
    """The weight pass as a mapInArrow function: each Arrow batch comes back with the signal columns
    and raw_weight appended (and `drop` removed); the other columns pass through untouched.

    mapInArrow rather than a pandas UDF: only the columns the signals read are converted to numpy;
    the rest (the token arrays among them) pass through as Arrow, without a round trip through pandas."""
    floor = params["propensity_min"]
    t0, t1 = params["noise_thresholds"]

    config = {"strategy": strategy, "combined": params.get("combined", {})}
    needed = strategies.reads(config)
    entries = {s.name: s for s in strategies.signals(config)}  # shipped whole to the workers

    def add_signals(batches):
        import pyarrow as pa

        for batch in batches:
            model_loader.log_rows("weights", batch.num_rows)
            positions = batch.column("position").to_numpy(zero_copy_only=False)
            # The stored signals (loss, info_gain, propensity, noise) always need these four ...
            cols = {"clicked": _numpy(batch, "clicked", 0.0), "p_model": _numpy(batch, "p_model", np.nan),
                    "propensity": pd.Series(positions).map(propensity).fillna(floor).to_numpy(dtype=np.float64)}
            cols["noise_score"], cols["suspect"] = weights.label_noise(_numpy(batch, p_noise, np.nan),
                                                                       cols["clicked"], t0, t1)
            # ... and the strategy's own reads come from the batch: optional input columns default to
            # 0, a scorer column the job did not compute is a bug worth a clear message.
            for name in needed:
                if name not in cols:
                    cols[name] = _signal_column(batch, name)
            out = {
                "loss": weights.bce(cols["p_model"], cols["clicked"]),
                "info_gain": weights.information_gain(cols["p_model"], params["base_rate"]),
                "propensity": cols["propensity"],
                "noise_score": cols["noise_score"],
                "suspect": np.asarray(cols["suspect"], dtype=bool),
                "raw_weight": strategies.raw_weights(strategy, cols, params, rows=batch.num_rows, entries=entries),
            }
            keep = [i for i, n in enumerate(batch.schema.names) if n not in drop]
            yield pa.RecordBatch.from_arrays(
                [batch.column(i) for i in keep] + [pa.array(out[n]) for n, _ in SIGNAL_FIELDS],
                names=[batch.schema.names[i] for i in keep] + [n for n, _ in SIGNAL_FIELDS])

    return add_signals


def with_signals(df: DataFrame, strategy: str, params: dict[str, Any], propensity: dict[int, float],
                 p_noise: str) -> DataFrame:
    """df plus loss, info_gain, propensity, noise_score, suspect, raw_weight. p_click and p_scorer_click
    stay only where the strategy reads them, so `clickweight explain` can put the row's numbers into the
    formula."""
    from pyspark.sql.types import StructField, StructType, _parse_datatype_string

    read = strategies.reads({"strategy": strategy, "combined": params.get("combined", {})})
    drop = tuple(c for c in ("p_click", "p_scorer_click") if c not in read)
    fields = [f for f in df.schema.fields if f.name not in drop]
    fields += [StructField(n, _parse_datatype_string(t), True) for n, t in SIGNAL_FIELDS]
    return df.mapInArrow(make_signal_mapper(strategy, params, propensity, p_noise, drop), StructType(fields))


def distinct_levels(df: DataFrame, value: Column, max_levels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct values of a column and their row counts (sorted by value), on the driver when there
    are at most max_levels of them (one Spark pass), else None. Raw weights take few values for most
    strategies (action_value: a handful, ipw: two per position) and at most one per cell otherwise."""
    if max_levels <= 0:
        return None
    levels = df.groupBy(value.alias("_v")).agg(F.count("*").alias("_k")).limit(max_levels + 1).toPandas()
    if len(levels) > max_levels:
        return None
    levels = levels.sort_values("_v", kind="stable")
    return levels["_v"].to_numpy(dtype=np.float64), levels["_k"].to_numpy(dtype=np.float64)


def normalise(df: DataFrame, w: WeightingSettings, raw: Column | None = None,
              levels: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[DataFrame, float]:
    """weight = clip(s * raw, w_min, w_max) with s chosen so the global mean is 1.

    raw defaults to raw_weight; with importance sampling it is raw_weight / keep_prob. The search
    for s runs on the driver over the distinct raw values when they are few enough (one Spark pass),
    else as one Spark pass per step. `levels`: the distinct raw values and their row counts when the
    caller knows them (uniform weights, nothing sampled): no pass at all.
    """
    raw = F.col("raw_weight") if raw is None else raw
    lo, hi = w.w_min, w.w_max

    def clipped(s: float) -> Column:
        return F.least(F.greatest(raw * F.lit(s), F.lit(lo)), F.lit(hi))

    if not w.normalize:
        return df.withColumn("weight", clipped(1.0)), 1.0
    if levels is None:
        levels = distinct_levels(df, raw, w.max_driver_cells)
    if levels is not None:
        value, count = levels
        n = count.sum()
        scale = weights.normalise_scale(lambda s: float(np.sum(count * np.clip(value * s, lo, hi)) / n),
                                        lo, hi, float(np.sum(count * value) / n))
    else:
        scale = weights.normalise_scale(lambda s: float(df.agg(exact_avg(clipped(s))).first()[0]),
                                        lo, hi, df.agg(exact_avg(raw)).first()[0])
    return df.withColumn("weight", clipped(scale)), scale


def importance_sample(df: DataFrame, sampling: SamplingSettings, rows: int) -> tuple[DataFrame, dict[str, Any]]:
    """Keep row i with q_i = min(1, c * raw_weight_i), mean q = keep_fraction (He et al. 2014).

    The keep decision is pmod(xxhash64(event_id, seed), 2^30) / 2^30 < q_i: deterministic per row,
    so a rerun keeps the same rows. Kept rows carry keep_prob = q_i; the caller weights them 1/q_i.
    Returns the kept rows (persisted) and the sampling statistics.
    """
    kf, seed = sampling.keep_fraction, sampling.seed
    if kf is None or kf >= 1.0:
        return df.withColumn("keep_prob", F.lit(1.0)), {"keep_fraction": None, "rows_sampled_out": 0}
    raw_mean = float(df.agg(exact_avg("raw_weight")).first()[0])

    def mean_q(c: float) -> float:
        return float(df.agg(exact_avg(F.least(F.lit(1.0), F.col("raw_weight") * F.lit(c)))).first()[0])

    c = weights.solve_keep_scale(mean_q, kf, kf / raw_mean, tol=1e-7)
    u = F.pmod(F.xxhash64(F.col("event_id"), F.lit(seed)), F.lit(1 << 30)) / F.lit(float(1 << 30))
    kept = (df.withColumn("keep_prob", F.least(F.lit(1.0), F.col("raw_weight") * F.lit(c)))
              .filter(u < F.col("keep_prob"))
              .persist(StorageLevel.MEMORY_AND_DISK))
    n_kept = kept.count()
    if n_kept == 0:
        raise UserError(f"sampling.keep_fraction={kf} kept no row of {rows}: raise it")
    return kept, {"keep_fraction": kf, "seed": seed, "c": c, "expected_kept": kf * rows, "rows_kept": n_kept,
                  "realised_fraction": n_kept / rows, "rows_sampled_out": rows - n_kept}


def with_calibrated_probability(df: DataFrame, scorer_is_cross: bool, base_rate: float,
                                fitted: tuple[float, float] | None = None
                                ) -> tuple[DataFrame, dict[str, float] | None]:
    """p_model and prior_logit (the logit the trainee starts from): a sentence encoder's cosine through
    Platt scaling fitted on the clicks (`fitted`: (a, b) already fitted on the driver); a
    cross-encoder's own probability as is."""
    if scorer_is_cross:
        p = F.least(F.greatest(F.col("p_model"), F.lit(weights.EPS)), F.lit(1 - weights.EPS))
        return df.withColumn("prior_logit", F.log(p / (1 - p))), None
    a, b = fitted or fit_calibration(df, base_rate)
    floored = a <= calibration.MIN_SCORER_SLOPE  # fit_scorer_platt held it there
    if floored:
        log.warning("calibration: clicks in this log do not rise with the scorer's cosine (the fitted slope "
                    "was not above %g); p_model is held flat in the scorer's order, and a trainee starts from "
                    "that slope", calibration.MIN_SCORER_SLOPE)
    return (df.withColumn("prior_logit", F.lit(a) * F.col("relevance") + F.lit(b))
              .withColumn("p_model", sigmoid(F.col("prior_logit")))), {"a": a, "b": b, "slope_floored": floored}


def calibrated_cell_probability(scorer_is_cross: bool, calibration: dict[str, float] | None) -> Column:
    """A cell frame's calibrated p_model (pm), as calibrate gives the rows' p_model."""
    if scorer_is_cross or calibration is None:
        return F.least(F.greatest(F.col("p_raw"), F.lit(weights.EPS)), F.lit(1 - weights.EPS))
    return sigmoid(F.lit(calibration["a"]) * F.col("relevance") + F.lit(calibration["b"]))


def calibrate(scored: DataFrame, scorer_is_cross: bool, cells: pd.DataFrame | None,
              frame: DataFrame | None = None) -> tuple[DataFrame, float, dict[str, float] | None]:
    """Calibrated rows, the base rate and the Platt fit. With the cells on the driver, base rate and
    fit come from them (no Spark pass) and the cells get pm, their calibrated p_model; else from the
    cells in Spark (`frame`, cell_frame's: one pass a Newton step over cells, not rows) or the rows."""
    fitted = None
    if cells is None and frame is not None:
        sums = frame.agg(exact_sum(F.col("c").cast("double")).alias("c"),
                         exact_sum(F.col("n").cast("double")).alias("n")).first()
        base_rate = float(np.clip(float(sums["c"] or 0.0) / max(float(sums["n"] or 0.0), 1.0), weights.EPS,
                                  1 - weights.EPS))
        if not scorer_is_cross:
            fitted = fit_calibration(frame, base_rate, rows=F.col("n"), clicks=F.col("c"))
    elif cells is None:
        base_rate = float(np.clip(scored.agg(F.avg("clicked")).first()[0], weights.EPS, 1 - weights.EPS))
    else:
        base_rate = cells_mod.base_rate(cells)
        if scorer_is_cross:
            cells["pm"] = weights.clip_prob(cells["p_raw"].to_numpy(dtype=np.float64))
        else:
            fitted = cells_mod.fit_platt(cells["relevance"].to_numpy(), cells["n"].to_numpy(),
                                         cells["c"].to_numpy(), base_rate)
            cells["pm"] = weights.sigmoid(fitted[0] * cells["relevance"].to_numpy() + fitted[1])
    joined, calibration = with_calibrated_probability(scored, scorer_is_cross, base_rate, fitted)
    return joined, base_rate, calibration


def noise_thresholds(df: DataFrame, p_col: str) -> tuple[float, float]:
    """Confident-learning thresholds (t0, t1): the mean self-confidence per labelled class
    (weights.confident_thresholds, as one aggregate)."""
    th = df.agg(exact_avg(F.when(F.col("clicked") == 0, 1 - F.col(p_col))).alias("t0"),
                exact_avg(F.when(F.col("clicked") == 1, F.col(p_col))).alias("t1")).first()
    return (float(th["t0"] if th["t0"] is not None else 0.5), float(th["t1"] if th["t1"] is not None else 0.5))


def max_loss(df: DataFrame) -> float:
    """The largest per-row BCE of p_model (clipped as udfs/weighting/weights.py clips it): the loss strategy's shift."""
    p = F.least(F.greatest(F.col("p_model"), F.lit(weights.EPS)), F.lit(1.0 - weights.EPS))
    loss = -(F.col("clicked") * F.log(p) + (1 - F.col("clicked")) * F.log(1 - p))
    return float(df.agg(F.max(loss)).first()[0])


@dataclass(frozen=True)
class WeightPass:
    """What weigh() computed: the weighted rows, the statistics the weights used (the run summary's),
    the wall time of each phase, and the frames it persisted, which the caller releases once the
    output is written (jobs.score.release: unpersisting a frame earlier makes Spark drop the caches
    built on it, and the next pass would recompute everything, BERT included)."""
    rows: DataFrame
    stats: dict[str, Any]
    timings_s: dict[str, float]
    persisted: tuple[DataFrame, ...]


class _PhaseClock:
    """Times the weighting phases, in order; each phase's Spark jobs carry its name (udfs/job_phase.py)."""

    def __init__(self, spark: SparkSession, phases: tuple[str, ...]) -> None:
        self.spark, self.phases = spark, list(phases)
        self.timings: dict[str, float] = {}
        self.mark = time.perf_counter()
        start_phase(spark, self.phases[0].replace("_", " "))

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.mark, 3)
        self.mark = now
        log.info("score: %s done in %.1fs", name.replace("_", " "), self.timings[name])
        following = self.phases[self.phases.index(name) + 1:]
        if following:
            start_phase(self.spark, following[0].replace("_", " "))


def weigh(scored: DataFrame, w: WeightingSettings, sampling: SamplingSettings, rows_valid: int,
          scorer_is_cross: bool, rows_without_session: int | None = None) -> WeightPass:
    """Scored rows (persisted) -> weighted rows: calibration, propensities, signals, raw weights,
    importance sampling, normalisation. If a phase fails, the frames persisted so far are released.
    rows_without_session: the valid rows with no session_id, where the caller counted them (else a pass
    counts them when the click context is read)."""
    persisted: list[DataFrame] = []
    try:
        return _weigh(scored, w, sampling, rows_valid, scorer_is_cross, persisted, rows_without_session)
    except BaseException:
        for frame in reversed(persisted):
            frame.unpersist()
        raise


def _weigh(scored: DataFrame, w: WeightingSettings, sampling: SamplingSettings, rows_valid: int,
           scorer_is_cross: bool, persisted: list[DataFrame], no_session: int | None = None) -> WeightPass:
    clock = _PhaseClock(scored.sparkSession, ("calibration", "propensity", "weights", "sampling_and_normalise"))
    stats: dict[str, Any] = {}
    if w.click_context:
        # the click context (udfs/weighting/slots.py): computed once, read by the cells and by p_click's join;
        # the score job adds it before persisting its rows (udfs/scoring/spark.score_rows), else here
        if CLICK_CONTEXT not in scored.columns:
            scored = with_click_context(scored, w.em_click_context_by).persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(scored)
        if no_session is None:
            no_session = scored.filter(F.col("session_id").isNull()).count()
        stats["click_context"] = {"levels": w.click_context, "by": w.em_click_context_by,
                                  "rows_without_session": no_session}
        if no_session:
            log.warning("weighting.em_click_context=%d: %d of %d rows have no session_id; they are read "
                        "with no click above them (the position-based model)", w.click_context,
                        no_session, rows_valid)
    elif w.click_context_unused():
        stats["click_context"] = {"levels": 0, "requested": w.em_click_context, "not_used": w.click_context_unused()}
        log.info("weighting.em_click_context=%d not used: %s", w.em_click_context, w.click_context_unused())
    frame = cell_frame(scored, w.click_context).persist(StorageLevel.MEMORY_AND_DISK)
    persisted.append(frame)
    # More rows than max_driver_cells may still be few cells (pairs repeat): count them first, so that a
    # log past the cap never ships max_driver_cells cells to the driver just to find it out.
    many = rows_valid > w.max_driver_cells and frame.count() > w.max_driver_cells
    cells = None if many else collect_cells(None, w.max_driver_cells, frame)
    stats["aggregates"] = "driver cells" if cells is not None else "spark passes"
    joined, base_rate, calibration = calibrate(scored, scorer_is_cross, cells, frame)
    stats["base_rate"] = base_rate
    stats["scorer_kind"] = "cross_encoder" if scorer_is_cross else "sentence_encoder"
    if calibration is not None:
        stats["calibration"] = calibration
    clock.done("calibration")
    calibrated_cells = None if cells is not None else frame.withColumn(
        "pm", calibrated_cell_probability(scorer_is_cross, calibration))
    propensity, stats["propensity_fit"], click_model = estimate_propensity(joined, w, cells, persisted,
                                                                           calibrated_cells)
    stats["propensity"] = propensity
    # Which P(click) confident learning trusts: the click model (position x the pair's leave-one-out
    # relevance from the log) when denoise is in use and EM ran, else the scorer's p_model.
    p_noise = "p_model"
    config = w.as_config()
    reads_p_click = "p_click" in strategies.reads(config)
    if reads_p_click and click_model is None:
        raise UserError(f"weighting.strategy={w.strategy} reads the click model's leave-one-out P(click), "
                        "which needs weighting.propensity_estimator=em and a log the EM can fit (clicks, "
                        "positions seen 20 times)")
    denoise_by_click_model = w.denoise_model == "click_model" and strategies.uses_click_model(config)
    if (reads_p_click or denoise_by_click_model) and click_model is not None:
        joined = with_click_probability(joined, click_model, joined.sparkSession)
        p_noise = "p_click" if denoise_by_click_model else "p_model"
    stats["denoise_probability"] = p_noise
    stats["pair_label"] = "clicks"
    per_pair = stats["propensity_fit"].get("buckets") == "query_title_pairs"
    if w.pair_label in ("click_model", "auto"):
        if click_model is not None and not per_pair:
            # Past em_max_pairs the EM's relevance is one value per p_model bin: a "label" that only
            # repeats the scorer's ranking and throws the pair's own clicks away.
            reason = (f"the log has more than weighting.em_max_pairs={w.em_max_pairs} distinct pairs, so the EM "
                      "fitted one relevance per p_model bin, not per pair")
            if w.pair_label == "click_model":
                raise UserError(f"weighting.pair_label=click_model: {reason}; raise em_max_pairs (the EM's cells "
                                "then come to the driver) or use weighting.pair_label=auto, which falls back to "
                                "the click rate")
            stats["pair_label_fallback"] = f"{reason}: the pair label is the click rate"
            log.warning("weighting.pair_label=auto: %s", stats["pair_label_fallback"])
        elif click_model is not None:
            joined = with_pair_relevance(joined, click_model, joined.sparkSession)
            stats["pair_label"] = "click_model"
            if w.em_within_query == "ranker":
                joined, stats["pair_label_within_query"] = with_ranker_order_within_query(
                    joined, w, cells, persisted, calibrated_cells)
        elif w.pair_label == "click_model":
            raise UserError("weighting.pair_label=click_model needs the EM click model, which could not be "
                            "fitted on this log (no clicks, or no position seen 20 times); "
                            "weighting.pair_label=auto falls back to the click rate")
        else:  # auto: a log too small or too sparse for the click model still trains, on its click rate
            stats["pair_label_fallback"] = ("the EM click model could not be fitted on this log (no clicks, "
                                            "no position seen 20 times, or propensity_estimator=ratio): "
                                            "the pair label is the click rate")
            log.warning("weighting.pair_label=auto: %s", stats["pair_label_fallback"])
    clock.done("propensity")
    on_driver = cells is not None and p_noise == "p_model"  # p_click is per row: a Spark pass
    thresholds = (cells_mod.noise_thresholds(cells["pm"], cells["n"], cells["c"]) if on_driver
                  else noise_thresholds(joined, p_noise))
    stats["noise_thresholds"] = {"t0": thresholds[0], "t1": thresholds[1]}
    fitted: dict[str, Any] = {"base_rate": base_rate, "noise_thresholds": thresholds}
    if any(s.name == "loss" for s in strategies.signals(config)):
        fitted["loss_shift"] = stats["loss_max"] = (cells_mod.max_loss(cells["pm"], cells["n"], cells["c"])
                                                    if cells is not None else max_loss(joined))
    joined = joined.drop(CLICK_CONTEXT)  # read by the click model only (a no-op without the click context)
    weighted = (with_signals(joined, w.strategy, w.formula_params(**fitted), propensity, p_noise)
                .persist(StorageLevel.MEMORY_AND_DISK))
    persisted.append(weighted)
    weighted.count()
    clock.done("weights")
    sampled, stats["sampling"] = importance_sample(weighted, sampling, rows_valid)
    stats["rows_sampled_out"] = stats["sampling"]["rows_sampled_out"]
    if sampled.is_cached:
        persisted.append(sampled)
    # Importance-sampled rows stand for 1/q rows each: that factor goes in before normalisation.
    # Uniform weights and no importance sampling (keep_prob 1 on every row): one level, 1.0, on every
    # valid row, known without a pass.
    known = ((np.array([1.0]), np.array([float(rows_valid)]))
             if strategies.is_uniform(config) and stats["sampling"]["keep_fraction"] is None else None)
    out, stats["scale"] = normalise(sampled, w, F.col("raw_weight") / F.col("keep_prob"), known)
    clock.done("sampling_and_normalise")
    return WeightPass(out, stats, clock.timings, tuple(persisted))


# ---------------------------------------------------------------- summaries

# The numeric output columns the run summary describes, where present (docs/data_contract.md lists them).
SUMMARISED_COLUMNS = ("relevance", "p_model", "loss", "info_gain", "propensity", "noise_score", "mlm_pll",
                      "p_click", "p_scorer_click", "raw_weight", "keep_prob")
WEIGHT_QUANTILES = [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0]
SIGNAL_QUANTILES = [0.0, 0.1, 0.5, 0.9, 1.0]


def output_summary(df: DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights' summary (count, mean, quantiles, effective sample size) and every importance
    signal's mean and quantiles plus the share of noise suspects, in one Spark pass."""
    present = [c for c in SUMMARISED_COLUMNS if c in df.columns]
    aggs = [F.count("*").alias("n"), F.avg("weight").alias("mean"), F.sum("weight").alias("sum"),
            F.sum(F.col("weight") ** 2).alias("sum_sq"),
            F.percentile_approx("weight", WEIGHT_QUANTILES, 10000).alias("q"),
            F.sum(F.when(~F.isnan("weight") & (F.col("weight") > 0), 1).otherwise(0)).alias("finite_positive")]
    aggs += [e for c in present for e in (F.avg(c).alias(f"{c}__mean"),
                                          F.percentile_approx(c, SIGNAL_QUANTILES, 10000).alias(f"{c}__q"))]
    if "suspect" in df.columns:
        aggs.append(F.avg(F.col("suspect").cast("double")).alias("suspect_fraction"))
    row = df.agg(*aggs).first()
    ess = row["sum"] ** 2 / row["sum_sq"] if row["sum_sq"] else 0.0
    weights_out = {"rows": row["n"], "mean": row["mean"], "quantiles": dict(zip(map(str, WEIGHT_QUANTILES), row["q"])),
                   "effective_sample_size": ess, "ess_fraction": ess / row["n"] if row["n"] else 0.0,
                   "finite_positive_rows": row["finite_positive"]}
    signals: dict[str, Any] = {
        c: {"mean": row[f"{c}__mean"], "quantiles": dict(zip(map(str, SIGNAL_QUANTILES), row[f"{c}__q"] or []))}
        for c in present}
    if "suspect" in df.columns:
        signals["suspect_fraction"] = row["suspect_fraction"]
    return weights_out, signals
