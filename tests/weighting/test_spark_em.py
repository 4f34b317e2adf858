"""The click model past weighting.max_driver_cells (udfs/weighting/spark_em.py): the EM's shared
parameters from a hash sample of pairs on the driver, every pair's relevance in Spark."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.config import load_config
from udfs.weighting import spark_em
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.spark import collect_cells, estimate_propensity

# the position-based model: these logs have no sessions (the click context: tests/weighting/test_click_context.py)
SETTINGS = WeightingSettings.from_config(load_config()).but(em_click_context=0)


@pytest.fixture(scope="module")
def log(spark):
    """1,200 pairs at positions 1-10 with a position bias 1/k^0.9 and 3 % noise clicks: ~8k cells."""
    rng = np.random.default_rng(7)
    n_pairs, rows = 1200, 60_000
    gamma = rng.uniform(0.05, 0.9, n_pairs)
    pair = rng.integers(0, n_pairs, rows)
    position = np.clip(np.round(rng.normal((1 - gamma[pair]) * 9, 3.0)), 0, 9).astype(np.int32) + 1
    clicked = (rng.random(rows) < 0.03 + 0.97 * gamma[pair] / position ** 0.9).astype(np.int32)
    frame = pd.DataFrame({"query": [f"q{p // 5}" for p in pair], "title": [f"t{p}" for p in pair],
                          "position": position, "clicked": clicked,
                          "p_model": np.clip(gamma + rng.normal(0, 0.1, n_pairs), 0.02, 0.98)[pair]})
    return spark.createDataFrame(frame).cache()


def _evidence(cm) -> pd.DataFrame:
    ev = cm.evidence if isinstance(cm.evidence, pd.DataFrame) else cm.evidence.toPandas()
    return ev.sort_values("_bucket").reset_index(drop=True)


def test_a_sample_of_pairs_fits_the_shared_parameters_and_every_pair_is_labelled(log, monkeypatch):
    cells = collect_cells(log.withColumn("relevance", log["p_model"]), 100_000)
    cells["pm"] = cells["p_raw"]
    full_prop, full_info, full_cm = estimate_propensity(log, SETTINGS, cells)   # every cell on the driver
    monkeypatch.setattr(spark_em, "MIN_SAMPLE_CELLS", 0)
    sampled = SETTINGS.but(max_driver_cells=2_500)
    persisted: list = []
    prop, info, cm = estimate_propensity(log, sampled, None, persisted)
    sample = info["em_sample"]
    assert info["n_buckets"] == full_info["n_buckets"] == 1200 and info["cells"] == len(cells)
    # About max_driver_cells cells reached the driver (a hash sample: not exactly), a quarter of the pairs.
    assert 0.8 * 2_500 < sample["cells"] < 1.2 * 2_500 and sample["pairs"] < 0.4 * 1200
    assert sample["fraction"] == pytest.approx(2_500 / len(cells))
    # Every pair is labelled, in Spark, and the labels are those of the full fit up to the sample's noise.
    ev, full = _evidence(cm), _evidence(full_cm)
    assert len(ev) == 1200 and (ev["_bucket"].to_numpy() == full["_bucket"].to_numpy()).all()
    assert np.abs(ev["_gamma"] - full["_gamma"]).mean() < 0.02
    assert np.corrcoef(ev["_gamma"], full["_gamma"])[0, 1] > 0.99
    assert all(abs(prop[k] - full_prop[k]) < 0.05 for k in range(1, 11)) and prop[10] < 0.5 * prop[1]
    # The same bits on a rerun: hash sample, partitions from the pair count, sorted pairs.
    again = _evidence(estimate_propensity(log, sampled, None, persisted)[2])
    pd.testing.assert_frame_equal(ev, again, check_exact=True)
    assert info["em_sample"] == estimate_propensity(log, sampled, None, persisted)[1]["em_sample"]
    for frame in persisted:
        frame.unpersist()


@pytest.mark.parametrize("groups", ["p_model_position", "position"])
def test_the_prior_can_group_pairs_by_their_logged_position_too(log, monkeypatch, groups):
    """weighting.em_prior_groups p_model_position: 5 p_model bins each split at 4 quantiles of its pairs'
    mean logged position; position: 20 bins of the mean position alone (20 groups, as em_buckets 20
    p_model bins), on the driver and in Spark alike."""
    cells = collect_cells(log.withColumn("relevance", log["p_model"]), 100_000)
    cells["pm"] = cells["p_raw"]
    by_pm = SETTINGS.but(em_prior_rows=20.0)
    by_pos = by_pm.but(em_prior_groups=groups)
    ev_pm = _evidence(estimate_propensity(log, by_pm, cells)[2])
    ev_pos = _evidence(estimate_propensity(log, by_pos, cells)[2])
    assert ev_pm["_m"].nunique() == ev_pos["_m"].nunique() == 20
    assert np.abs(ev_pm["_gamma"] - ev_pos["_gamma"]).mean() > 1e-3   # the groups moved the labels
    # pairs the ranker keeps deep (here: the less relevant) get a lower prior at the same p_model bin
    mean_position = cells.assign(kn=cells["position"] * cells["n"]).groupby("_bucket")[["kn", "n"]].sum()
    mean_position = (mean_position["kn"] / mean_position["n"]).reindex(ev_pos["_bucket"]).to_numpy()
    assert np.corrcoef(mean_position, ev_pos["_m"])[0, 1] < np.corrcoef(mean_position, ev_pm["_m"])[0, 1]
    # Spark: the same groups (by approximate quantiles) on a sample's fit
    monkeypatch.setattr(spark_em, "MIN_SAMPLE_CELLS", 0)
    persisted: list = []
    ev_spark = _evidence(estimate_propensity(log, by_pos.but(max_driver_cells=2_500), None, persisted)[2])
    assert len(ev_spark) == 1200 and ev_spark["_m"].nunique() == 20
    assert np.abs(ev_spark["_gamma"] - ev_pos["_gamma"]).mean() < 0.02
    for frame in persisted:
        frame.unpersist()
