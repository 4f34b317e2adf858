"""The Spark floors of benchmarks/score_peers.py, run as the benchmarks run them (a process each): (f1)
writes every row with relevance 0; (f2) writes every row with its pair's real cosine; (f3) quarantines the
bad rows with their reasons, writes a pair table whose impressions are the rows written, and commits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import bench_data
from benchmarks.score_peers import _settings, run_peer


def test_f1_scores_nothing_and_f2_scores_every_pair_with_the_scorers_cosine(tmp_path):
    frame = bench_data.clickstream(bench_data.real_pairs(), 120, 3, seed=1)
    src = bench_data.write_clickstream(frame, tmp_path / "in", files=2)
    run_peer("f1", src, str(tmp_path / "f1"), "fp32")
    run_peer("f2", src, str(tmp_path / "f2"), "fp32")
    f1, f2 = pd.read_parquet(tmp_path / "f1"), pd.read_parquet(tmp_path / "f2")
    assert len(f1) == len(f2) == len(frame) and (f1["relevance"] == 0.0).all()
    from udfs.scoring.bert import get_scorer

    pairs = f2.drop_duplicates(["query", "title"])
    expected = get_scorer(_settings("fp32")[1]).cosine(pairs["query"].tolist(), pairs["title"].tolist())
    np.testing.assert_allclose(pairs["relevance"].to_numpy(), expected, atol=1e-5)


def test_a_peer_table_cell_is_the_median_run_with_its_spread():
    from benchmarks.score_peers import median_run
    runs = [{"wall_s": 31.0, "k": "a"}, {"wall_s": 29.5, "k": "b"}, {"wall_s": 40.2, "k": "c"}]
    cell = median_run(runs)
    assert cell["k"] == "a" and cell["wall_s"] == 31.0   # the middle run, with its own details
    assert cell["walls_s"] == [31.0, 29.5, 40.2] and (cell["wall_min_s"], cell["wall_max_s"]) == (29.5, 40.2)
    assert median_run(runs[:2])["k"] == "b"               # an even count: the lower middle, a real run
    assert median_run(runs[:1])["walls_s"] == [31.0]


def test_f3_quarantines_bad_rows_reconciles_and_commits_atomically(tmp_path):
    frame = bench_data.clickstream(bench_data.real_pairs(), 90, 3, seed=2)
    frame.loc[3, "query"] = "   "
    frame.loc[7, "position"] = 0
    src = bench_data.write_clickstream(frame, tmp_path / "in", files=2)
    out = tmp_path / "f3"
    run_peer("f3", src, str(out), "fp32")
    rows = pd.read_parquet(out, columns=["event_id", "relevance", "clicked"])
    quarantine = pd.read_parquet(out / "_quarantine")
    pairs = pd.read_parquet(out / "_pairs")
    assert sorted(quarantine["reason"]) == ["missing query", "position out of range"]
    assert len(rows) + len(quarantine) == len(frame) and not rows["event_id"].isin(quarantine["event_id"]).any()
    assert pairs["impressions"].sum() == len(rows) and pairs["clicks"].sum() == rows["clicked"].sum()
    assert (rows["relevance"] != 0.0).all()                        # scored, unlike (f1)
    assert not Path(f"{out}._staging").exists()                    # renamed into place
