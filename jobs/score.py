"""clickweight score: validate -> score distinct pairs with BERT -> weight -> write atomically.

    spark-submit jobs/score.py --input clicks/ --output weighted/ [--conf conf/cluster.yaml]
    clickweight score --input clicks/ --output weighted/ --set weighting.strategy=none
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import config as config_mod
from jobs.common import (
    HadoopFS,
    absolute,
    add_common_args,
    commit_dir,
    dump_config_text,
    get_spark,
    log,
    print_json,
    setup_logging,
    sibling,
    versions,
)
from udfs import model_loader, schema, weights
from udfs import pairs as pairs_mod
from udfs.aggregates import exact_avg, exact_sum
from udfs.scoring import MLMSettings, ScoringSettings, make_mlm_udf, make_score_udf

WEIGHT_SIGNAL_SCHEMA = ("loss double, info_gain double, propensity double, noise_score double, suspect boolean, "
                        "raw_weight double")
MIN_ROWS_PER_POSITION = 20  # positions seen less often inherit the previous position's propensity


# ---------------------------------------------------------------- extract

def extract(spark: SparkSession, source: str, catalog: str | None) -> tuple[DataFrame, DataFrame | None]:
    """A Parquet path (file, folder, URI) or a catalog / Hive table name."""
    def read(src: str) -> DataFrame:
        looks_like_path = "/" in src or src.endswith(".parquet") or "://" in src
        return spark.read.parquet(absolute(src)) if looks_like_path else spark.table(src)

    return read(source), (read(catalog) if catalog else None)


# ---------------------------------------------------------------- transform

def attach_catalog(df: DataFrame, catalog: DataFrame) -> DataFrame:
    """Fill title from the (item_id, title) catalog; a title in the clickstream wins."""
    # Several catalog titles for one item: take the smallest, deterministically, rather than
    # multiplying impressions by a join.
    cat = catalog.groupBy("item_id").agg(F.min("title").alias("_catalog_title"))
    if "title" not in df.columns:
        df = df.withColumn("title", F.lit(None).cast("string"))
    return (df.join(cat, "item_id", "left")
              .withColumn("title", F.coalesce(F.col("title"), F.col("_catalog_title")))
              .drop("_catalog_title"))


def validate(df: DataFrame, cfg: dict[str, Any], has_catalog: bool) -> tuple[DataFrame, DataFrame]:
    schema.check_schema(df.schema, has_catalog=has_catalog)
    df = schema.conform(df)
    inp = cfg["input"]
    now = dt.datetime.now(dt.timezone.utc)
    reasons = schema.row_reasons(
        df, inp["max_title_chars"], inp["max_query_chars"], inp["max_position"],
        min_event_ts=inp["min_event_ts"],
        max_event_ts=(now + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
    )
    return schema.split_valid(df, reasons)


def score_pairs(valid: DataFrame, settings: ScoringSettings, partitions: int) -> DataFrame:
    """Each distinct (query, title) scored once: click logs repeat pairs heavily."""
    pairs = (valid.select(F.trim("query").alias("_q"), F.trim("title").alias("_t"))
                  .distinct()
                  # Partitioned by a derived bucket, not by (_q, _t): when `partitions` equals
                  # spark.sql.shuffle.partitions, Spark reuses distinct()'s (_q, _t) shuffle, and AQE
                  # may then coalesce it into fewer partitions, which changes the batches.
                  .withColumn("_b", F.xxhash64("_q", "_t"))
                  .repartition(partitions, "_b")
                  # A fixed order inside each partition fixes the Arrow batches and the padded
                  # micro-batches, so a pair's score does not depend on upstream partitioning,
                  # shuffle fetch order or task retries (dynamic padding changes the last bits).
                  .sortWithinPartitions("_q", "_t")
                  .drop("_b"))
    # Nondeterministic (it is, in the last bits, w.r.t. batch composition): otherwise Catalyst's
    # EliminateSorts drops the sort above, as a sort under a join through deterministic projections.
    udf = make_score_udf(settings).asNondeterministic()
    return pairs.withColumn("_s", udf("_q", "_t")).select("_q", "_t", "_s.*")


def fit_calibration(df: DataFrame, base_rate: float, iterations: int = 8) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a * relevance + b) fitted to the clicks by Newton steps (one aggregate each)."""
    a, b = 0.0, float(np.log(base_rate / (1 - base_rate)))
    for _ in range(iterations):
        p = 1 / (1 + F.exp(-(F.lit(a) * F.col("relevance") + F.lit(b))))
        w = p * (1 - p)
        row = df.select(
            exact_sum((p - F.col("clicked")) * F.col("relevance")).alias("g_a"),
            exact_sum(p - F.col("clicked")).alias("g_b"),
            exact_sum(w * F.col("relevance") ** 2).alias("h_aa"),
            exact_sum(w * F.col("relevance")).alias("h_ab"),
            exact_sum(w).alias("h_bb"),
        ).first()
        new_a, new_b = weights.platt_newton_step(row.asDict(), a, b)
        if abs(new_a - a) + abs(new_b - b) < 1e-7:
            a, b = new_a, new_b
            break
        a, b = new_a, new_b
    return a, b


@dataclass
class ClickModel:
    """The fitted position-based click model, for denoise's leave-one-out P(click) per row."""
    bucket: Column                 # the relevance bucket of a row (same expression the EM grouped by)
    theta: dict[int, float]        # EM theta per position (absolute scale: theta * gamma is P(click))
    evidence: pd.DataFrame         # per bucket: _bucket, r, n, m, gamma (see weights.em_bucket_evidence)
    prior_rows: float


def estimate_propensity(df: DataFrame, w: dict[str, Any]
                        ) -> tuple[dict[int, float], dict[str, Any], ClickModel | None]:
    """Examination propensity per position from the log: regression-EM (default) or the CTR ratio.
    With EM, also the fitted click model (None for the ratio estimator or a log without clicks)."""
    floor = w["propensity_min"]
    if w["propensity_estimator"] == "ratio":
        stats = (df.groupBy("position")
                   .agg(F.count("*").alias("n"), F.sum("clicked").alias("c"), exact_sum("p_model").alias("r"))
                   .toPandas())  # one row per position: small
        return weights.position_propensity(stats["position"].to_numpy(), stats["c"].to_numpy(),
                                           stats["r"].to_numpy(), stats["n"].to_numpy(), floor=floor,
                                           min_rows=MIN_ROWS_PER_POSITION), {"estimator": "ratio"}, None
    # Relevance buckets: (query, title) pairs when few enough (Wang et al.'s per-document gamma),
    # else p_model quantile bins (rows the scorer cannot tell apart share one relevance).
    pair = F.xxhash64(F.trim("query"), F.trim("title"))
    n_pairs = int(df.agg(F.approx_count_distinct(pair)).first()[0])
    if n_pairs <= w["em_max_pairs"]:
        bucket, kind = pair, "query_title_pairs"
    else:
        b = w["em_buckets"]
        cuts = sorted(set(df.approxQuantile("p_model", [i / b for i in range(1, b)], 1e-3)))
        bucket = sum((F.col("p_model") > F.lit(x)).cast("int") for x in cuts) if cuts else F.lit(0)
        kind = "p_model_quantiles"
    cells = (df.groupBy("position", bucket.alias("_bucket"))
               .agg(F.count("*").alias("n"), F.sum("clicked").alias("c"), exact_avg("p_model").alias("pm"))
               .toPandas()
               # groupBy output order varies run to run; EM, factorize and rank ties must not see that.
               .sort_values(["position", "_bucket"], kind="stable").reset_index(drop=True))
    per_pos = cells.groupby("position")["n"].sum()
    fitted = np.sort(per_pos.index[per_pos >= MIN_ROWS_PER_POSITION].to_numpy())
    info: dict[str, Any] = {"estimator": "em", "buckets": kind, "cells": len(cells)}
    theta_rel: dict[int, float] = {}
    click_model = None
    if len(fitted) and cells.loc[cells["position"].isin(fitted), "c"].sum() > 0:
        cells = cells[cells["position"].isin(fitted)]
        pos_idx = np.searchsorted(fitted, cells["position"].to_numpy())
        bucket_idx, uniques = pd.factorize(cells["_bucket"])
        group, prior = None, 0.0
        if kind == "query_title_pairs":
            # Regression step: a pair's relevance is shrunk toward that of pairs the scorer rates alike
            # (same p_model quantile bin), so pairs seen once do not flatten the curve.
            pm = cells.groupby(bucket_idx)["pm"].first().sort_index()
            group = pd.qcut(pm.rank(method="first"), min(w["em_buckets"], len(pm)), labels=False).to_numpy()
            prior = w["em_prior_rows"]
        theta, gamma, iters = weights.propensity_em(pos_idx, bucket_idx, cells["n"].to_numpy(), cells["c"].to_numpy(),
                                                len(fitted), len(uniques), bucket_group=group, prior_rows=prior)
        theta_rel = weights.propensity_from_em(fitted, theta, floor)
        info.update(n_buckets=int(len(uniques)), iterations=iters)
        r, n, m = weights.em_bucket_evidence(pos_idx, bucket_idx, cells["n"].to_numpy(), cells["c"].to_numpy(),
                                             theta, gamma, len(uniques), bucket_group=group, prior_rows=prior)
        evidence = pd.DataFrame({"_bucket": np.asarray(uniques).astype(np.int64), "_r": r, "_n": n, "_m": m,
                                 "_gamma": gamma})
        theta_abs = {int(k): float(t) for k, t in zip(fitted, theta)}
        click_model = ClickModel(bucket, _carry_forward(per_pos.index, theta_abs, float(theta[0])), evidence, prior)
    return _carry_forward(per_pos.index, theta_rel, 1.0), info, click_model


def _carry_forward(positions, fitted: dict[int, float], first: float) -> dict[int, float]:
    """Every seen position gets its fitted value, or the previous position's when too rare to fit."""
    out: dict[int, float] = {}
    prev = first
    for k in sorted(int(x) for x in positions):
        prev = fitted.get(k, prev)
        out[k] = prev
    return out


def with_click_probability(df: DataFrame, cm: ClickModel, spark_session: SparkSession) -> DataFrame:
    """Adds p_click: the row's leave-one-out P(click) = theta_k * gamma_-i (weights.click_model_probability,
    as column expressions). Rows whose bucket the EM did not see (positions too rare to fit) keep p_model."""
    ev = F.broadcast(spark_session.createDataFrame(cm.evidence))
    theta = F.create_map(*[F.lit(x) for k, t in sorted(cm.theta.items()) for x in (k, t)])
    th, ga = F.col("_theta"), F.col("_gamma")
    eps = F.lit(weights.EPS)
    own = F.when(F.col("clicked") == 1, F.lit(1.0)).otherwise((1 - th) * ga / F.greatest(1 - th * ga, eps))
    a = F.lit(float(cm.prior_rows))
    denom = F.col("_n") - 1 + a
    loo = F.when(denom > weights.EPS, (F.col("_r") - own + a * F.col("_m")) / denom).otherwise(F.col("_m"))
    p = th * F.least(F.greatest(loo, F.lit(weights.EPS)), F.lit(1 - weights.EPS))
    p = F.least(F.greatest(p, F.lit(weights.EPS)), F.lit(1 - weights.EPS))
    return (df.withColumn("_bucket", cm.bucket).join(ev, "_bucket", "left")
              .withColumn("_theta", F.element_at(theta, F.col("position")))
              .withColumn("p_click", F.when(F.col("_gamma").isNotNull() & F.col("_theta").isNotNull(), p)
                                      .otherwise(F.col("p_model")))
              .drop("_bucket", "_r", "_n", "_m", "_gamma", "_theta"))


def make_weight_udf(strategy: str, params: dict[str, Any], propensity: dict[int, float]):
    from pyspark.sql.functions import pandas_udf

    floor = params["propensity_min"]
    t0, t1 = params["noise_thresholds"]

    @pandas_udf(WEIGHT_SIGNAL_SCHEMA)
    def weigh(clicked: pd.Series, added_to_cart: pd.Series, purchased: pd.Series, dwell_ms: pd.Series,
              position: pd.Series, relevance: pd.Series, p_model: pd.Series, mlm_pll: pd.Series,
              p_noise: pd.Series) -> pd.DataFrame:
        cols = {
            "clicked": clicked.to_numpy(dtype=np.float64),
            "added_to_cart": added_to_cart.to_numpy(dtype=np.float64, na_value=0.0),
            "purchased": purchased.to_numpy(dtype=np.float64, na_value=0.0),
            "dwell_ms": dwell_ms.to_numpy(dtype=np.float64, na_value=0.0),
            "relevance": relevance.to_numpy(dtype=np.float64),
            "p_model": p_model.to_numpy(dtype=np.float64),
            "propensity": position.map(propensity).fillna(floor).to_numpy(dtype=np.float64),
            "mlm_pll": mlm_pll.to_numpy(dtype=np.float64, na_value=np.nan),
        }
        p_label_model = p_noise.to_numpy(dtype=np.float64)  # p_click (click model) or p_model
        cols["noise_score"], cols["suspect"] = weights.label_noise(p_label_model, cols["clicked"], t0, t1)
        return pd.DataFrame({
            "loss": weights.bce(cols["p_model"], cols["clicked"]),
            "info_gain": weights.information_gain(cols["p_model"], params["base_rate"]),
            "propensity": cols["propensity"],
            "noise_score": cols["noise_score"],
            "suspect": cols["suspect"],
            "raw_weight": weights.raw_weights(strategy, cols, params),
        })

    return weigh


def normalise(df: DataFrame, w: dict[str, Any], raw: Column | None = None) -> tuple[DataFrame, float]:
    """weight = clip(s * raw, w_min, w_max) with s chosen so the global mean is 1.

    raw defaults to raw_weight; with importance sampling it is raw_weight / keep_prob.
    """
    raw = F.col("raw_weight") if raw is None else raw
    if not w["normalize"]:
        return df.withColumn("weight", F.least(F.greatest(raw, F.lit(w["w_min"])), F.lit(w["w_max"]))), 1.0
    raw_mean = df.agg(exact_avg(raw)).first()[0]

    def mean_of_clipped(s: float) -> float:
        clipped = F.least(F.greatest(raw * F.lit(s), F.lit(w["w_min"])), F.lit(w["w_max"]))
        return float(df.agg(exact_avg(clipped)).first()[0])

    scale = weights.normalise_scale(mean_of_clipped, w["w_min"], w["w_max"], raw_mean)
    weight = F.least(F.greatest(raw * F.lit(scale), F.lit(w["w_min"])), F.lit(w["w_max"]))
    return df.withColumn("weight", weight), scale


def importance_sample(df: DataFrame, sampling: dict[str, Any], rows: int) -> tuple[DataFrame, dict[str, Any]]:
    """Keep row i with q_i = min(1, c * raw_weight_i), mean q = keep_fraction (He et al. 2014).

    The keep decision is pmod(xxhash64(event_id, seed), 2^30) / 2^30 < q_i: deterministic per row,
    so a rerun keeps the same rows. Kept rows carry keep_prob = q_i; the caller weights them 1/q_i.
    Returns the kept rows (persisted) and the sampling statistics.
    """
    kf, seed = sampling["keep_fraction"], int(sampling["seed"])
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
        raise ValueError(f"sampling.keep_fraction={kf} kept no row of {rows}: raise it")
    return kept, {"keep_fraction": kf, "seed": seed, "c": c, "expected_kept": kf * rows, "rows_kept": n_kept,
                  "realised_fraction": n_kept / rows, "rows_sampled_out": rows - n_kept}


def scorer_id(path: str) -> str:
    """Folder name plus content fingerprint: names the scorer in provenance."""
    return f"{path.rstrip('/').rsplit('/', 1)[-1]}@{model_loader.model_fingerprint(path)}"


def needs_mlm(w: dict[str, Any]) -> bool:
    return w["strategy"] == "mlm_quality" or (
        w["strategy"] == "combined" and float(w["combined"].get("mlm_quality", 0.0)) != 0.0)


def uses_denoise(w: dict[str, Any]) -> bool:
    return w["strategy"] == "denoise" or (
        w["strategy"] == "combined" and float(w["combined"].get("denoise", 0.0)) != 0.0)


def mlm_settings(cfg: dict[str, Any]) -> MLMSettings:
    """The masked LM for mlm_quality; refuses a folder without an MLM head before any work."""
    path = model_loader.resolve_model_path(cfg["weighting"]["mlm_model"] or cfg["scorer"]["path"]
                                           or cfg["model"]["path"])
    if not model_loader.has_mlm_head(path):
        raise ValueError(
            f"weighting.strategy={cfg['weighting']['strategy']} needs a masked-LM checkpoint (pseudo-log-"
            f"likelihood of titles), but {path} has no MLM head (config.json architectures lack *ForMaskedLM "
            "and the weights have no cls.predictions.*; the packaged all-MiniLM-L6-v2 is a bare BertModel): "
            "set weighting.mlm_model to a folder with a *ForMaskedLM checkpoint")
    sc = cfg["scorer"]
    return MLMSettings(path=path, batch_size=sc["batch_size"], max_length=sc["max_length"],
                       torch_threads=sc["torch_threads"], device=sc["device"])


def scoring_settings(cfg: dict[str, Any]) -> ScoringSettings:
    trainee = model_loader.resolve_model_path(cfg["model"]["path"])
    scorer = model_loader.resolve_model_path(cfg["scorer"]["path"] or cfg["model"]["path"])
    sc = cfg["scorer"]
    return ScoringSettings(scorer_path=scorer, trainee_path=trainee, batch_size=sc["batch_size"],
                           scorer_max_length=sc["max_length"], train_max_length=cfg["model"]["max_length"],
                           torch_threads=sc["torch_threads"], device=sc["device"], precision=sc["precision"])


def transform(df: DataFrame, cfg: dict[str, Any], run_id: str, catalog: DataFrame | None = None,
              ) -> tuple[DataFrame, DataFrame, dict[str, Any]]:
    """Validated, scored, weighted rows; quarantined rows; and the statistics the weights used.

    The returned scored frame is persisted; the caller unpersists it after writing.
    """
    if catalog is not None:
        df = attach_catalog(df, catalog)
    valid, quarantined = validate(df, cfg, has_catalog=catalog is not None)
    settings = scoring_settings(cfg)
    partitions = int(cfg["spark"]["conf"].get("spark.sql.shuffle.partitions", 8))
    stats: dict[str, Any] = {"scorer_model": scorer_id(settings.scorer_path)}
    timings = stats["timings_s"] = {}  # wall time per phase (where a run's time goes)
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    scored_pairs = score_pairs(valid, settings, partitions)
    w = cfg["weighting"]
    if needs_mlm(w):
        # Text quality depends on the title only: each distinct title is scored once per job.
        mlm = mlm_settings(cfg)
        stats["mlm_model"] = scorer_id(mlm.path)
        titles = (valid.select(F.trim("title").alias("_t")).distinct()
                       .withColumn("_b", F.xxhash64("_t")).repartition(partitions, "_b")  # as in score_pairs
                       .sortWithinPartitions("_t").drop("_b"))
        pll = titles.withColumn("_m", make_mlm_udf(mlm).asNondeterministic()("_t")).select("_t", "_m.mlm_pll")
        scored_pairs = scored_pairs.join(pll, "_t", "inner")
    joined = (valid.withColumn("_q", F.trim("query")).withColumn("_t", F.trim("title"))
                   .join(scored_pairs, ["_q", "_t"], "inner").drop("_q", "_t")
                   .persist(StorageLevel.MEMORY_AND_DISK))
    persisted = joined  # later steps derive new frames from it; this is the one to unpersist
    stats["rows_valid"] = joined.count()
    phase("validate_and_score_pairs")
    if stats["rows_valid"] == 0:
        raise ValueError("no valid rows to score: every input row was quarantined (see _quarantine)")
    base_rate = float(joined.agg(F.avg("clicked")).first()[0])
    base_rate = float(np.clip(base_rate, weights.EPS, 1 - weights.EPS))
    stats["base_rate"] = base_rate

    cross = model_loader.is_cross_encoder(settings.scorer_path)
    stats["scorer_kind"] = "cross_encoder" if cross else "sentence_encoder"
    if not cross:
        a, b = fit_calibration(joined, base_rate)
        stats["calibration"] = {"a": a, "b": b}
        joined = (joined.withColumn("prior_logit", F.lit(a) * F.col("relevance") + F.lit(b))
                        .withColumn("p_model", 1 / (1 + F.exp(-F.col("prior_logit")))))
    else:  # the trainee's prior is the scorer's own logit
        p = F.least(F.greatest(F.col("p_model"), F.lit(weights.EPS)), F.lit(1 - weights.EPS))
        joined = joined.withColumn("prior_logit", F.log(p / (1 - p)))
    phase("calibration")
    propensity, stats["propensity_fit"], click_model = estimate_propensity(joined, w)
    stats["propensity"] = propensity
    # Which P(click) confident learning trusts: the click model (position x the pair's leave-one-out
    # relevance from the log) when denoise is in use and EM ran, else the scorer's p_model.
    p_noise = "p_model"
    if w["denoise_model"] == "click_model" and uses_denoise(w) and click_model is not None:
        joined = with_click_probability(joined, click_model, joined.sparkSession)
        p_noise = "p_click"
    stats["denoise_probability"] = p_noise
    phase("propensity")
    # Confident-learning thresholds: the model's mean self-confidence per labelled class.
    th = joined.agg(exact_avg(F.when(F.col("clicked") == 0, 1 - F.col(p_noise))).alias("t0"),
                    exact_avg(F.when(F.col("clicked") == 1, F.col(p_noise))).alias("t1")).first()
    thresholds = (float(th["t0"] if th["t0"] is not None else 0.5), float(th["t1"] if th["t1"] is not None else 0.5))
    stats["noise_thresholds"] = {"t0": thresholds[0], "t1": thresholds[1]}

    params = {**w, "base_rate": base_rate, "noise_thresholds": thresholds}
    weigh = make_weight_udf(w["strategy"], params, propensity)
    mlm_col = "mlm_pll" if "mlm_pll" in joined.columns else F.lit(None).cast("double")
    signals = weigh("clicked", "added_to_cart", "purchased", "dwell_ms", "position", "relevance", "p_model",
                    mlm_col, p_noise)
    weighted = (joined.withColumn("_w", signals).select("*", "_w.*").drop("_w", "p_click")
                      .persist(StorageLevel.MEMORY_AND_DISK))
    weighted.count()
    persisted.unpersist()
    phase("weights")
    sampled, stats["sampling"] = importance_sample(weighted, cfg["sampling"], stats["rows_valid"])
    stats["rows_sampled_out"] = stats["sampling"]["rows_sampled_out"]
    if sampled is not weighted and stats["sampling"]["keep_fraction"] is not None:
        weighted.unpersist()
    weighted = sampled
    # Importance-sampled rows stand for 1/q rows each: that factor goes in before normalisation.
    weighted, scale = normalise(weighted, w, F.col("raw_weight") / F.col("keep_prob"))
    stats["scale"] = scale
    phase("sampling_and_normalise")
    # Stable per-query bucket: training holds out whole queries (bucket < eval_fraction * 1000).
    bucket = F.pmod(F.xxhash64(F.lower(F.trim("query"))), F.lit(1000)).cast("int")
    out = (weighted.withColumn("event_date", F.to_date("event_ts"))
                   .withColumn("query_bucket", bucket)
                   .withColumn("scorer_model", F.lit(stats["scorer_model"]))
                   .withColumn("config_hash", F.lit(config_mod.config_hash(cfg)))
                   .withColumn("run_id", F.lit(run_id)))
    quarantined = quarantined.withColumn("run_id", F.lit(run_id))
    return out, quarantined, stats


# ---------------------------------------------------------------- load

def weight_summary(df: DataFrame) -> dict[str, Any]:
    qs = [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0]
    row = df.agg(
        F.count("*").alias("n"), F.avg("weight").alias("mean"), F.sum("weight").alias("sum"),
        F.sum(F.col("weight") ** 2).alias("sum_sq"),
        F.percentile_approx("weight", qs, 10000).alias("q"),
        F.sum(F.when(~F.isnan("weight") & (F.col("weight") > 0), 1).otherwise(0)).alias("finite_positive"),
    ).first()
    ess = row["sum"] ** 2 / row["sum_sq"] if row["sum_sq"] else 0.0
    return {"rows": row["n"], "mean": row["mean"], "quantiles": dict(zip(map(str, qs), row["q"])),
            "effective_sample_size": ess, "ess_fraction": ess / row["n"] if row["n"] else 0.0,
            "finite_positive_rows": row["finite_positive"]}


SIGNAL_COLUMNS = ("relevance", "p_model", "loss", "info_gain", "propensity", "noise_score", "mlm_pll",
                  "raw_weight", "keep_prob")


def signal_summary(df: DataFrame) -> dict[str, Any]:
    """Mean and quantiles of every importance signal written, plus the share of noise suspects (one job)."""
    qs = [0.0, 0.1, 0.5, 0.9, 1.0]
    present = [c for c in SIGNAL_COLUMNS if c in df.columns]
    aggs = [e for c in present for e in (F.avg(c).alias(f"{c}__mean"),
                                         F.percentile_approx(c, qs, 10000).alias(f"{c}__q"))]
    if "suspect" in df.columns:
        aggs.append(F.avg(F.col("suspect").cast("double")).alias("suspect_fraction"))
    row = df.agg(*aggs).first()
    out: dict[str, Any] = {c: {"mean": row[f"{c}__mean"], "quantiles": dict(zip(map(str, qs), row[f"{c}__q"] or []))}
                           for c in present}
    if "suspect" in df.columns:
        out["suspect_fraction"] = row["suspect_fraction"]
    return out


def parquet_layout(path: str) -> dict[str, int]:
    """Row groups and rows of the written data files, from their footers (no data read)."""
    import pyarrow.parquet as pq

    groups = rows = files = 0
    for f in Path(path).glob("event_date=*/*.parquet"):
        meta = pq.ParquetFile(f).metadata
        files += 1
        groups += meta.num_row_groups
        rows += meta.num_rows
    return {"files": files, "row_groups": groups, "rows": rows}


def write_pairs(scored: DataFrame, path: str, files: int) -> dict[str, Any]:
    """The compacted training table (udfs/pairs.py) in `files` Parquet files; its totals."""
    pairs = pairs_mod.compact_pairs(scored).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = pairs_mod.pair_totals(pairs)
        (pairs_mod.with_pair_weight(pairs, totals["mean_weight_sum"] or 1.0)
              .repartition(files, F.xxhash64("query", "title")).sortWithinPartitions("query", "title")
              .write.mode("overwrite").parquet(path))
    finally:
        pairs.unpersist()
    return totals


def load(scored: DataFrame, quarantined: DataFrame, output: str, cfg: dict[str, Any],
         run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Write into a staging folder beside `output`, verify, then swap it into place."""
    spark = scored.sparkSession
    t0 = time.perf_counter()
    output = absolute(output)
    fs = HadoopFS(spark, output)
    staged = sibling(output, "tmp", run_id)
    fs.delete(staged)
    ranks = cfg["train"]["num_processes"]
    files_per_date = cfg["output"]["files_per_date"] or 2 * ranks
    (scored.repartition(files_per_date, "event_id")
           .sortWithinPartitions("event_date", "event_id")
           .write.mode("overwrite").partitionBy("event_date").parquet(staged))
    quarantined.repartition(1).write.mode("overwrite").parquet(f"{staged}/_quarantine")
    pair_files = ranks * cfg["output"]["min_row_groups_per_rank"]
    summary["pairs"] = write_pairs(scored, f"{staged}/{schema.PAIRS_DIR}", pair_files)
    timings = summary.setdefault("timings_s", {})
    timings["write"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()

    written = spark.read.parquet(staged)
    summary["rows_out"] = written.count()
    # One pass over the written quarantine: per-reason counts (few distinct reasons) and their total.
    summary["quarantine_reasons"] = {
        r["reason"]: r["count"]
        for r in spark.read.parquet(f"{staged}/_quarantine").groupBy("reason").count().collect()
    }
    summary["rows_quarantined"] = sum(summary["quarantine_reasons"].values())
    summary["weights"] = weight_summary(written)
    summary["signals"] = signal_summary(written)
    if "://" not in staged or staged.startswith("file:"):
        summary["layout"] = parquet_layout(staged.replace("file:", ""))
        need = ranks * cfg["output"]["min_row_groups_per_rank"]
        if summary["layout"]["row_groups"] < need:
            log.warning("only %d row groups for %d training ranks (want >= %d): raise output.files_per_date",
                        summary["layout"]["row_groups"], ranks, need)
    sampled_out = summary.get("rows_sampled_out", 0)
    summary["pairs"]["compaction_ratio"] = summary["rows_out"] / max(1, summary["pairs"]["pairs"])
    if summary["pairs"]["impressions"] != summary["rows_out"]:
        fs.delete(staged)
        raise RuntimeError(f"pair table holds {summary['pairs']['impressions']} impressions but the row table "
                           f"{summary['rows_out']} rows; nothing was committed")
    if summary["rows_in"] != summary["rows_out"] + summary["rows_quarantined"] + sampled_out:
        fs.delete(staged)
        raise RuntimeError(
            f"counts do not reconcile: in={summary['rows_in']} out={summary['rows_out']} "
            f"quarantined={summary['rows_quarantined']} sampled_out={sampled_out}; nothing was committed")
    timings["verify"] = round(time.perf_counter() - t0, 3)
    fs.write_text(f"{staged}/_config.yaml", dump_config_text(cfg))
    fs.write_text(f"{staged}/_summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    commit_dir(fs, staged, output, run_id)
    return summary


# ---------------------------------------------------------------- run

def run_score(spark: SparkSession, source: str, output: str, cfg: dict[str, Any]) -> dict[str, Any]:
    run_id = cfg["run_id"] or config_mod.new_run_id()
    cfg = {**cfg, "run_id": run_id}
    t0 = time.time()
    if needs_mlm(cfg["weighting"]):
        mlm_settings(cfg)  # refuse a checkpoint without an MLM head before any Spark work
    df, catalog = extract(spark, source, cfg["input"]["catalog"])
    settings = scoring_settings(cfg)
    rows_in = df.count()
    scored, quarantined, stats = transform(df, cfg, run_id, catalog)
    summary = {
        "run_id": run_id, "input": source, "output": output, "rows_in": rows_in,
        "strategy": cfg["weighting"]["strategy"], "config_hash": config_mod.config_hash(cfg),
        "scorer_path": settings.scorer_path, "trainee_tokenizer": settings.trainee_path,
        "versions": versions(), **stats,
    }
    try:
        summary = load(scored, quarantined, output, cfg, run_id, summary)
    finally:
        scored.unpersist()
    summary["seconds"] = round(time.time() - t0, 2)
    log.info("score: in=%d out=%d quarantined=%d in %.1fs -> %s", summary["rows_in"], summary["rows_out"],
             summary["rows_quarantined"], summary["seconds"], output)
    return summary


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="clickweight score", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="clickstream Parquet path or table name")
    p.add_argument("--output", required=True, help="output folder (replaced atomically)")
    p.add_argument("--catalog", help="(item_id, title) Parquet path or table")
    add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.catalog:
        overrides.append(f"input.catalog={args.catalog}")
    cfg = config_mod.load_config(args.conf, overrides)
    spark = get_spark(cfg)
    summary = run_score(spark, args.input, args.output, cfg)
    print_json({k: summary[k] for k in ("output", "rows_in", "rows_out", "rows_quarantined", "rows_sampled_out",
                                        "strategy", "seconds")} | {"weights": summary["weights"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
