"""clickweight score: validate -> score distinct pairs with BERT -> weight -> write atomically.

    spark-submit jobs/score.py --input clicks/ --output weighted/ [--conf conf/cluster.yaml]
    clickweight score --input clicks/ --output weighted/ --set weighting.strategy=none
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from functools import partial
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from jobs import config as config_mod
from jobs import inputs, table_output, tracking
from jobs.common import (
    HadoopFS,
    absolute,
    add_common_args,
    get_spark,
    log,
    print_json,
    setup_logging,
    versions,
)
from jobs.outputs import (
    MARKER,
    OutputRefused,
    abandon,
    check_output,
    commit_dir,
    forbidden_reason,
    marker,
    prepare_staging,
    qualify,
)
from jobs.report import warm_up_in_background, write_report_quietly
from udfs.aggregates import exact_avg
from udfs.clickstream import pairs as pairs_mod
from udfs.clickstream import schema
from udfs.job_phase import end_phases, start_phase
from udfs.scoring import model_loader
from udfs.scoring.spark import mlm_settings, score_rows, scorer_id, scoring_settings, token_ids_by_pair
from udfs.weighting import strategies
from udfs.weighting.settings import SamplingSettings, WeightingSettings
from udfs.weighting.spark import (  # noqa: F401  (importance_sample, normalise: the job's phases, re-exported)
    importance_sample,
    normalise,
    output_summary,
    weigh,
    with_click_context,
)

# ---------------------------------------------------------------- extract

def looks_like_path(source: str) -> bool:
    """An --input or --catalog is a path (file, folder, URL) when it has a slash, a scheme or ends in
    .parquet; anything else is a catalog / Hive table name."""
    return "/" in source or source.endswith(".parquet") or "://" in source


def input_location(spark: SparkSession, source: str) -> str:
    """Where an input's data lives: the path itself, or a catalog table's storage location (so the
    output guard protects it too); a missing path or unknown table is an InputError."""
    if not looks_like_path(source):
        if not spark.catalog.tableExists(source):
            raise inputs.InputError(f"--input {source}: no such table in the "
                                    f"{spark.conf.get('spark.sql.catalogImplementation')} catalog (a path needs a /)")
        return table_output.table_location(spark, source)
    path = absolute(source)
    if not HadoopFS(spark, path).exists(path):
        raise inputs.InputError(f"--input {source}: no such file or folder")
    return path


def check_inputs_early(source: str, catalog: str | None) -> None:
    """Local inputs, before Spark starts: a typo costs one line, not a Spark start and a Java trace."""
    for what, src in (("--input", source), ("--catalog", catalog)):
        if src and looks_like_path(src):
            inputs.check_parquet(src, what)


def check_output_early(output: str, sources: list[str]) -> None:
    """The output rules that need no Spark, before it starts; run_score checks again, on the paths as
    the job's Hadoop filesystem qualifies them."""
    reason = forbidden_reason(absolute(output), [absolute(s) for s in sources])
    where = qualify(absolute(output))
    if not reason and where.store[0] == "file" and os.path.exists(where.path) and not os.path.isdir(where.path):
        reason = "it is an existing file, not a folder"
    if reason:
        raise OutputRefused(f"refusing --output {output}: {reason}; choose a folder of its own")


def extract(spark: SparkSession, source: str, catalog: str | None) -> tuple[DataFrame, DataFrame | None]:
    """A Parquet path (file, folder, URI) or a catalog / Hive table name."""
    def read(src: str) -> DataFrame:
        return read_parquet(spark, absolute(src)) if looks_like_path(src) else spark.table(src)

    return read(source), (read(catalog) if catalog else None)


def nanosecond_columns(path: str) -> list[str]:
    """Timestamp columns stored as INT64 nanoseconds (pandas' and pyarrow's default), from a footer.
    (INT96 timestamps also surface in pyarrow as nanoseconds, but Spark reads those natively.)"""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    try:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        if not dataset.files:
            return []
        parquet_schema = pq.ParquetFile(dataset.files[0], filesystem=dataset.filesystem).schema
    except (OSError, ValueError, pa.ArrowException):
        return []  # a store pyarrow cannot list here: Spark reads it, or names what it cannot
    return [c.path for c in parquet_schema
            if c.physical_type == "INT64" and "timeUnit=nanoseconds" in str(c.logical_type)]


def read_parquet(spark: SparkSession, path: str) -> DataFrame:
    """spark.read.parquet, plus nanosecond timestamps: Spark 4.0 refuses them (PARQUET_TYPE_ILLEGAL),
    so they are read as int64 nanoseconds since the epoch (UTC) and turned into microsecond
    timestamps here (sub-microsecond digits are dropped; Spark has no finer type). INT96 (Hive,
    Impala) and microsecond timestamps, timezone-aware or not, Spark reads as they are."""
    nanos = nanosecond_columns(path)
    if nanos:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    try:
        df = spark.read.parquet(path)
    except Exception as exc:  # schema inference reads the footers: a folder of CSV, a broken file
        if type(exc).__name__ not in ("AnalysisException", "Py4JJavaError", "SparkRuntimeException"):
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise inputs.InputError(f"--input {path}: cannot be read as Parquet ({first})") from exc
    for name in (n for n in nanos if n in df.columns):  # top-level columns (nested ones stay as they are)
        # Integer division: a double cannot hold 1.7e18 ns to the microsecond.
        df = df.withColumn(name, F.timestamp_micros(F.expr(f"`{name}` div 1000")))
    return df


# Up to this many input files, the row count comes from their Parquet footers on the driver (a few
# milliseconds each here); past it, from a Spark count, which reads the footers in parallel (on an
# object store each footer is a round trip).
FOOTER_COUNT_MAX_FILES = 64


def input_rows(spark: SparkSession, df: DataFrame, source: str) -> tuple[int, str]:
    """The input's row count, independent of everything the job does to the rows (the reconciliation
    checks rows in = out + quarantined + sampled out against it), and where it came from."""
    if looks_like_path(source):
        files = df.inputFiles()
        if 0 < len(files) <= FOOTER_COUNT_MAX_FILES:
            return sum(rows for rows, _ in HadoopFS(spark, files[0]).parquet_footers_of(files)), "parquet footers"
    return df.count(), "count"


# ---------------------------------------------------------------- transform

def attach_catalog(df: DataFrame, catalog: DataFrame) -> DataFrame:
    """Fill title from the (item_id, title) catalog; a title in the clickstream wins."""
    # Several catalog titles for one item: take the smallest, deterministically, rather than
    # multiplying impressions by a join.
    cat = catalog.groupBy("item_id").agg(F.min("title").alias("_catalog_title"))
    if "title" not in df.columns:
        df = df.withColumn("title", F.lit(None).cast("string"))
    return (df.join(cat, "item_id", "left")
              .withColumn("title", F.coalesce(F.col("title"), F.col("_catalog_title")))
              .drop("_catalog_title"))


def validate(df: DataFrame, cfg: dict[str, Any], has_catalog: bool, persist: bool = False) -> schema.ValidSplit:
    schema.check_schema(df.schema, has_catalog=has_catalog)
    df = schema.conform(df)
    inp = cfg["input"]
    now = dt.datetime.now(dt.timezone.utc)
    reasons = schema.row_reasons(
        df, inp["max_title_chars"], inp["max_query_chars"], inp["max_position"],
        min_event_ts=inp["min_event_ts"],
        max_event_ts=(now + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
    )
    return schema.split_valid(df, reasons, persist)


def transform(df: DataFrame, cfg: dict[str, Any], run_id: str, catalog: DataFrame | None = None,
              rows_in: int | None = None
              ) -> tuple[DataFrame, DataFrame, dict[str, Any], list[DataFrame], DataFrame | None]:
    """Validated, scored, weighted rows; quarantined rows; the statistics the weights used; the
    persisted frames the rows are computed from, which the caller releases (release()) after writing;
    and the trainee's token ids per pair for the pair table (None when the rows carry them:
    output.row_model_inputs).
    """
    start_phase(df.sparkSession, "validate and score pairs")
    if catalog is not None:
        df = attach_catalog(df, catalog)
    valid, quarantined, checked = validate(df, cfg, has_catalog=catalog is not None, persist=True)
    cached = [checked] if checked is not None else []  # persisted; released once the output is written
    settings = scoring_settings(cfg)
    stats: dict[str, Any] = {"scorer_model": scorer_id(settings.scorer_path)}
    started = time.perf_counter()
    try:
        weighting = WeightingSettings.from_config(cfg)
        # the click context's window runs before the scores join the rows: one persisted copy carries it
        context = partial(with_click_context, by=weighting.em_click_context_by) if weighting.click_context else None
        scored, scoring_stats, kept_pairs = score_rows(valid, cfg, settings, config_mod.row_model_inputs(cfg),
                                                       rows_in, context)
        cached.extend([f for f in (kept_pairs, scored) if f is not None])
        rows_without_session = scoring_stats.pop("rows_without_session")
        stats.update(scoring_stats)
        stats["timings_s"] = {"validate_and_score_pairs": round(time.perf_counter() - started, 3)}
        log.info("score: validate and score pairs done in %.1fs", stats["timings_s"]["validate_and_score_pairs"])
        weights = weigh(scored, weighting, SamplingSettings.from_config(cfg),
                        stats["rows_valid"], model_loader.is_cross_encoder(settings.scorer_path),
                        rows_without_session)
    except BaseException:
        release(cached)
        raise
    cached.extend(weights.persisted)
    stats.update(weights.stats)
    stats["timings_s"].update(weights.timings_s)
    weighted = weights.rows
    # Stable per-query bucket: training holds out whole queries (bucket < eval_fraction * 1000).
    bucket = F.pmod(F.xxhash64(F.lower(F.trim("query"))), F.lit(1000)).cast("int")
    out = weighted.withColumns({"event_date": F.to_date("event_ts"), "query_bucket": bucket,
                                "scorer_model": F.lit(stats["scorer_model"]),
                                "config_hash": F.lit(config_mod.config_hash(cfg)), "run_id": F.lit(run_id)})
    inputs = None if kept_pairs is None else token_ids_by_pair(kept_pairs)
    return out, quarantined.withColumn("run_id", F.lit(run_id)), stats, cached, inputs


def release(cached: list[DataFrame]) -> None:
    """Unpersist transform()'s frames, the last persisted first."""
    for frame in reversed(cached):
        frame.unpersist()


# ---------------------------------------------------------------- load

def parquet_layout(fs: HadoopFS, pattern: str) -> dict[str, int]:
    """Files, row groups and rows of the data files matching `pattern`, from their footers (no data
    read), through the filesystem that wrote them."""
    footers = fs.parquet_footers(pattern)
    return {"files": len(footers), "row_groups": sum(g for _, g in footers), "rows": sum(r for r, _ in footers)}


def write_pairs(scored: DataFrame, path: str, files: int, position_buckets: int,
                inputs: DataFrame | None = None, weight_total: float | None = None
                ) -> tuple[dict[str, Any], StructType]:
    """The compacted training table (udfs/clickstream/pairs.py) in `files` Parquet files; its pairs and
    the mean weight_sum that scales `weight` to mean 1 over pairs, and the schema written.
    `inputs`: the token ids per pair (one row per distinct pair of the rows), when the rows do not carry
    them. `weight_total`: the rows' summed weight when known before writing (normalised weights, every
    scored pair still in the rows): the pairs are then counted from `inputs` (cached) and the table is
    written in one pass; else the pairs are aggregated, cached and totalled first."""
    pairs = pairs_mod.compact_pairs(scored, position_buckets)
    if inputs is not None:
        # never broadcast: a broadcast side is collected to the driver first, and this one is wide
        pairs = pairs.join(inputs.hint("merge"), list(pairs_mod.PAIR_KEY), "inner")

    def write(frame: DataFrame, mean_weight_sum: float) -> StructType:
        table = pairs_mod.with_pair_weight(frame, mean_weight_sum or 1.0)
        # by query: a query's pairs share a file (the listwise objective's batches need them together)
        (table.repartition(files, F.xxhash64("query")).sortWithinPartitions("query", "title")
              .write.mode("overwrite").parquet(path))
        return table.schema

    if inputs is not None and weight_total is not None:
        n_pairs = inputs.count()
        totals = {"pairs": n_pairs, "mean_weight_sum": weight_total / max(n_pairs, 1), "totals_from": "rows"}
        return totals, write(pairs, totals["mean_weight_sum"])
    pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = {**pairs_mod.pair_totals(pairs), "totals_from": "pair aggregate"}
        written = write(pairs, totals["mean_weight_sum"])
    finally:
        pairs.unpersist()
    return totals, written


def load(scored: DataFrame, quarantined: DataFrame, output: str, cfg: dict[str, Any],
         run_id: str, summary: dict[str, Any], pair_inputs: DataFrame | None = None) -> dict[str, Any]:
    """Write into a staging folder beside `output`, verify, then swap it into place."""
    spark = scored.sparkSession
    t0 = time.perf_counter()
    output = absolute(output)
    fs = HadoopFS(spark, output)
    staged = prepare_staging(fs, output, run_id)
    fs.delete(staged)
    log.info("score: writing rows, quarantine and pairs")
    try:
        summary = _write_and_verify(scored, quarantined, staged, cfg, summary, t0, pair_inputs)
    except BaseException:
        abandon(fs, staged)  # nothing of this run stays behind; the previous output is untouched
        raise
    fs.write_text(f"{staged}/_config.yaml", config_mod.dump_text(cfg))
    fs.write_text(f"{staged}/_summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    fs.write_text(f"{staged}/{MARKER}", marker("score", run_id, output, config_hash=summary.get("config_hash"),
                                               input=summary.get("input"), rows_out=summary["rows_out"]))
    commit_dir(fs, staged, output, run_id)
    return summary


def _write_and_verify(scored: DataFrame, quarantined: DataFrame, staged: str, cfg: dict[str, Any],
                      summary: dict[str, Any], t0: float, pair_inputs: DataFrame | None = None) -> dict[str, Any]:
    """Write rows, quarantine and pairs into `staged`, read them back and reconcile every count."""
    spark = scored.sparkSession
    ranks = cfg["train"]["num_processes"]
    files_per_date = cfg["output"]["files_per_date"] or 2 * ranks
    start_phase(spark, "write rows")
    (scored.repartition(files_per_date, "event_id")
           .sortWithinPartitions("event_date", "event_id")
           .write.mode("overwrite").partitionBy("event_date").parquet(staged))
    start_phase(spark, "write quarantine")
    quarantined.repartition(1).write.mode("overwrite").parquet(f"{staged}/_quarantine")
    pair_files = ranks * cfg["output"]["min_row_groups_per_rank"]
    start_phase(spark, "write pair table")
    # Normalised weights have mean 1 over the rows (to 1e-9), so the rows' total is their count; with no
    # row sampled out every scored pair is in the rows: the pair table needs no totals pass of its own.
    weight_total = (float(summary["rows_valid"]) if cfg["weighting"]["normalize"]
                    and not summary.get("rows_sampled_out") else None)
    summary["pairs"], pair_schema = write_pairs(scored, f"{staged}/{schema.PAIRS_DIR}", pair_files,
                                                cfg["output"]["position_buckets"], pair_inputs, weight_total)
    timings = summary.setdefault("timings_s", {})
    timings["write"] = round(time.perf_counter() - t0, 3)
    log.info("score: written in %.1fs; reading back to reconcile counts", timings["write"])
    t0 = time.perf_counter()
    start_phase(spark, "verify")

    # Each table read back with the schema it was written with: no Spark job to infer it from a footer.
    # One pass over what was written: the output's row count with the weight and signal summaries.
    rows_schema = schema.read_back_schema(scored.schema, ("event_date",))
    summary["weights"], summary["signals"] = output_summary(spark.read.schema(rows_schema).parquet(staged))
    summary["rows_out"] = summary["weights"]["rows"]
    # One pass over the written quarantine: per-reason counts (few distinct reasons) and their total.
    quarantine = schema.read_folder(spark, f"{staged}/_quarantine", quarantined.schema)
    summary["quarantine_reasons"] = {r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()}
    summary["rows_quarantined"] = sum(summary["quarantine_reasons"].values())
    fs = HadoopFS(spark, staged)
    summary["layout"] = parquet_layout(fs, f"{staged}/event_date=*/*.parquet")
    if summary["layout"]["rows"] != summary["rows_out"]:
        raise RuntimeError(f"the Parquet footers hold {summary['layout']['rows']} rows but reading the "
                           f"output gave {summary['rows_out']}; nothing was committed")
    pair_rows = parquet_layout(fs, f"{staged}/{schema.PAIRS_DIR}/*.parquet")["rows"]
    if pair_rows != summary["pairs"]["pairs"]:
        raise RuntimeError(f"the pair table's Parquet footers hold {pair_rows} rows but it has "
                           f"{summary['pairs']['pairs']} pairs; nothing was committed")
    # The pair table as written: its impressions must be the row table's rows.
    written = schema.read_folder(spark, f"{staged}/{schema.PAIRS_DIR}", pair_schema).agg(
        F.sum("impressions").alias("impressions"), exact_avg("weight").alias("mean_weight")).first()
    summary["pairs"]["impressions"] = int(written["impressions"] or 0)
    summary["pairs"]["mean_weight"] = float(written["mean_weight"] or 0.0)
    need = ranks * cfg["output"]["min_row_groups_per_rank"]
    if summary["layout"]["row_groups"] < need:
        log.warning("only %d row groups for %d training ranks (want >= %d): raise output.files_per_date",
                    summary["layout"]["row_groups"], ranks, need)
    sampled_out = summary.get("rows_sampled_out", 0)
    summary["pairs"]["compaction_ratio"] = summary["rows_out"] / max(1, summary["pairs"]["pairs"])
    if summary["pairs"]["impressions"] != summary["rows_out"]:
        raise RuntimeError(f"pair table holds {summary['pairs']['impressions']} impressions but the row table "
                           f"{summary['rows_out']} rows; nothing was committed")
    if summary["rows_in"] != summary["rows_out"] + summary["rows_quarantined"] + sampled_out:
        raise RuntimeError(
            f"counts do not reconcile: in={summary['rows_in']} out={summary['rows_out']} "
            f"quarantined={summary['rows_quarantined']} sampled_out={sampled_out}; nothing was committed")
    timings["verify"] = round(time.perf_counter() - t0, 3)
    return summary


# ---------------------------------------------------------------- run

def run_score(spark: SparkSession, source: str, output: str, cfg: dict[str, Any],
              overwrite: bool = False) -> dict[str, Any]:
    run_id = cfg["run_id"] or config_mod.new_run_id()
    cfg = {**cfg, "run_id": run_id}
    t0 = time.time()
    if strategies.needs_mlm(cfg["weighting"]):
        mlm_settings(cfg)  # refuse a checkpoint without an MLM head before any Spark work
    sources = [source] + [p for p in (cfg["input"]["catalog"], cfg["scorer"]["reuse_scores_from"]) if p]
    check_output(HadoopFS(spark, absolute(output)), absolute(output), "score",
                 [input_location(spark, s) for s in sources], overwrite)
    df, catalog = extract(spark, source, cfg["input"]["catalog"])
    settings = scoring_settings(cfg)
    start_phase(spark, "count input rows")
    rows_in, rows_in_from = input_rows(spark, df, source)
    before = spark.conf.get("spark.sql.shuffle.partitions")
    partitions = config_mod.shuffle_partitions(int(before), rows_in, cfg["spark"]["max_rows_per_partition"],
                                               cfg["spark"]["min_rows_per_partition"],
                                               spark.sparkContext.defaultParallelism)
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    log.info("score: %d rows in; validating, then scoring distinct (query, title) pairs with %s "
             "(%d shuffle partitions)", rows_in, scorer_id(settings.scorer_path), partitions)
    try:
        scored, quarantined, stats, cached, pair_inputs = transform(df, cfg, run_id, catalog, rows_in)
        summary = {
            "run_id": run_id, "input": source, "output": output, "rows_in": rows_in,
            "strategy": cfg["weighting"]["strategy"], "config_hash": config_mod.config_hash(cfg),
            "rows_in_from": rows_in_from, "scorer_path": settings.scorer_path,
            "trainee_tokenizer": settings.trainee_path, "shuffle_partitions": partitions,
            "versions": versions(), **stats,
        }
        try:
            summary = load(scored, quarantined, output, cfg, run_id, summary, pair_inputs)
        finally:
            release(cached)
    finally:
        end_phases(spark)
        spark.conf.set("spark.sql.shuffle.partitions", before)  # the session outlives the job (pipeline, tests)
    summary["seconds"] = round(time.time() - t0, 2)
    log.info("score: in=%d out=%d quarantined=%d in %.1fs -> %s", summary["rows_in"], summary["rows_out"],
             summary["rows_quarantined"], summary["seconds"], output)
    return summary


def run_score_to_table(spark: SparkSession, source: str, root: str, table: str, cfg: dict[str, Any],
                       overwrite: bool = False) -> dict[str, Any]:
    """Score into a new version folder under `root`, then switch catalog table `table` to it
    (jobs/table_output.py); old versions beyond output.table_versions_kept are removed."""
    run_id = cfg["run_id"] or config_mod.new_run_id()
    cfg = {**cfg, "run_id": run_id}
    root = absolute(root)
    fs = HadoopFS(spark, root)
    sources = [source] + [p for p in (cfg["input"]["catalog"], cfg["scorer"]["reuse_scores_from"]) if p]
    props = table_output.check_table(spark, fs, table, root, [input_location(spark, s) for s in sources], overwrite)
    table_output.mark_root(fs, root, table, run_id)
    version = table_output.new_version(root, run_id)
    summary = run_score(spark, source, version, cfg)
    action = table_output.publish(spark, table, version, root, run_id, existed=props is not None)
    removed = table_output.prune(fs, root, cfg["output"]["table_versions_kept"], version)
    summary["table"] = table_output.table_summary(table, version, action, removed)
    log.info("score: table %s %s -> %s (%d old versions removed)", table, action, version, len(removed))
    return summary


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="clickweight score", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="clickstream Parquet path or table name")
    p.add_argument("--output", required=True, help="output folder (replaced atomically); with --output-table, "
                   "the folder that holds the table's versions")
    p.add_argument("--output-table", metavar="DB.NAME",
                   help="also publish the output as this catalog table (Hive metastore), switched atomically")
    p.add_argument("--catalog", help="(item_id, title) Parquet path or table")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even if it is not a clickweight score output")
    add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.catalog:
        overrides.append(f"input.catalog={args.catalog}")
    if args.output_table:
        overrides.append("spark.conf.spark.sql.catalogImplementation=hive")
    cfg = config_mod.load_config(args.conf, overrides)
    check_inputs_early(args.input, cfg["input"]["catalog"])
    check_output_early(args.output, [s for s in (args.input, cfg["input"]["catalog"]) if s and looks_like_path(s)])
    spark = get_spark(cfg)
    warm_up_in_background()
    with tracking.run(cfg, "score", input=args.input) as ml:
        if args.output_table:
            summary = run_score_to_table(spark, args.input, args.output, args.output_table, cfg, args.overwrite)
        else:
            summary = run_score(spark, args.input, args.output, cfg, overwrite=args.overwrite)
        tracking.log_score(ml, summary)
    write_report_quietly(summary["table"]["location"] if "table" in summary else summary["output"])
    print_json({k: summary[k] for k in ("output", "rows_in", "rows_out", "rows_quarantined", "rows_sampled_out",
                                        "strategy", "seconds")} | {"weights": summary["weights"]}
               | ({"table": summary["table"]} if "table" in summary else {}))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("score", main))
