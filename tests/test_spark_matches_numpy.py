"""Each Spark-side weighting computation gives the numbers of its pure numpy reference on the same data
(udfs/spark_weighting.py against udfs/weights.py): the job's maths is tested, not only its wiring."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from udfs import weights as W
from udfs.spark_weighting import estimate_propensity, noise_thresholds, normalise, with_click_probability

PARAMS = {"normalize": True, "w_min": 0.1, "w_max": 10.0, "propensity_estimator": "em", "propensity_min": 0.05,
          "em_max_pairs": 10_000, "em_buckets": 4, "em_prior_rows": 5.0}


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


def test_leave_one_out_click_probability_matches_click_model_probability(log, spark):
    frame, df = log
    _, info, cm = estimate_propensity(df, PARAMS)
    assert info["buckets"] == "query_title_pairs" and cm is not None
    got = with_click_probability(df, cm, spark).toPandas()
    # The numpy reference on the same fitted click model: theta by position, the pair's EM evidence.
    keyed = got.merge(spark.createDataFrame(frame).withColumn(
        "_bucket", cm.bucket).select("query", "title", "_bucket").distinct().toPandas(), on=["query", "title"])
    ev = cm.evidence.set_index("_bucket").loc[keyed["_bucket"]]
    theta = keyed["position"].map(cm.theta).to_numpy()
    expected = W.click_model_probability(theta, ev["_gamma"].to_numpy(), ev["_r"].to_numpy(), ev["_n"].to_numpy(),
                                         ev["_m"].to_numpy(), cm.prior_rows, keyed["clicked"].to_numpy())
    np.testing.assert_allclose(keyed["p_click"].to_numpy(), expected, rtol=1e-9)
    # And it is leave-one-out: a pair's click and skip at one position get different probabilities.
    assert keyed.groupby(["query", "title", "position"])["p_click"].nunique().max() == 2
