"""benchmarks/gate_criteria_dev.py's within-position click AUC: position cannot buy it."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.gate_criteria_dev import within_position_auc
from training import metrics


def test_within_position_auc_ignores_what_position_explains_and_weights_by_comparisons():
    rng = np.random.default_rng(0)
    position = np.repeat([1, 2, 3], 400)
    clicked = (rng.random(1200) < np.array([0.6, 0.3, 0.1])[position - 1]).astype(int)
    by_position = -position.astype(float)  # knows the position, nothing about the item
    assert metrics.auc(clicked > 0, by_position) > 0.65
    assert within_position_auc(position, clicked, by_position) == pytest.approx(0.5)

    score = rng.random(1200) + clicked * 0.5  # sees relevance at every position
    per = [(metrics.auc(clicked[position == k] > 0, score[position == k]),
            clicked[position == k].sum() * (400 - clicked[position == k].sum())) for k in (1, 2, 3)]
    expected = sum(a * w for a, w in per) / sum(w for _, w in per)
    assert within_position_auc(position, clicked, score) == pytest.approx(expected)
    # a position with only skips compares nothing and drops out
    assert within_position_auc(np.array([1, 1, 2, 2]), np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.5, 0.4])) == 1.0
