"""benchmarks/demo_seeds: the paired comparison over generator seeds (the pipelines themselves are the
demo's, tested in tests/commands)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import demo_seeds


def _frame(seed: int, default_noise: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rel = rng.uniform(1, 3, 600)
    f = pd.DataFrame({"query": np.repeat([f"q{i}" for i in range(60)], 10), "relevance": rel})
    f["naive"] = rel + rng.normal(0, 0.8, len(rel))
    f["default"] = rel + rng.normal(0, default_noise, len(rel))
    f["zero-shot"] = rng.normal(0, 1, len(rel))  # knows nothing
    return f


def test_a_better_default_is_above_naive_on_every_seed_and_combined():
    result = demo_seeds.paired({1: _frame(1, 0.2), 2: _frame(2, 0.2)}, replicates=200)
    for row in result["per_seed"]:
        assert row["minus_naive"]["default"]["lo"] > 0
        assert row["minus_naive"]["zero-shot"]["hi"] < 0
    c = result["combined"]["default"]
    assert c["seeds"] == 2 and c["wins"] == 2 and c["lo"] > 0
    table = demo_seeds.markdown(result)
    assert "| 1 |" in table and "| combined (2 seeds) |" in table and "default − naive [95 % CI]" in table


def test_identical_models_differ_by_exactly_zero():
    f = _frame(3, 0.8)
    f["default"] = f["naive"]
    result = demo_seeds.paired({3: f}, replicates=100)
    d = result["per_seed"][0]["minus_naive"]["default"]
    assert d["mean"] == d["lo"] == d["hi"] == 0.0


def test_truth_labels_are_each_pairs_true_click_probability(tmp_path):
    from jobs.generate import DEMO_CLICKS
    from udfs.clickstream.simulate import click_probability
    data, pairs = tmp_path / "data", tmp_path / "weighted" / "_pairs"
    (data / "clickstream").mkdir(parents=True)
    pairs.mkdir(parents=True)
    pd.DataFrame({"event_id": ["e1", "e2", "e3", "e4"], "query": [" drill", "drill", "saw", None],
                  "title": ["bit set ", "bit set", "hand saw", "x"]}).to_parquet(data / "clickstream" / "p.parquet")
    pd.DataFrame({"event_id": ["e1", "e2", "e3", "e4"], "true_relevance": [3.0, 3.0, 1.5, 2.0]}).to_parquet(
        data / "truth.parquet")
    pd.DataFrame({"query": ["drill", "saw"], "title": ["bit set", "hand saw"], "label": [0.0, 1.0],
                  "impressions": [2, 1]}).to_parquet(pairs / "part-0.parquet")
    assert demo_seeds.truth_labels(tmp_path / "weighted", data) == 2
    got = pd.read_parquet(pairs / "part-0.parquet")
    np.testing.assert_allclose(got["label"], click_probability(np.array([3.0, 1.5]), DEMO_CLICKS))
    assert got["impressions"].tolist() == [2, 1]   # only the label changes
    pd.DataFrame({"query": ["hammer"], "title": ["claw"], "label": [0.5], "impressions": [1]}).to_parquet(
        pairs / "part-1.parquet")
    with pytest.raises(RuntimeError, match="without a true relevance"):
        demo_seeds.truth_labels(tmp_path / "weighted", data)


def test_against_a_model_is_the_paired_difference_from_it_on_the_same_resamples():
    frames = {1: _frame(1, 0.2), 2: _frame(2, 0.2)}
    for seed, f in frames.items():   # a variant that is the default, and one that is worse than it
        f["same"] = f["default"]
        f["worse"] = f["relevance"] + np.random.default_rng(seed + 10).normal(0, 1.5, len(f))
    result = demo_seeds.paired(frames, replicates=200, against="default")
    assert result["against"] == "default" and set(result["combined_against"]) == {"same", "worse"}
    for row in result["per_seed"]:
        same, worse = row["minus_against"]["same"], row["minus_against"]["worse"]
        assert same["mean"] == same["lo"] == same["hi"] == 0.0
        assert worse["hi"] < 0
        assert worse["mean"] == pytest.approx(row["auc"]["worse"] - row["auc"]["default"])
    assert result["combined_against"]["worse"]["wins"] == 0 and result["combined_against"]["worse"]["hi"] < 0
    assert "worse − default [95 % CI]" in demo_seeds.markdown(result)
    with pytest.raises(ValueError, match="not one of the models"):
        demo_seeds.paired(frames, replicates=10, against="nothing")
