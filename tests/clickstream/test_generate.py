"""Tests for the synthetic clickstream generator (jobs/generate.py). No Spark, no torch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.generate import DEMO_CLICKS, MALFORMED_KINDS, GeneratedData, generate, main, write
from udfs.clickstream.simulate import click_probability

# Spelled out here rather than imported, so a schema change in the module has to be deliberate.
EXPECTED_CLICKSTREAM = {
    "event_id": pa.string(), "event_ts": pa.timestamp("us", tz="UTC"), "user_id": pa.string(),
    "session_id": pa.string(), "query": pa.string(), "item_id": pa.string(), "title": pa.string(),
    "position": pa.int32(), "clicked": pa.int32(), "added_to_cart": pa.int32(), "purchased": pa.int32(),
    "dwell_ms": pa.int64(),
}
EXPECTED_OTHERS = {
    "catalog.parquet": {"item_id": pa.string(), "title": pa.string()},
    "heldout.parquet": {"query": pa.string(), "item_id": pa.string(), "title": pa.string(),
                        "relevance": pa.float64()},
    "truth.parquet": {"event_id": pa.string(), "true_relevance": pa.float64(), "is_noise_click": pa.bool_(),
                      "malformed_kind": pa.string()},
}
OUTPUT_ENTRIES = {"clickstream", "catalog.parquet", "heldout.parquet", "truth.parquet",
                  "_generate_summary.json", "_clickweight.json"}


@pytest.fixture(scope="module")
def small() -> GeneratedData:
    return generate(2000, 3, 7)


@pytest.fixture(scope="module")
def large() -> GeneratedData:
    # Big enough that per-position click rates are estimated to within about +-0.01.
    return generate(50_000, 3, 11)


def _good(data: GeneratedData) -> tuple[pd.DataFrame, pd.DataFrame]:
    ok = data.truth["malformed_kind"].isna().to_numpy()
    return data.clickstream[ok], data.truth[ok]


@pytest.mark.parametrize("rows", [1, 37, 499, 500, 2000, 12345])
def test_exact_row_count(rows: int) -> None:
    data = generate(rows, 2, 3)
    assert len(data.clickstream) == rows
    assert len(data.truth) == rows
    assert (data.truth["event_id"].to_numpy() == data.clickstream["event_id"].to_numpy()).all()


def test_deterministic_for_a_seed() -> None:
    a, b = generate(3000, 3, 42), generate(3000, 3, 42)
    for name in ("clickstream", "catalog", "heldout", "truth"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    c = generate(3000, 3, 43)
    assert not a.clickstream.equals(c.clickstream)
    assert not a.catalog.equals(c.catalog)


def test_in_memory_dtypes(small: GeneratedData) -> None:
    cs = small.clickstream
    assert list(cs.columns) == list(EXPECTED_CLICKSTREAM)
    assert str(cs["event_ts"].dtype) == "datetime64[us, UTC]"
    for col in ("position", "clicked", "added_to_cart", "purchased"):
        assert cs[col].dtype == np.int32, col
    assert str(cs["dwell_ms"].dtype) == "Int64"
    assert small.heldout["relevance"].dtype == np.float64
    assert small.truth["is_noise_click"].dtype == bool


def test_written_parquet_schema(small: GeneratedData, tmp_path: Path) -> None:
    out = tmp_path / "data"
    summary = write(small, str(out))
    assert {p.name for p in out.iterdir()} == OUTPUT_ENTRIES
    files = sorted((out / "clickstream").glob("*.parquet"))
    assert 1 <= len(files) <= 4
    for f in files:
        schema = pq.read_schema(f)
        assert {n: schema.field(n).type for n in schema.names} == EXPECTED_CLICKSTREAM
        assert schema.names == list(EXPECTED_CLICKSTREAM)
    table = pq.read_table(out / "clickstream")
    assert table.num_rows == 2000
    assert table.column("dwell_ms").null_count == int(small.clickstream["dwell_ms"].isna().sum())
    for name, expected in EXPECTED_OTHERS.items():
        schema = pq.read_schema(out / name)
        assert {n: schema.field(n).type for n in schema.names} == expected, name
    on_disk = json.loads((out / "_generate_summary.json").read_text())
    assert on_disk["rows"] == summary["rows"] == 2000
    assert on_disk["seed"] == 7 and on_disk["days"] == 3
    assert on_disk["malformed_rows"] == int(small.truth["malformed_kind"].notna().sum())
    assert 0.0 < on_disk["click_rate"] < 1.0
    # Round trip keeps values, nulls included.
    back = pq.read_table(out / "truth.parquet").to_pandas()
    pd.testing.assert_frame_equal(back, small.truth)


def test_days_are_distinct_utc_dates() -> None:
    data = generate(3000, 4, 5, start_date="2026-03-30")
    ts = data.clickstream["event_ts"].dropna()
    dates = sorted(ts.dt.strftime("%Y-%m-%d").unique())
    assert dates == ["2026-03-30", "2026-03-31", "2026-04-01", "2026-04-02"]
    assert ts.min() >= pd.Timestamp("2026-03-30", tz="UTC")
    assert ts.max() < pd.Timestamp("2026-04-03", tz="UTC")


def test_heldout_queries_are_disjoint_and_graded(small: GeneratedData) -> None:
    held = small.heldout
    assert len(held) > 0
    assert not set(held["query"]) & set(small.clickstream["query"].dropna())
    assert held["relevance"].between(1.0, 3.0).all()
    per_query = held.groupby("query")["relevance"].agg(["size", "nunique"])
    assert per_query["size"].between(8, 16).all()
    assert (per_query["nunique"] >= 2).all()
    assert not held.duplicated(["query", "item_id"]).any()
    assert set(held["item_id"]) <= set(small.catalog["item_id"])


def test_click_rate_falls_with_position(large: GeneratedData) -> None:
    cs, _ = _good(large)
    ctr = cs.groupby("position")["clicked"].mean()
    assert ctr[1] > ctr[5] > ctr[10]
    assert ctr[1] > 2 * ctr[5]


def test_clicks_follow_true_relevance(large: GeneratedData) -> None:
    cs, truth = _good(large)
    rel = truth["true_relevance"].to_numpy()
    clicked = cs["clicked"].to_numpy() == 1
    assert rel[clicked].mean() > rel[~clicked].mean() + 0.1
    assert ((rel >= 1.0) & (rel <= 3.0)).all()
    # The ranker is imperfect but informative: relevance falls with position.
    by_pos = pd.Series(rel).groupby(cs["position"].to_numpy()).mean()
    assert by_pos[1] > by_pos[10]
    # Noise clicks land on noise_click_rate of the impressions (0.05 by default), each one a click.
    noise = truth["is_noise_click"].to_numpy()
    assert abs(noise.mean() - 0.05) < 0.002
    assert clicked[noise].all()


def test_real_clicks_follow_the_shared_click_model(large: GeneratedData) -> None:
    # The demo's clicks come from udfs/clickstream/simulate.py with DEMO_CLICKS: per position, the real (non-noise)
    # click rate is P(exam | k) = 1 / k**eta times the mean P(click | examined) of the items shown there.
    cs, truth = _good(large)
    real = (cs["clicked"].to_numpy() == 1) & ~truth["is_noise_click"].to_numpy()
    position = cs["position"].to_numpy()
    p_click = click_probability(truth["true_relevance"].to_numpy(), DEMO_CLICKS)
    for k in range(1, 11):
        at = position == k
        expected = p_click[at].mean() / k ** DEMO_CLICKS.eta
        assert abs(real[at].mean() - expected) < 0.025, (k, real[at].mean(), expected)
    assert large.meta["hidden_click_model"]["exam_power"] == DEMO_CLICKS.eta


def test_noise_clicks_are_quick_bounces(large: GeneratedData) -> None:
    cs, truth = _good(large)
    noise = truth["is_noise_click"].to_numpy()
    real = (cs["clicked"].to_numpy() == 1) & ~noise
    assert cs.loc[noise, "added_to_cart"].sum() == 0 and cs.loc[noise, "purchased"].sum() == 0
    dwell = cs["dwell_ms"].astype("float64")
    assert dwell[noise].median() < 0.25 * dwell[real].median()


def test_deeper_actions_and_dwell_are_consistent(large: GeneratedData) -> None:
    cs, _ = _good(large)
    assert set(cs["clicked"].unique()) <= {0, 1}
    assert (cs["added_to_cart"] <= cs["clicked"]).all()
    assert (cs["purchased"] <= cs["added_to_cart"]).all()
    assert cs["purchased"].sum() > 0
    assert (cs["dwell_ms"].isna() == (cs["clicked"] == 0)).all()
    assert (cs["dwell_ms"].dropna() > 0).all()


def test_every_malformed_kind_present_and_damaged(small: GeneratedData) -> None:
    cs, kind = small.clickstream, small.truth["malformed_kind"]
    assert set(kind.dropna()) == set(MALFORMED_KINDS)
    assert 12 <= kind.notna().sum() <= 60

    def rows(k: str) -> pd.DataFrame:
        return cs[kind == k]

    assert rows("null_query")["query"].isna().all()
    assert (rows("empty_query")["query"].str.strip() == "").all()
    assert rows("null_title")["title"].isna().all()
    assert (rows("empty_title")["title"] == "").all()
    assert (rows("negative_position")["position"] < 0).all()
    assert (rows("zero_position")["position"] == 0).all()
    assert (rows("clicked_2")["clicked"] == 2).all()
    assert (rows("clicked_negative")["clicked"] == -1).all()
    assert (rows("long_title")["title"].str.len() > 5000).all()
    assert rows("null_event_ts")["event_ts"].isna().all()
    assert rows("null_item_id")["item_id"].isna().all()
    dup_ids = rows("duplicate_event_id")["event_id"]
    assert dup_ids.isin(cs.loc[kind.isna(), "event_id"]).all()


def test_good_rows_are_clean(small: GeneratedData) -> None:
    cs, _ = _good(small)
    assert cs["event_id"].is_unique
    assert cs["event_id"].str.fullmatch(r"e\d{9}").all()
    for col in ("event_ts", "query", "item_id", "title", "user_id", "session_id"):
        assert cs[col].notna().all(), col
    assert (cs["query"].str.strip() != "").all()
    assert cs["title"].str.len().between(1, 2000).all()
    assert cs["position"].between(1, 10).all()
    assert set(cs["item_id"]) <= set(small.catalog["item_id"])
    # A session is one user and one query shown as a ranked list 1..n.
    sess = cs.groupby("session_id").agg(users=("user_id", "nunique"), queries=("query", "nunique"),
                                        n=("position", "size"), top=("position", "max"))
    assert (sess["users"] == 1).all() and (sess["queries"] == 1).all()
    assert (sess["n"] == sess["top"]).sum() >= 0.95 * len(sess)


def test_catalog_titles_look_like_products(small: GeneratedData) -> None:
    cat = small.catalog
    assert cat["item_id"].is_unique
    words = cat["title"].str.split().str.len()
    assert words.between(6, 15).all()
    assert cat["title"].nunique() > 0.9 * len(cat)


def test_heavy_duplication(small: GeneratedData) -> None:
    cs, _ = _good(small)
    pairs = len(cs[["query", "item_id"]].drop_duplicates())
    assert pairs < 0.6 * len(cs)
    assert cs["query"].value_counts().iloc[0] >= 3 * 10


def test_fixed_world_repeats_the_same_pairs() -> None:
    """generate.queries / generate.items: more rows over the same world are more sessions of the same
    pairs (same catalogue, queries and held-out pairs); sized from rows, the pairs grow with the rows."""
    short, long = generate(2000, 3, 7, queries=50, items=200), generate(8000, 3, 7, queries=50, items=200)
    assert short.catalog.equals(long.catalog) and short.heldout.equals(long.heldout)
    assert long.meta["world"] == {"queries": 50, "items": 200}
    per_pair = [len(cs) / len(cs[["query", "item_id"]].drop_duplicates()) for cs in (_good(short)[0], _good(long)[0])]
    assert per_pair[1] > 2.5 * per_pair[0]
    sized = generate(8000, 3, 7)
    assert sized.meta["world"]["queries"] == 200 and not sized.catalog.equals(long.catalog)


def test_rewrite_replaces_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(generate(1200, 2, 1), str(out))
    (out / "clickstream" / "stale.parquet").write_bytes(b"left over from an old run")
    write(generate(700, 2, 2), str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]     # no temp or old folders left beside it
    assert {p.name for p in out.iterdir()} == OUTPUT_ENTRIES
    assert [p.name for p in (out / "clickstream").iterdir()] == ["part-00000.parquet"]
    assert pq.read_table(out / "clickstream").num_rows == 700
    assert json.loads((out / "_generate_summary.json").read_text())["seed"] == 2


def test_generate_refuses_folders_it_did_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main as cli

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    assert cli(["generate", "--output", str(notes), "--rows", "300"]) == 2
    assert "not a clickweight output" in capsys.readouterr().err
    monkeypatch.chdir(notes)
    assert cli(["generate", "--output", ".", "--rows", "300", "--overwrite"]) == 2  # never the working directory
    assert "working directory" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in notes.iterdir()] == ["todo.txt"] and (notes / "todo.txt").read_text() == "keep me"
    assert cli(["generate", "--output", str(notes), "--rows", "300", "--overwrite"]) == 0  # the user said so
    assert pq.read_table(notes / "clickstream").num_rows == 300


def test_main_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--output", str(out), "--rows", "300", "--days", "2", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "300 rows" in printed
    summary = json.loads((out / "_generate_summary.json").read_text())
    assert summary["rows"] == 300 and summary["days"] == 2
    assert pq.read_table(out / "clickstream").num_rows == 300


def test_bad_arguments_rejected() -> None:
    with pytest.raises(ValueError):
        generate(0, 3, 7)
    with pytest.raises(ValueError):
        generate(100, 3, 7, heldout_query_fraction=1.0)
    with pytest.raises(ValueError, match="queries"):
        generate(100, 3, 7, queries=1)
