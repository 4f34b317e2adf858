"""benchmarks/score_scaling.py's billion-row cost model, from measured sizes (here: made-up ones with known terms)."""
from __future__ import annotations

import pytest

from benchmarks import score_scaling as sc


def _cases() -> list[dict]:
    out = []
    for rows in (1e6, 3e6, 1e7):
        pairs = 2.0 * rows ** 0.9
        scoring = 5.0 + pairs * 0.002           # wall s on 2 cores: 4 core-ms a pair
        rest = 10.0 + rows * 1e-5               # 0.02 core-ms a row
        out.append({"rows": rows, "distinct_pairs": pairs, "job_s": scoring + rest,
                    "timings_s": {sc.SCORING_PHASE: scoring, "write": rest}})
    return out


def test_cost_model_recovers_the_per_pair_and_per_row_terms_and_scales_them_to_a_billion_rows():
    m = sc.cost_model(_cases(), cores=2, gpu_pairs_per_s=10_000.0, rows=1e9, node_cores=16)
    pairs = 2.0 * 1e9 ** 0.9
    assert m["pairs_alpha"] == pytest.approx(0.9) and m["pairs"] == pytest.approx(pairs, rel=1e-6)
    assert m["per_pair_core_ms"] == pytest.approx(4.0) and m["per_row_core_ms"] == pytest.approx(0.02)
    assert m["cpu"]["pair_core_hours"] == pytest.approx(pairs * 0.004 / 3600)
    assert m["cpu"]["row_core_hours"] == pytest.approx(1e9 * 2e-5 / 3600)
    assert m["cpu"]["node_hours"] == pytest.approx((pairs * 0.004 + 1e9 * 2e-5) / 3600 / 16)
    assert m["cpu"]["dominant"] == "pairs"
    assert m["gpu"]["gpu_hours"] == pytest.approx(pairs / 10_000 / 3600)
    assert m["gpu"]["dominant"] == "pairs (GPU)"   # 7.0 GPU-h of pairs against 0.35 node-h of rows
    assert "| CPU, 16 cores |" in sc.cost_markdown(m)


def test_the_gpu_figure_is_the_lent_h200s_measured_scorer():
    assert sc.gpu_scorer_pairs_per_s() == pytest.approx(9677.9, abs=0.1)
