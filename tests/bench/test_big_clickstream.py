"""The big-clickstream generator (benchmarks/big_clickstream.py): contract, determinism, the shape of the
data (Zipf head, position bias, relevance-driven clicks), the output guard, and Spark's validation."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from benchmarks import big_clickstream
from jobs.generate import generate as demo_generate
from jobs.generate import write as demo_write
from jobs.outputs import MARKER, OutputRefused

ROWS = 50_000
PER_FILE = 20_000   # three chunks, the last one partial


def _read(out: Path) -> pa.Table:
    files = sorted((out / "clickstream").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, dict, pa.Table, pa.Table]:
    out = tmp_path_factory.mktemp("big") / "data"
    summary = big_clickstream.generate(str(out), rows=ROWS, seed=0, rows_per_file=PER_FILE, verbose=False)
    return out, summary, _read(out), pq.read_table(out / "truth.parquet")


@pytest.fixture(scope="module")
def demo_schema(tmp_path_factory) -> pa.Schema:
    """The schema jobs/generate.py writes (what `clickweight score` is tested against)."""
    out = tmp_path_factory.mktemp("demo") / "data"
    demo_write(demo_generate(300, 2, 1, malformed_fraction=0.0), str(out))
    return pq.read_schema(next((out / "clickstream").glob("*.parquet")))


def test_rows_schema_and_values(made, demo_schema):
    out, summary, t, _ = made
    assert t.num_rows == ROWS == summary["rows"]
    assert len(list((out / "clickstream").glob("part-*.parquet"))) == 3 == summary["clickstream_files"]
    assert t.schema.equals(demo_schema, check_metadata=False), (t.schema, demo_schema)
    assert pc.count_distinct(t["event_id"]).as_py() == ROWS
    assert pc.count_distinct(t["session_id"]).as_py() == summary["sessions"]
    assert pc.min(t["position"]).as_py() == 1 and pc.max(t["position"]).as_py() == 10
    for col in ("clicked", "added_to_cart", "purchased"):
        assert set(pc.unique(t[col]).to_pylist()) <= {0, 1}
    assert t.num_rows - t.filter(pc.field("clicked") == 1).num_rows == t["dwell_ms"].null_count
    assert t["query"].null_count == t["title"].null_count == t["event_ts"].null_count == 0
    # Every session shows positions 1..n once each: a session's rows are a page.
    pages = t.group_by("session_id").aggregate([("position", "max"), ("position", "count")])
    assert pages["position_max"].cast(pa.int64()).equals(pages["position_count"])
    assert set(out.iterdir()) == {out / "clickstream", out / "truth.parquet", out / "_summary.json", out / MARKER}
    assert json.loads((out / MARKER).read_text())["kind"] == big_clickstream.KIND
    assert json.loads((out / "_summary.json").read_text())["distinct_pairs"] == summary["distinct_pairs"]


def test_deterministic_for_a_seed(made, tmp_path):
    out, _, t, truth = made
    again = tmp_path / "again"
    big_clickstream.generate(str(again), rows=ROWS, seed=0, rows_per_file=PER_FILE, verbose=False)
    for name in ("part-00000.parquet", "part-00001.parquet", "part-00002.parquet"):
        assert filecmp.cmp(out / "clickstream" / name, again / "clickstream" / name, shallow=False), name
    assert filecmp.cmp(out / "truth.parquet", again / "truth.parquet", shallow=False)
    other = tmp_path / "other"
    big_clickstream.generate(str(other), rows=ROWS, seed=1, rows_per_file=PER_FILE, verbose=False)
    o = _read(other)
    assert o.num_rows == ROWS and not o.equals(t)
    assert not o["title"].equals(t["title"]) and not o["clicked"].equals(t["clicked"])


def test_zipf_head_and_duplication(made):
    _, summary, t, _ = made
    counts = np.sort(pc.value_counts(t["query"]).field("counts").to_numpy())[::-1]
    top = max(1, int(np.ceil(0.01 * len(counts))))
    assert counts[:top].sum() / ROWS > 0.2
    assert counts[:top].sum() / ROWS == pytest.approx(summary["top_1pct_query_share"], abs=1e-4)
    assert len(counts) == summary["distinct_queries"] <= big_clickstream.default_queries(ROWS)
    # A long tail too: most queries are rare.
    assert np.median(counts) < 0.05 * counts[0]
    pairs = t.group_by(["query", "title"]).aggregate([("event_id", "count")])
    assert pairs.num_rows == summary["distinct_pairs"]
    assert 8 <= ROWS / pairs.num_rows <= 40    # defaults aim at about 10-30 per pair
    assert summary["impressions_per_pair"] == pytest.approx(ROWS / pairs.num_rows, abs=1e-3)


def test_clicks_fall_with_position_and_follow_relevance(made):
    _, _, t, truth = made
    by_pos = t.group_by("position").aggregate([("clicked", "mean")]).sort_by("position")
    rate = by_pos["clicked_mean"].to_numpy()
    assert len(rate) == 10
    assert rate[0] > rate[1] > rate[2] > rate[4] > rate[9]
    assert np.all(np.diff(rate) < 0.02)       # never a real rise (sampling noise only)
    assert rate[0] > 2.5 * rate[9]
    # Same positions, different true relevance: relevant pairs are clicked far more often.
    top3 = t.filter(pc.field("position") <= 3).select(["query", "title", "clicked"])
    j = top3.join(truth.select(["query", "title", "true_relevance"]), ["query", "title"])
    rel = j["true_relevance"].to_numpy()
    clicked = j["clicked"].to_numpy()
    assert clicked[rel >= 2.5].mean() > 1.5 * clicked[rel < 1.75].mean()


def test_truth_covers_every_pair(made):
    _, summary, t, truth = made
    assert truth.schema.equals(big_clickstream.TRUTH_SCHEMA, check_metadata=False)
    keys = truth.group_by(["query", "title"]).aggregate([])
    assert keys.num_rows == truth.num_rows == summary["distinct_pairs"]   # one row per pair
    assert truth.group_by(["query", "item_id"]).aggregate([]).num_rows == truth.num_rows
    # An item is one title wherever it is shown (items recur across queries).
    per_item = truth.group_by("item_id").aggregate([("title", "count_distinct"), ("query", "count")])
    assert pc.max(per_item["title_count_distinct"]).as_py() == 1 and pc.max(per_item["query_count"]).as_py() > 1
    shown = t.group_by(["query", "title"]).aggregate([("event_id", "count"), ("clicked", "sum")])
    j = shown.join(truth, ["query", "title"], join_type="full outer")
    assert j.num_rows == truth.num_rows and j["true_relevance"].null_count == 0 and j["event_id_count"].null_count == 0
    assert j["event_id_count"].equals(j["impressions"].cast(pa.int64()))
    assert j["clicked_sum"].cast(pa.int64()).equals(j["clicks"])
    rel = truth["true_relevance"].to_numpy()
    assert rel.min() >= 1.0 and rel.max() <= 3.0 and rel.std() > 0.3


def test_output_guard_and_atomic_replace(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(OutputRefused):
        big_clickstream.generate(str(target), rows=500, seed=0, verbose=False)
    assert (target / "mine.txt").read_text() == "keep"
    s = big_clickstream.generate(str(target), rows=500, seed=0, overwrite=True, verbose=False)
    assert s["rows"] == 500 and not (target / "mine.txt").exists()
    # Its own output is replaced without --overwrite (like jobs/generate.py); no temp folder stays behind.
    big_clickstream.generate(str(target), rows=700, seed=0, verbose=False)
    assert _read(target).num_rows == 700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert big_clickstream.main(["--output", str(out), "--rows", "3000", "--seed", "3", "--queries", "40",
                                 "--zipf", "1.3", "--pool", "12", "--days", "2"]) == 0
    s = json.loads((out / "_summary.json").read_text())
    assert (s["rows"], s["queries"], s["zipf"], s["pool"], s["days"]) == (3000, 40, 1.3, 12, 2)
    assert s["distinct_queries"] <= 40 and s["distinct_pairs"] <= 40 * 12
    dates = pc.unique(pc.strftime(_read(out)["event_ts"], format="%Y-%m-%d")).to_pylist()
    assert sorted(dates) == ["2026-01-01", "2026-01-02"]
    assert "rows/s" in capsys.readouterr().out


def test_score_validation_quarantines_nothing(made, spark):
    """jobs/score.py's own input validation (schema check, conform, every row rule, duplicate ids)."""
    from jobs import config
    from jobs.score import read_parquet, validate

    out, _, _, _ = made
    valid, quarantined, _ = validate(read_parquet(spark, str(out / "clickstream")), config.load_config(),
                                     has_catalog=False)
    assert quarantined.count() == 0
    assert valid.count() == ROWS
