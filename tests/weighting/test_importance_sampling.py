"""Importance sampling on the job's real Spark path: the xxhash keep decision of
udfs.weighting.spark.importance_sample, then normalise's 1/q, rescale and clip (as jobs/score.py's
`weigh` calls them). The weighted sum of a per-row statistic over the kept rows must estimate the
full table's raw-weighted sum without bias, and the kept rows must not depend on partitioning."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.config import load_config
from jobs.score import importance_sample, normalise
from udfs.weighting.settings import SamplingSettings, WeightingSettings

N = 20000
KEEP_FRACTION = 0.3
# Bounds wide enough that the clip never binds here (asserted below): clipping is a deliberate bias.
W = WeightingSettings.from_config(load_config()).but(normalize=True, w_min=0.01, w_max=100.0)


@pytest.fixture(scope="module")
def table(spark):
    rng = np.random.default_rng(7)
    raw = rng.lognormal(0.0, 1.0, N)
    # Any per-row quantity (a loss, a label); correlated with the weight so that a sampler that
    # kept rows by anything but q_i, or forgot 1/q_i, would be visibly biased.
    stat = rng.uniform(0.0, 2.0, N) + np.log1p(raw)
    pdf = pd.DataFrame({"event_id": [f"ev-{i:06d}" for i in range(N)], "raw_weight": raw, "stat": stat})
    return pdf, spark.createDataFrame(pdf).repartition(4)


def sample(df, seed: int = 0):
    kept, info = importance_sample(df, SamplingSettings(keep_fraction=KEEP_FRACTION, seed=seed), N)
    out, scale = normalise(kept, W, F.col("raw_weight") / F.col("keep_prob"))
    frame = out.select("event_id", "raw_weight", "stat", "keep_prob", "weight").toPandas()
    kept.unpersist()
    return frame.sort_values("event_id").reset_index(drop=True), info, scale


def test_importance_sampling_is_unbiased_in_expectation(table):
    pdf, df = table
    kept, info, scale = sample(df)
    raw, stat = pdf["raw_weight"].to_numpy(), pdf["stat"].to_numpy()
    q_all = np.minimum(1.0, info["c"] * raw)
    assert q_all.mean() == pytest.approx(KEEP_FRACTION, abs=1e-6)
    assert 0 < (q_all == 1.0).sum() < N // 10  # some heavy rows are kept for sure, most are sampled

    # Poisson sampling: the number kept is sum q_i up to binomial noise.
    n_kept = len(kept)
    assert n_kept == info["rows_kept"] == N - info["rows_sampled_out"]
    assert abs(n_kept - q_all.sum()) < 4 * np.sqrt(np.sum(q_all * (1 - q_all)))

    # Each kept row carries its own q_i, and weight = s * raw / q_i (clip not binding), mean 1.
    q = kept["keep_prob"].to_numpy()
    assert np.allclose(q, np.minimum(1.0, info["c"] * kept["raw_weight"].to_numpy()), rtol=1e-12)
    w = kept["weight"].to_numpy()
    assert w.min() > W.w_min and w.max() < W.w_max
    assert np.allclose(w, scale * kept["raw_weight"].to_numpy() / q, rtol=1e-12)
    assert w.mean() == pytest.approx(1.0, abs=1e-6)

    # Horvitz-Thompson: sum over kept rows of (weight / s) * stat estimates sum over all rows of
    # raw * stat; its standard deviation under independent keeps is sqrt(sum (raw*stat)^2 (1-q)/q).
    truth = np.sum(raw * stat)
    sd = np.sqrt(np.sum((raw * stat) ** 2 * (1 - q_all) / q_all))
    assert sd < 0.02 * truth  # the tolerance below is tight enough to mean something
    estimate = np.sum(w * kept["stat"].to_numpy()) / scale
    assert abs(estimate - truth) < 4 * sd, (estimate, truth, sd)
    # The self-normalised form the trainer sees (mean weight 1): weighted mean of stat over kept rows.
    assert np.sum(w * kept["stat"]) / np.sum(w) == pytest.approx(truth / raw.sum(), rel=4 * sd / truth)
    # The test's power: forgetting 1/q (weighting kept rows by raw alone) lands far outside 4 sd.
    kr = kept["raw_weight"].to_numpy()
    naive = np.sum(kr * kept["stat"].to_numpy()) * raw.sum() / kr.sum()
    assert abs(naive - truth) > 4 * sd, (naive, truth, sd)


def test_keep_decision_is_deterministic_across_runs_and_partitionings(table):
    pdf, df = table
    first, _, _ = sample(df)
    # Another run over differently partitioned and ordered rows keeps exactly the same rows.
    shuffled = df.repartition(7, "stat").orderBy(F.rand(3))
    second, _, _ = sample(shuffled)
    assert first["event_id"].tolist() == second["event_id"].tolist()
    pd.testing.assert_frame_equal(first, second, check_exact=False, rtol=1e-12)
    # The seed is part of the decision: another seed keeps a different set of the same size.
    other, _, _ = sample(df, seed=1)
    overlap = len(set(first["event_id"]) & set(other["event_id"]))
    assert overlap < 0.8 * len(first) and abs(len(other) - len(first)) < 0.05 * len(first)
