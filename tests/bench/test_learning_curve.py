"""benchmarks/learning_curve.py pairs the default at N/2 with naive at N on the same held-out queries,
from quality results files made at different --sessions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import learning_curve as lc
from training.metrics import auc

QUERIES = np.repeat([f"q{i}" for i in range(40)], 5)
RELEVANCE = np.tile([3.0, 2.67, 2.0, 1.33, 1.0], 40)   # >= 2.5 positive: two of five a query


def _run(tmp_path, seed: int, cm: str, config: str, sessions: float, noise: float) -> dict:
    rng = np.random.default_rng([seed, int(sessions), config == "default"])  # fixed, whatever the hash seed
    score = RELEVANCE + noise * rng.standard_normal(len(RELEVANCE))
    path = tmp_path / f"seed{seed}_{cm}_s{sessions:g}_{config}.parquet"
    pd.DataFrame({"query": QUERIES, "relevance": RELEVANCE, "score": score}).to_parquet(path)
    return {"seed": seed, "click_model": cm, "config": config, "predictions": str(path),
            "auc": auc(RELEVANCE >= 2.5, score), "impressions": int(12_500 * sessions)}


def _file(runs: list[dict], sessions: float, **args) -> dict:
    return {"args": {"split": "dev", "train_queries": 2000, "heldout_queries": 1200, "sessions": sessions, **args},
            "runs": [{"seed": 0, "click_model": "-", "config": "zero-shot", "auc": 0.5}, *runs]}


def test_default_at_half_is_paired_with_naive_at_full_and_the_doubling(tmp_path):
    # noise falls with the log: naive 2.0 at s4, 1.0 at s8; the default at s4 in between (1.5)
    files = []
    for sessions, naive_noise, default_noise in ((4, 2.0, 1.5), (8, 1.0, 0.8)):
        runs = [_run(tmp_path, s, "flip20", c, sessions, n) for s in (0, 1)
                for c, n in (("naive", naive_noise), ("default", default_noise))]
        files.append(_file(runs, sessions))
    rows = lc.curve(lc.runs_by_size(files), replicates=200)
    assert len(rows) == 1   # N = 8 only: nothing at s2 or s16
    r = rows[0]
    assert r["click_model"] == "flip20" and r["sessions"] == 8 and r["seeds"] == [0, 1]
    a = r["auc"]
    d = r["default_half_minus_naive_full"]
    assert d["mean"] == pytest.approx(np.mean(np.subtract(a["default_half"], a["naive_full"])))
    assert d["lo"] <= d["hi"] and d["seeds"] == 2
    g = r["doubling_gain_naive"]
    assert g["mean"] == pytest.approx(np.mean(np.subtract(a["naive_full"], a["naive_half"])))
    assert g["mean"] > 0   # less noise at N: doubling helps naive here
    share = r["default_share_of_doubling"]
    assert share == pytest.approx((np.mean(a["default_half"]) - np.mean(a["naive_half"])) / g["mean"])
    assert r["impressions"] == {"full": 100_000.0, "half": 50_000.0}
    assert "flip20" in lc.markdown(rows)


def test_files_with_other_held_out_sets_are_refused(tmp_path):
    a = _file([_run(tmp_path, 0, "graded", "naive", 4, 1.0)], 4)
    b = _file([_run(tmp_path, 0, "graded", "naive", 8, 1.0)], 8, heldout_queries=800)
    with pytest.raises(SystemExit, match="heldout_queries"):
        lc.runs_by_size([a, b])


def test_doubling_that_buys_nothing_has_no_share():
    assert np.isnan(lc.doubling_share(0.71, 0.70, 0.70))
    assert lc.doubling_share(0.705, 0.70, 0.71) == pytest.approx(0.5)


def test_each_row_is_sized_by_its_own_sessions_not_its_files_claim(tmp_path):
    """A file whose arguments claim 8 sessions but whose rows ran at 4 (a --tabulate-only file, or one
    holding --include'd rows) once labelled every row 8; the row's own `sessions` (or its scores path's
    `<click model>_s<sessions>` folder) is what counts."""
    own = {"split": "dev", "train_queries": 2000, "heldout_queries": 1200}   # as rows are written now
    runs4 = [{**_run(tmp_path, s, "flip20", c, 4, n), **own, "sessions": 4.0} for s in (0, 1)
             for c, n in (("naive", 2.0), ("default", 1.5))]
    runs8 = [{**_run(tmp_path, s, "flip20", "naive", 8, 1.0), **own, "sessions": 8.0} for s in (0, 1)]
    frame = lc.runs_by_size([_file(runs4, 8), _file(runs8, 8)])
    assert sorted(frame["sessions"].unique()) == [4.0, 8.0]
    rows = lc.curve(frame, replicates=100)
    assert [r["sessions"] for r in rows] == [8.0]
    r = rows[0]["default_half_minus_naive_full"]
    assert r["t_lo"] is not None and r["t_lo"] <= r["mean"] <= r["t_hi"]
    text = lc.markdown(rows)
    assert "over seeds (t)" in text and f"[{r['t_lo']:+.4f}, {r['t_hi']:+.4f}]" in text
    ci = rows[0]["default_share_of_doubling_ci"]
    assert ci["replicates"] == 100 and (ci["lo"] is None or ci["lo"] <= ci["hi"])
    # a row on other held-out rows than naive@N's is not paired with it
    other = tmp_path / "other.parquet"
    pd.read_parquet(runs4[1]["predictions"]).assign(query=np.roll(QUERIES, 5)).to_parquet(other)
    runs4[1] = {**runs4[1], "predictions": str(other)}
    with pytest.raises(RuntimeError, match="query column"):
        lc.curve(lc.runs_by_size([_file(runs4, 8), _file(runs8, 8)]), replicates=10)


def test_rows_whose_query_counts_differ_are_refused_even_in_one_file(tmp_path):
    a = {**_run(tmp_path, 0, "graded", "naive", 4, 1.0), "heldout_queries": 1200}
    b = {**_run(tmp_path, 0, "graded", "naive", 8, 1.0), "heldout_queries": 800, "sessions": 8.0}
    with pytest.raises(SystemExit, match="heldout_queries"):
        lc.runs_by_size([_file([a, b], 4)])


def test_candidate_names_the_configuration_that_stands_for_the_default(tmp_path):
    # test files hold the position-based `default` beside today's `default_ubm`: --candidate picks which pairs
    runs = [_run(tmp_path, 0, "graded", c, s, n) for s, c, n in ((8, "naive", 1.0), (4, "naive", 2.0),
                                                                   (4, "default", 3.0), (4, "default_ubm", 0.5))]
    frame = lc.runs_by_size([_file(runs[:1], 8), _file(runs[1:], 4)])
    old = lc.curve(frame, replicates=100)
    new = lc.curve(frame, replicates=100, candidate="default_ubm")
    assert [r["candidate"] for r in old + new] == ["default", "default_ubm"]
    assert new[0]["auc"]["default_half"] == [runs[3]["auc"]] and old[0]["auc"]["default_half"] == [runs[2]["auc"]]
    assert new[0]["default_half_minus_naive_full"]["mean"] > old[0]["default_half_minus_naive_full"]["mean"]
    assert lc.curve(frame, replicates=100, candidate="absent") == []
