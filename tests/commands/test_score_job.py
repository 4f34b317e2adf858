"""The score job in real local Spark on generated rows, malformed ones included."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from training.reader import check_columns
from udfs.clickstream.schema import MODEL_INPUT_COLUMNS, PAIRS_DIR, SchemaError
from udfs.errors import UserError
from udfs.scoring.model_loader import default_model_path


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("raw") / "data"
    write(generate(rows=600, days=2, seed=11, malformed_fraction=0.05), str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def scored(spark, raw_dir, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored") / "weighted"
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=combined",
                                                      "weighting.w_max=4.0"))
    before = spark.conf.get("spark.sql.shuffle.partitions")
    summary = run_score(spark, f"{raw_dir}/clickstream", str(out), cfg)
    summary["session_partitions"] = (before, spark.conf.get("spark.sql.shuffle.partitions"))
    return out, summary


def test_counts_reconcile_and_bad_rows_are_quarantined_with_reasons(scored, raw_dir):
    out, summary = scored
    truth = pd.read_parquet(f"{raw_dir}/truth.parquet")
    quarantine = pd.read_parquet(out / "_quarantine")
    assert summary["rows_in"] == 600 and summary["rows_in_from"] == "parquet footers"
    assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"]
    assert len(quarantine) == summary["rows_quarantined"] == truth["malformed_kind"].notna().sum()
    assert (quarantine["reason"] != "").all()
    expected = {"null_query": "null_query", "empty_query": "empty_query", "null_title": "null_title",
                "empty_title": "empty_title", "negative_position": "position_out_of_range",
                "zero_position": "position_out_of_range", "clicked_2": "clicked_not_0_1",
                "clicked_negative": "clicked_not_0_1", "long_title": "title_too_long",
                "null_event_ts": "null_event_ts", "null_item_id": "null_item_id",
                "duplicate_event_id": "duplicate_event_id"}
    reasons = set(";".join(quarantine["reason"]).split(";"))
    for kind in truth["malformed_kind"].dropna().unique():
        assert expected[kind] in reasons, kind
    written = json.loads((out / "_summary.json").read_text())
    assert written["rows_quarantined"] == summary["rows_quarantined"]


def test_weights_finite_positive_clipped_mean_one(scored):
    out, _ = scored
    frame = pd.read_parquet(out)
    w = frame["weight"].to_numpy()
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    assert w.min() >= 0.1 and w.max() <= 4.0
    assert w.mean() == pytest.approx(1.0, abs=1e-6)
    assert w.std() > 0.01  # a real strategy, not uniform


def test_output_layout_model_input_and_provenance(spark, scored, tiny_model_dir):
    out, summary = scored
    frame = pd.read_parquet(out)
    assert {"event_date", "query_bucket", "scorer_model", "config_hash", "run_id", "relevance", "p_model",
            "loss", "info_gain", "propensity", "prior_logit"} <= set(frame.columns)
    assert sorted(p.name for p in out.glob("event_date=*")) == ["event_date=2026-01-01", "event_date=2026-01-02"]
    # The trainee's token ids live once per pair in the pair table (train.compact_pairs, the default);
    # the rows carry none (output.row_model_inputs=auto), and a row trainer is told how to get them.
    assert not set(MODEL_INPUT_COLUMNS) & set(frame.columns)
    pairs = pd.read_parquet(out / PAIRS_DIR)
    assert set(MODEL_INPUT_COLUMNS) <= set(pairs.columns)
    assert {len(x) for x in pairs["input_ids"]} == {32}
    assert pairs["input_len"].between(4, 32).all()
    with pytest.raises(UserError, match="output.row_model_inputs=true"):
        check_columns(str(out), ("input_ids", "weight"))
    assert frame["run_id"].nunique() == 1 and frame["scorer_model"].iloc[0].startswith(Path(tiny_model_dir).name)
    assert summary["layout"]["row_groups"] >= 4  # 2 ranks x min_row_groups_per_rank
    # a small input: one partition a core (local[2,3]), not the session's spark.sql.shuffle.partitions, which
    # the job leaves as it found it (the rule: tests/commands/test_config.py); the pairs' scoring partitions
    # from the config and the row count only (600 rows: 2)
    assert summary["shuffle_partitions"] == spark.sparkContext.defaultParallelism == 2
    assert summary["session_partitions"][0] == summary["session_partitions"][1]
    assert summary["score_partitions"] == 2
    assert (out / "_config.yaml").exists()
    assert frame["p_model"].between(0, 1).all() and frame["propensity"].between(0.05, 1).all()


def test_none_is_exactly_uniform_and_rerun_replaces_cleanly(spark, raw_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "w"
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=none"))
    first = run_score(spark, f"{raw_dir}/clickstream", str(out), cfg)
    a = pd.read_parquet(out).sort_values("event_id").reset_index(drop=True)
    assert (a["weight"] == 1.0).all()
    second = run_score(spark, f"{raw_dir}/clickstream", str(out), cfg)
    b = pd.read_parquet(out).sort_values("event_id").reset_index(drop=True)
    assert first["run_id"] != second["run_id"] and b["run_id"].iloc[0] == second["run_id"]
    cols = ["event_id", "weight", "relevance", "p_model"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert sorted(os.listdir(tmp_path)) == ["w"]  # no staging or old copies left behind


def test_schema_damage_fails_fast_naming_the_column(spark, raw_dir, tiny_model_dir, tmp_path):
    df = spark.read.parquet(f"{raw_dir}/clickstream")
    df.drop("position").withColumn("clicked", df.clicked.cast("string")).write.parquet(str(tmp_path / "bad"))
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir))
    with pytest.raises(SchemaError, match="missing required column 'position'.*'clicked' has type string"):
        run_score(spark, str(tmp_path / "bad"), str(tmp_path / "out"), cfg)
    assert not (tmp_path / "out").exists()


def test_catalog_supplies_missing_titles(spark, raw_dir, tiny_model_dir, tmp_path):
    df = spark.read.parquet(f"{raw_dir}/clickstream").drop("title").limit(200)
    df.write.parquet(str(tmp_path / "no_title"))
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, f"input.catalog={raw_dir}/catalog.parquet"))
    summary = run_score(spark, str(tmp_path / "no_title"), str(tmp_path / "out"), cfg)
    assert summary["rows_in"] == 200 == summary["rows_out"] + summary["rows_quarantined"]
    assert "null_title" not in summary["quarantine_reasons"]


def save_tiny_cross_encoder(folder: Path) -> str:
    """A one-logit BertForSequenceClassification (what a cross-encoder checkpoint is), random but
    seeded; large initial weights so that p differs clearly between pairs (BERT's default 0.02
    init gives nearly the same logit to every input)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1,
                     initializer_range=0.5)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.fill_(-1.0)
    model.save_pretrained(folder)
    src = Path(default_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return str(folder)


def test_cross_encoder_scorer_gives_model_probability(spark, raw_dir, tiny_model_dir, tmp_path):
    """A cross-encoder folder as scorer: p_model is its click probability sigmoid(logit) for the
    (query, title) pair, not a calibrated cosine. The expected value is an independent plain
    transformers forward of each pair alone (no padding, no batching, none of udfs/scoring/bert.py)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cross = save_tiny_cross_encoder(tmp_path / "cross")
    # fp32: precision=auto autocasts to bf16 on CPUs with native bf16, which moves p by ~1e-2.
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, f"scorer.path={cross}",
                                                      "scorer.precision=fp32", "weighting.strategy=confidence"))
    summary = run_score(spark, f"{raw_dir}/clickstream", str(tmp_path / "out"), cfg)
    assert summary["scorer_kind"] == "cross_encoder" and "calibration" not in summary
    frame = pd.read_parquet(tmp_path / "out").sort_values("event_id").head(40)
    tokenizer = AutoTokenizer.from_pretrained(cross, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(cross, local_files_only=True).eval()
    expected = []
    with torch.no_grad():
        for q, t in zip(frame["query"], frame["title"]):
            enc = tokenizer(q.strip(), t.strip(), truncation=True, max_length=32, return_tensors="pt")
            expected.append(float(torch.sigmoid(model(**enc).logits[0, 0])))
    expected = np.array(expected)
    assert expected.std() > 0.05  # pairs get clearly different probabilities: the comparison has teeth
    np.testing.assert_allclose(frame["p_model"].to_numpy(), expected, atol=1e-5)


def test_the_input_row_count_from_footers_equals_sparks_count(spark, tmp_path, monkeypatch):
    """The input count that the reconciliation checks against: from the files' footers when few (no Spark
    job), else a Spark count; the same number either way, on a partitioned folder of several row groups
    with a _SUCCESS file and a hidden file that Spark does not read."""
    from jobs import score

    frame = pd.DataFrame({"d": np.repeat(["2026-01-01", "2026-01-02", "2026-01-03"], 700), "x": np.arange(2100)})
    folder = tmp_path / "in"
    for day, part in frame.groupby("d"):
        (folder / f"d={day}").mkdir(parents=True)
        part.drop(columns="d").to_parquet(folder / f"d={day}" / "part-0.parquet", row_group_size=300)
    (folder / "_SUCCESS").write_text("")
    part.drop(columns="d").to_parquet(folder / "d=2026-01-03" / ".hidden.parquet")
    df = spark.read.parquet(str(folder))
    assert df.count() == 2100
    assert score.input_rows(spark, df, str(folder)) == (2100, "parquet footers")
    monkeypatch.setattr(score, "FOOTER_COUNT_MAX_FILES", 2)
    assert score.input_rows(spark, df, str(folder)) == (2100, "count")


@pytest.mark.parametrize("sets, totals_from", [
    (["weighting.strategy=combined", "weighting.w_max=4.0"], "rows"),           # normalised, nothing sampled out
    (["weighting.strategy=combined", "weighting.normalize=false"], "pair aggregate"),
])
def test_pair_weights_have_mean_one_whichever_way_the_totals_come(spark, raw_dir, tiny_model_dir, tmp_path, sets,
                                                                  totals_from):
    """The pair table's weight is weight_sum over its mean: from the rows' count when the weights are
    normalised and every scored pair is still in the rows (no totals pass), else from a pass over the
    pairs. Either way the written table reconciles with the rows."""
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, *sets))
    summary = run_score(spark, f"{raw_dir}/clickstream", str(tmp_path / "out"), cfg)
    pairs = pd.read_parquet(tmp_path / "out" / PAIRS_DIR)
    rows = pd.read_parquet(tmp_path / "out")
    assert summary["pairs"]["totals_from"] == totals_from
    assert summary["pairs"]["pairs"] == len(pairs) and summary["pairs"]["impressions"] == len(rows)
    np.testing.assert_allclose(pairs["weight"], pairs["weight_sum"] / pairs["weight_sum"].mean(), rtol=1e-8)
    assert pairs["weight"].mean() == pytest.approx(1.0, rel=1e-8)
    assert summary["pairs"]["mean_weight"] == pytest.approx(1.0, rel=1e-8)
    assert pairs["weight_sum"].sum() == pytest.approx(rows["weight"].sum(), rel=1e-9)
