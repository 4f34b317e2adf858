"""Each Spark-side weighting computation gives the numbers of its pure numpy reference on the same data
(udfs/weighting/spark.py against udfs/weighting/weights.py): the job's maths is tested, not only its wiring."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.config import load_config
from udfs.weighting import weights as W
from udfs.weighting.cells import MIN_ROWS_PER_POSITION
from udfs.weighting.pair_relevance import SharedParameters, click_model_probability, click_probability
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.spark import (
    collect_cells,
    estimate_propensity,
    noise_thresholds,
    normalise,
    with_click_probability,
)

# max_driver_cells=0: the Spark path (one pass per step); tests that want the driver path raise it
PARAMS = WeightingSettings.from_config(load_config()).but(
    normalize=True, w_min=0.1, w_max=10.0, propensity_estimator="em", propensity_min=0.05, max_driver_cells=0,
    em_max_pairs=10_000, em_buckets=4, em_prior_rows=5.0, em_click_context=0)  # no sessions in these logs


@pytest.fixture(scope="module")
def log(spark):
    """A position-biased click log: 40 pairs x 5 positions x 6 impressions, heavy-tailed raw weights."""
    rng = np.random.default_rng(3)
    n = 40 * 5 * 6
    pair = np.repeat(np.arange(40), 30)
    position = np.tile(np.repeat(np.arange(1, 6), 6), 40)
    gamma = rng.uniform(0.05, 0.9, 40)[pair]
    clicked = (rng.random(n) < gamma / position ** 0.8).astype(np.int32)
    frame = pd.DataFrame({"query": [f"q{p // 4}" for p in pair], "title": [f"t{p}" for p in pair],
                          "position": position.astype(np.int32), "clicked": clicked,
                          "p_model": np.clip(gamma + rng.normal(0, 0.1, n), 0.02, 0.98),
                          "raw_weight": rng.lognormal(0.0, 1.5, n)})
    return frame, spark.createDataFrame(frame)


def _evidence(cm) -> pd.DataFrame:
    """The click model's per-pair evidence on the driver (the Spark EM's is a Spark frame), by pair."""
    ev = cm.evidence if isinstance(cm.evidence, pd.DataFrame) else cm.evidence.toPandas()
    return ev.sort_values("_bucket").reset_index(drop=True)


def test_normalise_matches_the_numpy_clip_and_scale(log):
    frame, df = log
    out, scale = normalise(df, PARAMS)
    got = out.toPandas()["weight"].to_numpy()
    expected = W.normalised(frame["raw_weight"].to_numpy(), scale, 0.1, 10.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got.mean() == pytest.approx(1.0, abs=1e-8) and got.max() == 10.0  # the clip binds, the mean holds


def test_noise_thresholds_match_confident_thresholds(log):
    frame, df = log
    assert noise_thresholds(df, "p_model") == pytest.approx(
        W.confident_thresholds(frame["p_model"].to_numpy(), frame["clicked"].to_numpy()), rel=1e-12)


def _click_model_reference(rows: pd.DataFrame, cm) -> np.ndarray:
    """pair_relevance.click_model_probability on the rows (with _bucket) and the fitted model's shared
    parameters: theta of the fitted positions, the prior's m per pair (its group's), the noise floor."""
    ev = _evidence(cm)
    per_pos = rows.groupby("position").size()
    fitted = np.sort(per_pos.index[per_pos >= MIN_ROWS_PER_POSITION].to_numpy())
    cells = (rows[rows["position"].isin(fitted)].groupby(["_bucket", "position"])["clicked"]
                 .agg(n="size", c="sum").reset_index())   # a pair's cells by position, as both paths hold them
    pair = np.searchsorted(ev["_bucket"].to_numpy(), cells["_bucket"].to_numpy())
    group, m = pd.factorize(ev["_m"]) if cm.prior_rows > 0 else (None, np.zeros(0))
    shared = SharedParameters(np.array([cm.theta[int(x)] for x in fitted]), cm.eps, np.asarray(m, dtype=float),
                              cm.prior_rows, float(ev["_r"].sum() / ev["_n"].sum()))
    cell_of = {key: i for i, key in enumerate(zip(cells["_bucket"], cells["position"]))}
    row_cell = np.array([cell_of.get(key, -1) for key in zip(rows["_bucket"], rows["position"])])
    seen = rows["_bucket"].isin(ev["_bucket"]).to_numpy()
    row_pair = np.searchsorted(ev["_bucket"].to_numpy(), rows["_bucket"].to_numpy()).clip(0, len(ev) - 1)
    p = click_model_probability(rows["position"].map(cm.theta).to_numpy(), row_pair, row_cell,
                                rows["clicked"].to_numpy(), np.searchsorted(fitted, cells["position"].to_numpy()),
                                pair, cells["n"].to_numpy(float), cells["c"].to_numpy(float), len(ev), group, shared)
    return np.where(seen, p, rows["p_model"].to_numpy())


@pytest.mark.parametrize("path, prior_rows", [("spark", 5.0), ("driver", 5.0), ("spark", 0.0), ("driver", 0.0)])
def test_leave_one_out_click_probability_matches_click_model_probability(log, spark, path, prior_rows):
    """p_click on both paths (cells on the driver; past max_driver_cells, held-out relevance solved and
    joined in Spark) is the numpy reference's exact leave-one-out P(click): also for rows at a position
    too rare to fit (the pair's fitted gamma, nothing taken out), a pair seen only there (p_model) and,
    without a prior, a pair's only impression (the pooled relevance)."""
    frame, _ = log
    extra = pd.DataFrame({"query": ["q0", "q0", "q1", "q1", "q2", "q9", "q9"],
                          "title": ["t0", "t1", "t4", "t5", "t8", "rare", "solo"],
                          "position": np.array([6, 6, 6, 6, 6, 6, 1], dtype=np.int32),
                          "clicked": np.array([1, 0, 1, 1, 0, 1, 1], dtype=np.int32),
                          "p_model": 0.3, "raw_weight": 1.0})
    rows = pd.concat([frame, extra], ignore_index=True)
    df = spark.createDataFrame(rows)
    settings = PARAMS.but(em_prior_rows=prior_rows)
    cells = None
    if path == "driver":
        cells = collect_cells(df.withColumn("relevance", df["p_model"]), 10_000)
        cells["pm"] = cells["p_raw"]
    _, info, cm = estimate_propensity(df, settings, cells)
    assert info["buckets"] == "query_title_pairs" and cm is not None and cm.theta[6] == cm.theta[5]  # carried
    got = with_click_probability(df, cm, spark)
    # the joins keep the rows' columns and order
    assert got.columns == rows.columns.tolist() + ["p_click", "p_scorer_click"]
    got = got.withColumn("_bucket", cm.bucket).toPandas()
    np.testing.assert_allclose(got["p_click"].to_numpy(), _click_model_reference(got, cm), rtol=1e-6, atol=1e-9)
    # The scorer's P(click) at the row's position: theta_k x its pair's group relevance (the prior's m), or
    # p_model without a prior or outside the fit.
    ev = _evidence(cm).set_index("_bucket")
    fitted = got["_bucket"].isin(ev.index).to_numpy()
    m = ev["_m"].reindex(got["_bucket"]).to_numpy()
    scorer = click_probability(got["position"].map(cm.theta).to_numpy(), np.nan_to_num(m), cm.eps)
    expected = np.where(fitted & (prior_rows > 0), scorer, got["p_model"].to_numpy())
    np.testing.assert_allclose(got["p_scorer_click"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
    # And it is leave-one-out: a pair's click and skip at one position get different probabilities.
    fit = got[got["position"] < 6]
    assert fit.groupby(["query", "title", "position"])["p_click"].nunique().max() == 2
    rare = got[got["position"] == 6].set_index("title")
    gamma = _evidence(cm).set_index("_bucket")["_gamma"]
    for title in ("t0", "t1", "t4"):   # outside the fit: theta x the pair's gamma, click or not
        expected = click_probability(cm.theta[6], gamma[rare.loc[title, "_bucket"]], cm.eps)
        assert rare.loc[title, "p_click"] == pytest.approx(expected, rel=1e-9)
    assert rare.loc["rare", "p_click"] == 0.3
    if prior_rows == 0.0:
        ev = _evidence(cm)
        solo = got[got["title"] == "solo"]["p_click"].iloc[0]
        assert solo == pytest.approx(cm.eps + (1 - cm.eps) * cm.theta[1] * ev["_r"].sum() / ev["_n"].sum(), rel=1e-6)



def test_the_scorers_position_matched_probability_needs_the_scorer_in_the_prior(log, spark):
    """em_prior_groups=position pools relevance by the logging ranker's positions, not by the scorer: its m
    is no prediction of the scorer's, so p_scorer_click keeps p_model there."""
    _, df = log
    _, info, cm = estimate_propensity(df, PARAMS.but(em_prior_rows=5.0, em_prior_groups="position"))
    assert cm is not None and cm.prior_rows > 0 and not cm.scorer_prior
    got = with_click_probability(df, cm, spark).toPandas()
    np.testing.assert_array_equal(got["p_scorer_click"].to_numpy(), got["p_model"].to_numpy())

def test_driver_cells_give_the_spark_passes_statistics(log):
    """The score job's driver path (one aggregate to (position, pair) cells, then numpy) and its Spark
    path (one pass per Newton step, EM aggregate, thresholds, max loss) agree."""
    from udfs.weighting import cells as C
    from udfs.weighting.spark import calibrate, cell_frame, collect_cells, max_loss

    frame, df = log
    # A cosine-like score, constant per pair as the scorer's is (p_model is replaced by the calibration).
    pair_rel = frame.groupby("title")["p_model"].transform("first") * 2 - 1
    scored = df.sparkSession.createDataFrame(frame.assign(relevance=pair_rel, p_model=pair_rel))
    cells = collect_cells(scored, 10_000)
    assert cells is not None and len(cells) == 40 * 5 and cells["n"].sum() == len(frame)
    assert collect_cells(scored, 199) is None and collect_cells(scored, 0) is None  # too many: Spark passes
    spark_rows, spark_base, spark_cal = calibrate(scored, False, None)
    driver_rows, driver_base, driver_cal = calibrate(scored, False, cells)
    assert driver_base == pytest.approx(spark_base, rel=1e-12)
    assert driver_cal["a"] == pytest.approx(spark_cal["a"], rel=1e-6) and driver_cal["a"] > 0
    assert driver_cal["b"] == pytest.approx(spark_cal["b"], rel=1e-6)
    # Past max_driver_cells the score job fits on the cells kept in Spark: one row a cell, n and c.
    _, frame_base, frame_cal = calibrate(scored, False, None, cell_frame(scored))
    assert frame_base == pytest.approx(spark_base, rel=1e-12)
    assert frame_cal["a"] == pytest.approx(spark_cal["a"], rel=1e-9)
    assert frame_cal["b"] == pytest.approx(spark_cal["b"], rel=1e-9)
    prop_s, info_s, cm_s = estimate_propensity(spark_rows, PARAMS)
    prop_d, info_d, cm_d = estimate_propensity(driver_rows, PARAMS, cells)
    # The Spark path fits the EM on a hash sample of pairs (here all 40) and solves each pair's relevance
    # in Spark (udfs/weighting/spark_em.py): the driver EM's fixed point, to its tolerance.
    assert info_s.pop("em_sample") == {"pairs": 40, "cells": 200, "fraction": 1.0}
    assert info_d == info_s and set(prop_d) == set(prop_s) == {1, 2, 3, 4, 5}
    assert [prop_d[k] for k in range(1, 6)] == pytest.approx([prop_s[k] for k in range(1, 6)], rel=1e-6)
    assert prop_d[5] < prop_d[1]  # the position bias was found
    pd.testing.assert_frame_equal(_evidence(cm_d), _evidence(cm_s), rtol=1e-5, atol=1e-5)
    assert C.noise_thresholds(cells["pm"], cells["n"], cells["c"]) == pytest.approx(
        noise_thresholds(spark_rows, "p_model"), rel=1e-6)
    assert C.max_loss(cells["pm"], cells["n"], cells["c"]) == pytest.approx(max_loss(spark_rows), rel=1e-6)
    ratio = PARAMS.but(propensity_estimator="ratio")
    assert estimate_propensity(driver_rows, ratio, cells)[0] == pytest.approx(
        estimate_propensity(spark_rows, ratio)[0], rel=1e-6)


@pytest.mark.parametrize("levels", ["few", "continuous"])
def test_normalise_on_the_driver_matches_the_spark_search(log, levels):
    """The driver's search over distinct raw weights finds the Spark passes' scale."""
    frame, df = log
    if levels == "few":  # a handful of raw values (action_value, ipw); w_min binds at position 1
        df = df.withColumn("raw_weight", (df["position"] ** 3).cast("double"))
    on_driver = PARAMS.but(max_driver_cells=10_000)
    out_d, scale_d = normalise(df, on_driver)
    out_s, scale_s = normalise(df, PARAMS)
    assert scale_d == pytest.approx(scale_s, rel=1e-9)
    got = out_d.toPandas()["weight"]
    assert got.mean() == pytest.approx(1.0, abs=1e-8) and got.max() <= 10.0
    assert got.min() == 0.1  # the clip binds, the mean holds


@pytest.mark.parametrize("w_min", [0.1, 2.0])
def test_normalise_with_known_levels_needs_no_pass_and_matches_it(log, w_min):
    """Uniform weights (`none`, nothing sampled): the job hands normalise the one level it knows; the
    scale and the weights are those of the search over the rows (also where the clip binds)."""
    frame, df = log
    ones = df.withColumn("raw_weight", df["position"] * 0 + 1.0)
    settings = PARAMS.but(max_driver_cells=10_000, w_min=w_min)
    known = (np.array([1.0]), np.array([float(len(frame))]))
    jobs_before = df.sparkSession.sparkContext.statusTracker().getJobIdsForGroup()
    out_k, scale_k = normalise(ones, settings, levels=known)
    assert df.sparkSession.sparkContext.statusTracker().getJobIdsForGroup() == jobs_before  # no Spark job
    out_p, scale_p = normalise(ones, settings)
    assert scale_k == scale_p
    np.testing.assert_array_equal(out_k.toPandas()["weight"], out_p.toPandas()["weight"])


def test_a_log_whose_clicks_fall_with_the_cosine_keeps_the_scorers_order(log):
    """Clicks that fall as the scorer's cosine rises (a small or position-led log) would fit a negative
    Platt slope: p_model would rank against the scorer and a trainee, keeping its start's sign, would
    export the encoder backwards. Both paths hold the slope at its floor and fit b alone."""
    from udfs.weighting.calibration import MIN_SCORER_SLOPE
    from udfs.weighting.spark import calibrate, collect_cells

    frame, df = log
    pair_rel = 1 - 2 * frame.groupby("title")["p_model"].transform("first")  # the cosine, reversed
    scored = df.sparkSession.createDataFrame(frame.assign(relevance=pair_rel, p_model=pair_rel))
    spark_rows, base, spark_cal = calibrate(scored, False, None)
    _, _, driver_cal = calibrate(scored, False, collect_cells(scored, 10_000))
    for cal in (spark_cal, driver_cal):
        assert cal["a"] == MIN_SCORER_SLOPE and cal["slope_floored"] is True
    assert driver_cal["b"] == pytest.approx(spark_cal["b"], rel=1e-6)
    p = spark_rows.select("relevance", "p_model").toPandas().sort_values("relevance")
    assert p["p_model"].is_monotonic_increasing and p["p_model"].max() - p["p_model"].min() < 0.01
    assert p["p_model"].mean() == pytest.approx(base, abs=0.01)  # b alone still matches the click rate
    unreversed = df.sparkSession.createDataFrame(frame.assign(relevance=-pair_rel, p_model=-pair_rel))
    assert calibrate(unreversed, False, None)[2]["slope_floored"] is False


@pytest.mark.parametrize("path", ["driver", "spark"])
def test_ranker_order_within_query_keeps_each_querys_level_and_the_second_fits_order(log, spark, path):
    """weighting.em_within_query ranker: each query's mean label over its rows is the label as fitted, and
    inside a query the labels differ as the ranker-prior fit's relevances do (no clip binds here)."""
    from udfs.weighting.spark import RANKER_PRIOR, calibrate, with_pair_relevance, with_ranker_order_within_query

    frame, df = log
    if path == "driver":  # the driver's cells hold the calibrated pm (calibrate adds it), as in the score job
        pair_rel = frame.groupby("title")["p_model"].transform("first") * 2 - 1
        df = spark.createDataFrame(frame.assign(relevance=pair_rel, p_model=pair_rel))
        cells = collect_cells(df, 10_000)
        df = calibrate(df, False, cells)[0]
    else:
        cells = None
    _, _, fitted = estimate_propensity(df, PARAMS, cells)
    _, _, ranker = estimate_propensity(df, PARAMS.but(**RANKER_PRIOR), cells)
    rows = with_pair_relevance(df, fitted, spark)
    persisted: list = []
    out, info = with_ranker_order_within_query(rows, PARAMS, cells, persisted, None)
    for f in persisted:
        f.unpersist()
    assert info["order"] == "ranker" and info["prior_groups"] == "p_model_position" and info["prior_rows"] > 0
    got = out.select("query", "title", "pair_relevance").toPandas()
    before = rows.select("query", "title", "pair_relevance").toPandas()
    second = _evidence(ranker).set_index("_bucket")["_gamma"]
    keyed = with_pair_relevance(df, ranker, spark).select("query", "title", "pair_relevance").toPandas()
    assert len(got) == len(frame) and got["pair_relevance"].notna().all() and len(second) == 40
    level = got.groupby("query")["pair_relevance"].mean()
    pd.testing.assert_series_equal(level, before.groupby("query")["pair_relevance"].mean(), rtol=1e-9, atol=1e-12)
    per_pair = got.groupby(["query", "title"])["pair_relevance"].first()
    order = keyed.groupby(["query", "title"])["pair_relevance"].first()
    np.testing.assert_allclose((per_pair - per_pair.groupby("query").transform("mean")).to_numpy(),
                               (order - order.groupby("query").transform("mean")).to_numpy(), atol=1e-9)
    assert not np.allclose(per_pair.to_numpy(), before.groupby(["query", "title"])["pair_relevance"].first())
