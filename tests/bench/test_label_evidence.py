"""benchmarks/label_evidence: each piece of a pair's evidence ranked against its true relevance."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import label_evidence


def test_the_mean_logged_position_ranks_pairs_lower_first_and_bands_split_by_impressions():
    rng = np.random.default_rng(0)
    relevance = rng.uniform(1, 3, 400)
    impressions = np.where(np.arange(400) < 200, 1, 12)
    n = np.zeros((400, 10), dtype=np.int64)
    top = relevance > 2.0   # the ranker shows relevant pairs at position 1, the rest at 10
    n[top, 0], n[~top, 9] = impressions[top], impressions[~top]
    pairs = pd.DataFrame({"clicks": np.zeros(400), "impressions": impressions, "label": relevance,
                          "p_model": -relevance, "position_impressions": list(n)})
    ev = label_evidence.pair_evidence(pairs)
    out = label_evidence.evidence_auc(ev, relevance, impressions)
    assert out["all"]["mean_position"] == pytest.approx(1.0)   # shown on top = relevant: lower first
    assert out["all"]["label"] == pytest.approx(1.0) and out["all"]["p_model"] == pytest.approx(0.0)
    assert out["all"]["click_rate"] == pytest.approx(0.5)      # no clicks: no evidence
    assert out["1-1"]["pairs"] == 200 and out["9-more"]["pairs"] == 200 and "2-3" not in out
    assert "| g | 400 |" in label_evidence.markdown({"g": out})


def test_quality_folders_judge_each_configs_label_against_the_human_grades_at_2_5(tmp_path):
    from udfs.clickstream.schema import PAIRS_DIR

    grades = pd.DataFrame({"query": [" q ", "q", "q", "r"], "title": ["a", "a", "b", "c "],
                           "relevance": [3.0, 2.0, 2.25, 1.0]})  # (q, a) averages 2.5: positive; b is not
    grades.to_parquet(tmp_path / "grades.parquet")
    folder = tmp_path / "seed0_q10" / "flip20_s4"
    for config, label in (("naive", [0.2, 0.9, 0.1]), ("click_label", [0.9, 0.2, 0.1])):
        out = folder / f"w_{config}" / PAIRS_DIR
        out.mkdir(parents=True)
        pd.DataFrame({"query": ["q", "q", "r"], "title": ["a", "b", "c"], "impressions": [4, 4, 4],
                      "clicks": [1, 1, 1], "label": label, "p_model": [0.5, 0.5, 0.5],
                      "position_impressions": [np.array([4, 0]), np.array([0, 4]), np.array([2, 2])]}
                     ).to_parquet(out / "part-0.parquet")
    truth = label_evidence.grade_table(tmp_path / "grades.parquet")
    out = label_evidence.quality_folder_evidence(folder, truth)
    assert set(out) == {"seed0_q10/flip20_s4/naive", "seed0_q10/flip20_s4/click_label"}
    assert out["seed0_q10/flip20_s4/click_label"]["all"]["label"] == pytest.approx(1.0)
    assert out["seed0_q10/flip20_s4/naive"]["all"]["label"] == pytest.approx(0.5)  # (q, a) above r, below b
    assert out["seed0_q10/flip20_s4/naive"]["all"]["mean_position"] == pytest.approx(1.0)
