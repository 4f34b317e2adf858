"""Scoring once per round: a score run reuses the pair scores of an earlier output made with the
same scorer, tokenizer, lengths and precision, and only scores the pairs that output lacks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from udfs.scoring.model_loader import default_model_path


def by_pair(folder) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "_pairs").sort_values(["query", "title"]).reset_index(drop=True)
    return frame


def test_second_strategy_reuses_scores_and_scores_only_new_pairs(spark, tiny_model_dir, tmp_path):
    raw = tmp_path / "raw"
    write(generate(rows=500, days=1, seed=5, malformed_fraction=0.0), str(raw))
    base = tiny_overrides(tiny_model_dir, "scorer.precision=fp32", "output.row_model_inputs=true")
    first = tmp_path / "none"
    run_score(spark, f"{raw}/clickstream", str(first), config.load_config(overrides=[*base, "weighting.strategy=none"]))

    # Drop a third of the first output's pairs: the reuse run must score exactly those itself.
    files = sorted((first / "_pairs").glob("*.parquet"))
    dropped = pq.read_table(files[0]).num_rows
    files[0].unlink()
    assert dropped > 0 and len(files) > 1

    fresh, reused = tmp_path / "fresh", tmp_path / "reused"
    run_score(spark, f"{raw}/clickstream", str(fresh),
              config.load_config(overrides=[*base, "weighting.strategy=denoise"]))
    summary = run_score(spark, f"{raw}/clickstream", str(reused), config.load_config(
        overrides=[*base, "weighting.strategy=denoise", f"scorer.reuse_scores_from={first}"]))
    assert summary["reused_scores"]["used"] is True
    a, b = by_pair(fresh), by_pair(reused)
    assert len(a) == len(b) and (a[["query", "title"]] == b[["query", "title"]]).all().all()
    np.testing.assert_allclose(a["relevance"], b["relevance"], rtol=0, atol=1e-6)
    for col in ("query_ids", "title_ids", "input_ids"):
        assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col]))
    np.testing.assert_allclose(a["weight"], b["weight"], rtol=1e-5)

    # Another scorer: the earlier scores do not apply and are not used.
    summary = run_score(spark, f"{raw}/clickstream", str(tmp_path / "other"), config.load_config(
        overrides=[*base, f"scorer.path={default_model_path()}", "weighting.strategy=none",
                   f"scorer.reuse_scores_from={first}"]))
    assert summary["reused_scores"]["used"] is False
