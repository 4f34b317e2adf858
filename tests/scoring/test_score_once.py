"""Two claims of the scoring phase, measured in real local Spark with the real pandas UDF
(udfs/scoring/bert.py make_score_udf, through udfs/scoring/spark.py score_pairs):

- the model loads once per Python worker (spark.python.worker.reuse), not once per task or Arrow
  batch: udfs/scoring/model_loader.py counts loads per process, CLICKWEIGHT_LOAD_LOG reports them;
- each distinct (query, title) pair is scored once, however often and wherever it repeats: the
  rows that went through the Python UDF are counted by Spark itself (pythonNumRowsReceived).
"""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from conftest import save_tiny_bert
from pyspark.sql import functions as F

from udfs.scoring.bert import ScoringSettings
from udfs.scoring.spark import score_pairs

QUERIES = ["drill", "cordless drill", "paint", "white paint", "garden hose", "door knob", "led bulb", "faucet"]
TITLES = ["dewalt 20v cordless drill kit", "interior paint white 1 gallon", "50 ft garden hose",
          "brass door knob set", "led bulb 60w soft white 4 pack", "kitchen sink faucet with sprayer",
          "ceramic toilet seat", "oak shelf"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> str:
    # Its own folder: no Python worker of an earlier test has this model cached.
    return save_tiny_bert(tmp_path_factory.mktemp("score_once_bert"))


def settings_for(folder: str) -> ScoringSettings:
    return ScoringSettings(scorer_path=folder, trainee_path=folder, batch_size=4, scorer_max_length=32,
                           train_max_length=32, torch_threads=1, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def clicks(spark):
    """64 distinct pairs, each 4 times (twice with stray whitespace), dealt round-robin over 6 partitions."""
    rows = [(f"{pad}{q}{pad}", f"{t}{pad}") for q in QUERIES for t in TITLES for pad in ("", " ", "", "  ")]
    return spark.createDataFrame(rows, "query string, title string").repartition(6), len(QUERIES) * len(TITLES)


def python_udf_rows(df) -> int:
    """Rows returned by the plan's Arrow Python UDF nodes (Spark's pythonNumRowsReceived metric), after
    the DataFrame has run."""
    def walk(node) -> int:
        name = node.nodeName()
        if name == "AdaptiveSparkPlan":
            return walk(node.executedPlan())
        if "QueryStage" in name:
            return walk(node.plan())
        total = 0
        if name == "ArrowEvalPython":
            total += int(node.metrics().apply("pythonNumRowsReceived").value())
        children = node.children().iterator()
        while children.hasNext():
            total += walk(children.next())
        return total

    return walk(df._jdf.queryExecution().executedPlan())


def test_each_distinct_pair_is_scored_once(spark, clicks, encoder_dir):
    valid, n_distinct = clicks
    # The duplicates really are spread: most pairs have rows in more than one input partition.
    spread = (valid.select(F.trim("query").alias("q"), F.trim("title").alias("t"), F.spark_partition_id().alias("p"))
                   .groupBy("q", "t").agg(F.countDistinct("p").alias("parts")).filter("parts > 1").count())
    assert valid.count() == 4 * n_distinct and spread > n_distinct // 2
    scored = score_pairs(valid, settings_for(encoder_dir), partitions=8).select("_q", "_t", "relevance")
    rows = scored.collect()
    keys = Counter((r["_q"], r["_t"]) for r in rows)
    assert len(rows) == n_distinct and max(keys.values()) == 1
    assert set(keys) == {(q, t) for q in QUERIES for t in TITLES}  # trimmed: whitespace variants are one pair
    # What the BERT UDF itself was fed and returned: one row per distinct pair, not per impression.
    assert python_udf_rows(scored) == n_distinct


def test_model_loads_once_per_python_worker(spark, clicks, encoder_dir, tmp_path):
    valid, n_distinct = clicks
    assert spark.sparkContext.getConf().get("spark.python.worker.reuse", "true") == "true"
    log = tmp_path / "loads.jsonl"
    env = spark.sparkContext.environment
    # sc.environment reaches the Python workers of UDFs created from now on (a fresh worker daemon
    # for the new environment); small Arrow batches give each task several batches.
    env["CLICKWEIGHT_LOAD_LOG"] = str(log)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
    try:
        scored = score_pairs(valid, settings_for(encoder_dir), partitions=12)
        out = scored.select("_q", "_t", "relevance", F.spark_partition_id().alias("part")).toPandas()
    finally:
        env.pop("CLICKWEIGHT_LOAD_LOG", None)
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(out) == n_distinct
    tasks = out["part"].nunique()  # scoring tasks that had pairs: each ran the UDF, several batches each
    assert tasks >= 8 and out.groupby("part").size().max() > 2
    loads = [json.loads(line) for line in log.read_text().splitlines()]
    loads = [x for x in loads if x["path"] == encoder_dir]
    per_pid = Counter(x["pid"] for x in loads)
    assert loads, "no load was reported: the test proved nothing"
    assert os.getpid() not in per_pid  # loaded in Spark's Python workers, not on the driver
    assert all(x["loader"] == "encoder" and x["loads_in_process"] == 1 for x in loads), loads
    assert set(per_pid.values()) == {1}, per_pid
    # Fewer loading workers than tasks: workers served several tasks each, and loaded once.
    assert len(per_pid) < tasks, (per_pid, tasks)
    print(f"{tasks} scoring tasks, {len(per_pid)} Python workers, one load each")


def test_score_job_runs_bert_and_weights_once(spark, encoder_dir, tmp_path):
    """The whole score job (every calibration, propensity, normalisation, write and read-back pass
    included) sends each distinct pair through BERT once and each row through the weight pass once:
    a persisted frame dropped too early makes Spark recompute it, BERT included, on every later pass."""
    from jobs import config
    from jobs.generate import generate, write
    from jobs.score import run_score

    data = tmp_path / "data"
    write(generate(rows=600, days=2, seed=11, malformed_fraction=0.02), str(data))
    cfg = config.load_config(overrides=[f"model.path={encoder_dir}", "scorer.batch_size=16", "model.max_length=32",
                                        "scorer.max_length=32", "weighting.strategy=information_gain"])
    log = tmp_path / "rows.jsonl"
    env = spark.sparkContext.environment
    env["CLICKWEIGHT_ROWS_LOG"] = str(log)
    try:
        summary = run_score(spark, f"{data}/clickstream", str(tmp_path / "out"), cfg)
    finally:
        env.pop("CLICKWEIGHT_ROWS_LOG", None)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    per_kind = Counter()
    for x in lines:
        per_kind[x["kind"]] += x["rows"]
    pairs = summary["pairs"]["pairs"]  # distinct trimmed (query, title) of the valid rows
    assert summary["rows_out"] > 500 and pairs < summary["rows_out"]
    assert per_kind["score"] == pairs, per_kind
    assert per_kind["weights"] == summary["rows_out"], per_kind
