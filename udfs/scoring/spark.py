"""The scoring phase of the score job on Spark: each distinct (query, title) scored once by the
BERT pandas UDF (udfs/scoring/bert.py), title quality for mlm_quality, joined back to the rows.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from udfs.clickstream.schema import MODEL_INPUT_COLUMNS, PAIRS_DIR, read_folder
from udfs.errors import UserError
from udfs.scoring import model_loader
from udfs.scoring.bert import MLMSettings, ScoringSettings, make_mlm_udf, make_score_udf
from udfs.weighting import strategies


def score_partitions(configured: int, rows: int | None, min_rows_per_partition: int) -> int:
    """The distinct pairs' partitions for the scoring UDF: the configured spark.sql.shuffle.partitions,
    fewer for a small input (one per scorer.min_rows_per_partition input rows, at least 2: a 10k-row job
    ran 2 s faster in 2 than in 8 on 2 cores). A function of the config and the input only, never of the
    cores: the partitions fix the scoring batches, and so the scores' last bits, on a laptop, a cluster
    and a rerun alike. rows None: the configured value."""
    if rows is None:
        return configured
    return min(configured, max(2, -(-rows // min_rows_per_partition)))


def distinct_pairs(valid: DataFrame) -> DataFrame:
    return valid.select(F.trim("query").alias("_q"), F.trim("title").alias("_t")).distinct()


def score_pairs(valid: DataFrame, settings: ScoringSettings, partitions: int, pairs: DataFrame | None = None
                ) -> DataFrame:
    """Each distinct (query, title) scored once: click logs repeat pairs heavily. `pairs`: the
    distinct (_q, _t) to score, when not all of valid's."""
    pairs = ((distinct_pairs(valid) if pairs is None else pairs)
                  # Partitioned by a derived bucket, not by (_q, _t): when `partitions` equals
                  # spark.sql.shuffle.partitions, Spark reuses distinct()'s (_q, _t) shuffle, and AQE
                  # may then coalesce it into fewer partitions, which changes the batches.
                  .withColumn("_b", F.xxhash64("_q", "_t"))
                  .repartition(partitions, "_b")
                  # A fixed order inside each partition fixes the Arrow batches and the padded
                  # micro-batches, so a pair's score does not depend on upstream partitioning,
                  # shuffle fetch order or task retries (dynamic padding changes the last bits).
                  .sortWithinPartitions("_q", "_t")
                  .drop("_b"))
    # Nondeterministic (it is, in the last bits, w.r.t. batch composition): otherwise Catalyst's
    # EliminateSorts drops the sort above, as a sort under a join through deterministic projections.
    udf = make_score_udf(settings).asNondeterministic()
    return pairs.withColumn("_s", udf("_q", "_t")).select("_q", "_t", "_s.*")


def scorer_id(path: str) -> str:
    """Folder name plus content fingerprint: names the scorer in provenance."""
    return f"{path.rstrip('/').rsplit('/', 1)[-1]}@{model_loader.model_fingerprint(path)}"


def mlm_settings(cfg: dict[str, Any]) -> MLMSettings:
    """The masked LM for mlm_quality; refuses a folder without an MLM head before any work."""
    path = model_loader.resolve_model_path(cfg["weighting"]["mlm_model"] or cfg["scorer"]["path"]
                                           or cfg["model"]["path"])
    if not model_loader.has_mlm_head(path):
        raise UserError(
            f"weighting.strategy={cfg['weighting']['strategy']} needs a masked-LM checkpoint (pseudo-log-"
            f"likelihood of titles), but {path} has no MLM head (config.json architectures lack *ForMaskedLM "
            "and the weights have no cls.predictions.*; the packaged all-MiniLM-L6-v2 is a bare BertModel): "
            "set weighting.mlm_model to a folder with a *ForMaskedLM checkpoint")
    sc = cfg["scorer"]
    return MLMSettings(path=path, batch_size=sc["batch_size"], max_length=sc["max_length"],
                       torch_threads=sc["torch_threads"], device=sc["device"])


def scoring_settings(cfg: dict[str, Any]) -> ScoringSettings:
    trainee = model_loader.resolve_model_path(cfg["model"]["path"])
    scorer = model_loader.resolve_model_path(cfg["scorer"]["path"] or cfg["model"]["path"])
    sc = cfg["scorer"]
    return ScoringSettings(scorer_path=scorer, trainee_path=trainee, batch_size=sc["batch_size"],
                           scorer_max_length=sc["max_length"], train_max_length=cfg["model"]["max_length"],
                           torch_threads=sc["torch_threads"], device=sc["device"], precision=sc["precision"])


def with_title_quality(scored_pairs: DataFrame, valid: DataFrame, mlm: MLMSettings, partitions: int) -> DataFrame:
    """Adds mlm_pll: text quality depends on the title only, so each distinct title is scored once."""
    titles = (valid.select(F.trim("title").alias("_t")).distinct()
                   .withColumn("_b", F.xxhash64("_t")).repartition(partitions, "_b")  # as in score_pairs
                   .sortWithinPartitions("_t").drop("_b"))
    pll = titles.withColumn("_m", make_mlm_udf(mlm).asNondeterministic()("_t")).select("_t", "_m.mlm_pll")
    return scored_pairs.join(pll, "_t", "inner")


def scoring_key(settings: ScoringSettings) -> dict[str, Any]:
    """Everything a pair's scores and trainee input depend on: equal keys, equal columns."""
    return {"scorer": scorer_id(settings.scorer_path), "trainee_tokenizer": scorer_id(settings.trainee_path),
            "scorer_max_length": settings.scorer_max_length, "train_max_length": settings.train_max_length,
            "precision": settings.precision}


def cached_scores(spark, path: str | None, settings: ScoringSettings, stats: dict[str, Any]) -> DataFrame | None:
    """The pair scores of an earlier score output made with the same scoring key (scorer.reuse_scores_from):
    the pipeline scores once per round and derives every strategy's weights from it."""
    if not path:
        return None
    summary_file = Path(path) / "_summary.json"
    key = scoring_key(settings)
    found = json.loads(summary_file.read_text()).get("scoring_key") if summary_file.is_file() else None
    if found != key:
        stats["reused_scores"] = {"from": path, "used": False, "why": "no summary" if found is None
                                  else "scored with another scorer, tokenizer, length or precision"}
        return None
    stats["reused_scores"] = {"from": path, "used": True}
    cols = ["relevance", "p_model", *MODEL_INPUT_COLUMNS]
    return read_folder(spark, f"{path}/{PAIRS_DIR}").select(
        F.col("query").alias("_q"), F.col("title").alias("_t"), *cols)


def score_rows(valid: DataFrame, cfg: dict[str, Any], settings: ScoringSettings, row_inputs: bool = True,
               rows_in: int | None = None, row_columns: Callable[[DataFrame], DataFrame] | None = None
               ) -> tuple[DataFrame, dict[str, Any], DataFrame | None]:
    """Valid rows with their pair's scores (persisted: every weighting pass reads it), what scoring
    them used (scoring key, reused scores, masked LM, valid rows), and the scored pairs.

    row_inputs: the trainee's token ids go onto every row (a row trainer streams them), and the third
    value is None. Otherwise they stay with the distinct pairs: the third value is the scored pairs,
    persisted, token ids included (the pair table takes them from there), and the rows, which every
    weighting pass reads, are a fraction of the width (on a Zipf log, ~15 rows a pair).
    row_columns: adds per-row columns the weighting reads (the click context) to the
    valid rows before the scores join them, so that the one persisted copy of the rows carries them."""
    stats: dict[str, Any] = {}
    # From the config and the input's size, not the session's value (which the job fits to the cores):
    # the pairs' partitions fix the scoring batches, hence the last bits of each score, so they are the
    # same on a laptop, a cluster or a rerun (docs/robustness.md).
    partitions = score_partitions(int(cfg["spark"]["conf"].get("spark.sql.shuffle.partitions", 8)),
                                  rows_in, cfg["scorer"]["min_rows_per_partition"])
    stats["score_partitions"] = partitions
    stats["scoring_key"] = scoring_key(settings)
    cached = cached_scores(valid.sparkSession, cfg["scorer"]["reuse_scores_from"], settings, stats)
    if cached is None:
        scored_pairs = score_pairs(valid, settings, partitions)
    else:  # only the pairs the earlier output lacks go through BERT
        needed = distinct_pairs(valid)
        missing = needed.join(cached.select("_q", "_t"), ["_q", "_t"], "left_anti")
        scored_pairs = (cached.join(needed, ["_q", "_t"], "inner")
                              .unionByName(score_pairs(valid, settings, partitions, pairs=missing)))
    if strategies.needs_mlm(cfg["weighting"]):
        mlm = mlm_settings(cfg)
        stats["mlm_model"] = scorer_id(mlm.path)
        scored_pairs = with_title_quality(scored_pairs, valid, mlm, partitions)
    kept_pairs = None
    if not row_inputs:  # read twice (scores onto the rows, token ids into the pair table): BERT runs once
        kept_pairs = scored_pairs.persist(StorageLevel.MEMORY_AND_DISK)
        # A shuffle join, as with the UDF's output before: a cached side small enough to broadcast would
        # be collected to the driver first (tests/commands/test_driver_result_size.py).
        scored_pairs = kept_pairs.drop(*MODEL_INPUT_COLUMNS).hint("merge")
    rows = row_columns(valid) if row_columns is not None else valid
    joined = (rows.withColumn("_q", F.trim("query")).withColumn("_t", F.trim("title"))
                   .join(scored_pairs, ["_q", "_t"], "inner").drop("_q", "_t")
                   .persist(StorageLevel.MEMORY_AND_DISK))
    # one pass counts the rows and those without a session (the click context reports them): no second job
    counts = joined.agg(F.count(F.lit(1)).alias("rows"),
                        F.sum(F.col("session_id").isNull().cast("long")).alias("no_session")).first()
    stats["rows_valid"], stats["rows_without_session"] = int(counts["rows"]), int(counts["no_session"] or 0)
    if stats["rows_valid"] == 0:
        joined.unpersist()
        if kept_pairs is not None:
            kept_pairs.unpersist()
        raise UserError("no valid rows to score: every input row was quarantined (see _quarantine)")
    return joined, stats, kept_pairs


def token_ids_by_pair(kept_pairs: DataFrame) -> DataFrame:
    """The trainee's token ids per trimmed (query, title), keyed as the pair table is. (Join it with a
    merge hint: broadcast, it would be collected to the driver, and it is a wide table.)"""
    return kept_pairs.select(F.col("_q").alias("query"), F.col("_t").alias("title"), *MODEL_INPUT_COLUMNS)

