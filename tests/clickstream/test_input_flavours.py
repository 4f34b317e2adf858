"""Clickstreams as users write them: pandas and pyarrow defaults (nanosecond timestamps), timezone-
aware timestamps and INT96 (Hive / Impala) all reach the job with the right event_ts."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.score import extract

WALL = ["2026-03-01 10:00:00.123456789", "2026-03-02 23:59:59.000001999"]
EXPECTED_UTC = [dt.datetime(2026, 3, 1, 10, 0, 0, 123456), dt.datetime(2026, 3, 2, 23, 59, 59, 1)]


def rows(ts) -> pd.DataFrame:
    return pd.DataFrame({"event_id": ["e1", "e2"], "event_ts": ts, "query": ["drill", "saw"],
                         "item_id": ["1", "2"], "title": ["cordless drill", "miter saw"],
                         "position": [1, 2], "clicked": [1, 0]})


def event_ts(spark, path) -> list[dt.datetime]:
    df, _ = extract(spark, str(path), None)
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return [r["event_ts"] for r in df.orderBy("event_id").select("event_ts").collect()]


@pytest.mark.parametrize("writer", ["pandas", "pyarrow", "pyarrow_int96"])
def test_timestamps_of_every_flavour_are_read_exactly(spark, tmp_path, writer):
    frame = rows(pd.to_datetime(WALL))
    path = tmp_path / f"{writer}.parquet"
    if writer == "pandas":
        frame.to_parquet(path)  # pandas' default: TIMESTAMP(NANOS)
    else:
        pq.write_table(pa.Table.from_pandas(frame), path, use_deprecated_int96_timestamps=writer.endswith("int96"))
    assert event_ts(spark, path) == EXPECTED_UTC


def test_timezone_aware_nanoseconds_are_converted_to_utc(spark, tmp_path):
    frame = rows(pd.to_datetime(WALL).tz_localize("Europe/Berlin"))  # UTC+1 in March
    frame.to_parquet(tmp_path / "tz.parquet")
    assert event_ts(spark, tmp_path / "tz.parquet") == [t - dt.timedelta(hours=1) for t in EXPECTED_UTC]


def test_a_folder_of_pandas_files_is_read_whole(spark, tmp_path):
    folder = tmp_path / "clicks"
    folder.mkdir()
    rows(pd.to_datetime(WALL)).iloc[:1].to_parquet(folder / "a.parquet")
    rows(pd.to_datetime(WALL)).iloc[1:].to_parquet(folder / "b.parquet")
    assert event_ts(spark, folder) == EXPECTED_UTC


def test_outputs_read_back_with_their_written_schema_as_spark_infers_it(spark, tmp_path):
    """The score job's verify step reads its tables back with the schema it wrote (no inference job):
    that schema must be the one Spark infers from the files, partition column included."""
    from pyspark.sql import functions as F

    from udfs.clickstream.schema import read_back_schema, read_folder

    df = (spark.range(6).withColumn("query", F.concat(F.lit("q"), F.col("id").cast("string")))
               .withColumn("event_ts", F.to_timestamp(F.lit("2026-01-02 03:04:05")))
               .withColumn("event_date", F.to_date("event_ts") + (F.col("id") % 2).cast("int"))
               .withColumn("position", (F.col("id") + 1).cast("int"))
               .withColumn("clicked", (F.col("id") % 2).cast("byte"))
               .withColumn("weight", F.col("id") / 3.0).withColumn("p_model", (F.col("id") / 7.0).cast("float"))
               .withColumn("suspect", F.col("id") > 2)
               .withColumn("input_ids", F.array(F.lit(101), F.col("id").cast("int"), F.lit(102)))
               .withColumn("reason", F.when(F.col("id") > 3, F.lit("bad")).otherwise(F.lit(None))))
    rows = str(tmp_path / "rows")
    df.write.partitionBy("event_date").parquet(rows)
    given = spark.read.schema(read_back_schema(df.schema, ("event_date",))).parquet(rows)
    assert given.schema == spark.read.parquet(rows).schema
    assert sorted(map(tuple, given.collect())) == sorted(map(tuple, spark.read.parquet(rows).collect()))
    pairs = str(tmp_path / "_pairs")
    df.drop("event_date").repartition(2).write.parquet(pairs)
    assert read_folder(spark, pairs, df.drop("event_date").schema).schema == read_folder(spark, pairs).schema
