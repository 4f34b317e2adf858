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
