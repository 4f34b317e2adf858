"""The data contract: input columns, their types, and the row-level validation rules.

Schema-level damage (a missing required column, a wrong type) raises SchemaError before any
work; row-level damage produces a `reason` (all failing rules, ';'-joined) and the row goes to
quarantine. Duplicate event_ids: among otherwise valid rows sharing an event_id, the one with the
earliest event_ts (ties: smallest hash of the whole row) is kept; the others are quarantined as
`duplicate_event_id`. The rule depends only on row content, so it is partitioning-independent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs.errors import UserError

INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
NUMERIC = INTEGRAL + (T.FloatType, T.DoubleType, T.DecimalType)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    accepted: tuple[type, ...]
    required: bool
    spark_type: T.DataType  # the type the column is cast to after validation
    doc: str


INPUT_COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("event_id", (T.StringType,), True, T.StringType(), "unique id of the impression"),
    ColumnSpec("event_ts", (T.TimestampType, T.TimestampNTZType), True, T.TimestampType(), "when shown"),
    ColumnSpec("user_id", (T.StringType,), False, T.StringType(), "who"),
    ColumnSpec("session_id", (T.StringType,), False, T.StringType(), "which search session"),
    ColumnSpec("query", (T.StringType,), True, T.StringType(), "the search text typed"),
    ColumnSpec("item_id", (T.StringType,), True, T.StringType(), "product id"),
    ColumnSpec("title", (T.StringType,), True, T.StringType(), "product title (or from --catalog)"),
    ColumnSpec("position", INTEGRAL, True, T.IntegerType(), "1-based rank shown"),
    ColumnSpec("clicked", INTEGRAL + (T.BooleanType,), True, T.IntegerType(), "click label 0/1"),
    ColumnSpec("added_to_cart", INTEGRAL + (T.BooleanType,), False, T.IntegerType(), "0/1"),
    ColumnSpec("purchased", INTEGRAL + (T.BooleanType,), False, T.IntegerType(), "0/1"),
    ColumnSpec("dwell_ms", NUMERIC, False, T.LongType(), "time on product page after a click"),
)
COLUMN_BY_NAME = {c.name: c for c in INPUT_COLUMNS}
REQUIRED = tuple(c.name for c in INPUT_COLUMNS if c.required)

# Tokenised trainee input: the cross-encoder's pair, and the bi-encoder's query and title apart.
MODEL_INPUT_COLUMNS = ("input_ids", "token_type_ids", "input_len", "query_ids", "query_len", "title_ids",
                       "title_len")
PROVENANCE_COLUMNS = ("scorer_model", "config_hash", "run_id")
SPLIT_COLUMN = "query_bucket"  # pmod(xxhash64(lower(trim(query))), 1000): held-out split by query
PAIRS_DIR = "_pairs"  # the compacted training table inside a score output (udfs/clickstream/pairs.py)


def read_folder(spark, folder: str, schema: T.StructType | None = None) -> DataFrame:
    """A Parquet folder of the output (`_pairs`, `_quarantine`) read by naming its data files: given
    a root whose own name starts with '_', Spark logs 'All paths were ignored' (it reads it anyway).
    `schema`: the schema it was written with (no Spark job to infer it from a footer)."""
    jvm_path = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(folder)
    fs = jvm_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    files = [st.getPath().toString() for st in fs.listStatus(jvm_path)
             if not st.getPath().getName().startswith(("_", "."))]
    if not files:
        raise FileNotFoundError(f"no data files in {folder}")
    reader = spark.read if schema is None else spark.read.schema(read_back_schema(schema))
    return reader.parquet(*files)


def read_back_schema(schema: T.StructType, partition_columns: tuple[str, ...] = ()) -> T.StructType:
    """The schema Spark reads a frame back with after writing it as Parquet: every column nullable,
    the `partition_columns` (partitionBy) last, in their order."""
    fields = [f for f in schema.fields if f.name not in partition_columns]
    fields += [schema[c] for c in partition_columns]
    return T.StructType([T.StructField(f.name, f.dataType, True, f.metadata) for f in fields])


# What the trainer reads besides the trainee's own input columns: row table / pair table.
ROW_TARGET_COLUMNS = ("clicked", "weight", "p_model", "query_bucket")
PAIR_TARGET_COLUMNS = ("label", "weight", "impressions", "clicks", "p_model", "query_bucket")
# A number per trimmed query in the pair table: the listwise objective groups a batch's pairs by it
# (the trainer reads numeric columns only). The pair table's files are partitioned by query, so a
# query's pairs sit in one file, next to each other.
QUERY_KEY = "query_key"
# Per position bucket (output.position_buckets) in the pair table: weight (sums to `weight`),
# weighted click rate, impressions and clicks; train.position_tower trains on the first two and
# its gate counts the last two.
POSITION_WEIGHT, POSITION_LABEL = "position_weight", "position_label"
POSITION_IMPRESSIONS, POSITION_CLICKS = "position_impressions", "position_clicks"
POSITION_COLUMNS = (POSITION_WEIGHT, POSITION_LABEL, POSITION_IMPRESSIONS, POSITION_CLICKS)

# Control characters other than tab / newline / carriage return.
_CONTROL_CHARS = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]"
# Blank: only ASCII and Unicode whitespace / separators / zero-width marks (Spark's trim strips spaces only).
_BLANK = "^[\\s\\p{Z}\\x{200B}\\x{FEFF}]*$"
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_LIMIT = 9.2e18  # |dwell| at or above this does not fit a long


class SchemaError(UserError):
    """The input table violates the contract as a whole (fail fast, before any work)."""


def check_schema(schema: T.StructType, has_catalog: bool = False) -> None:
    """Raise SchemaError naming every missing or mistyped column."""
    fields = {f.name: f.dataType for f in schema.fields}
    problems = []
    for spec in INPUT_COLUMNS:
        if spec.name not in fields:
            if spec.required and not (spec.name == "title" and has_catalog):
                problems.append(f"missing required column '{spec.name}' ({spec.doc})")
            continue
        if not isinstance(fields[spec.name], spec.accepted):
            want = " or ".join(t.__name__.replace("Type", "").lower() for t in spec.accepted)
            problems.append(
                f"column '{spec.name}' has type {fields[spec.name].simpleString()}, expected {want}"
            )
    if problems:
        raise SchemaError("input schema does not match the clickstream contract: " + "; ".join(problems))


def conform(df: DataFrame) -> DataFrame:
    """Add absent optional columns as nulls and cast every contract column to its canonical type."""
    # One projection per step (withColumns), not one per column: each new DataFrame is analysed anew.
    present = set(df.columns)
    df = df.withColumns({spec.name: F.lit(None).cast(spec.spark_type) for spec in INPUT_COLUMNS
                         if spec.name not in present})
    dwell = df["dwell_ms"]
    # NaN/inf dwell must reach validation as such, so keep a flag before the cast to long.
    # ... and a huge one too: casting it to long would fail the whole job (ANSI) or wrap around.
    bad_dwell = F.isnan(dwell.cast("double")) | (F.abs(dwell.cast("double")) >= _LONG_LIMIT)
    df = df.withColumn("_bad_dwell", F.coalesce(bad_dwell, F.lit(False)))
    cast: dict[str, Column] = {}
    for spec in INPUT_COLUMNS:
        src = df[spec.name]
        if isinstance(df.schema[spec.name].dataType, T.BooleanType):
            src = src.cast("int")
        if spec.name == "dwell_ms":
            src = F.when(~df["_bad_dwell"], src)
        elif isinstance(spec.spark_type, T.IntegerType) and isinstance(df.schema[spec.name].dataType, T.LongType):
            # Saturate instead of overflowing the cast to int: a huge position stays out of range
            # (and is quarantined as such) instead of failing the job or wrapping to a valid value.
            # (Not least/greatest: they skip nulls, and a null must stay null.)
            src = F.when(src > _INT_MAX, F.lit(_INT_MAX)).when(src < _INT_MIN, F.lit(_INT_MIN)).otherwise(src)
        cast[spec.name] = src.cast(spec.spark_type)
    return df.withColumns(cast)


def _blank(col: Column) -> Column:
    return col.rlike(_BLANK)


def _invalid_utf8(col: Column) -> Column:
    """Raw bytes that are not UTF-8 (they do not survive a decode/encode round trip), or U+FFFD."""
    return col.contains("\ufffd") | (col.cast("binary") != F.encode(col, "UTF-8"))


def row_reasons(
    df: DataFrame,
    max_title_chars: int,
    max_query_chars: int,
    max_position: int,
    min_event_ts: str,
    max_event_ts: str,
) -> Column:
    """A ';'-joined list of every rule a row breaks; '' for a valid row."""
    rules: list[tuple[str, Column]] = [
        ("null_event_id", df.event_id.isNull() | _blank(df.event_id)),
        ("null_event_ts", df.event_ts.isNull()),
        ("event_ts_out_of_range",
         (df.event_ts < F.lit(min_event_ts).cast("timestamp"))
         | (df.event_ts > F.lit(max_event_ts).cast("timestamp"))),
        ("null_query", df.query.isNull()),
        ("empty_query", _blank(df.query)),
        ("query_too_long", F.length(df.query) > max_query_chars),
        ("null_item_id", df.item_id.isNull() | _blank(df.item_id)),
        ("null_title", df.title.isNull()),
        ("empty_title", _blank(df.title)),
        ("title_too_long", F.length(df.title) > max_title_chars),
        ("control_characters", df.query.rlike(_CONTROL_CHARS) | df.title.rlike(_CONTROL_CHARS)),
        ("invalid_utf8", _invalid_utf8(df.query) | _invalid_utf8(df.title)),
        ("null_position", df.position.isNull()),
        ("position_out_of_range", (df.position < 1) | (df.position > max_position)),
        ("null_clicked", df.clicked.isNull()),
        ("clicked_not_0_1", ~df.clicked.isin(0, 1)),
        ("added_to_cart_not_0_1", ~df.added_to_cart.isin(0, 1)),
        ("purchased_not_0_1", ~df.purchased.isin(0, 1)),
        ("bad_dwell_ms", df["_bad_dwell"] | (df.dwell_ms < 0)),
    ]
    # A null condition (null input) means "rule not broken" here; nulls have their own rules.
    return F.concat_ws(";", *[F.when(F.coalesce(cond, F.lit(False)), F.lit(name)) for name, cond in rules])


class ValidSplit(NamedTuple):
    valid: DataFrame
    quarantined: DataFrame
    persisted: DataFrame | None  # the checked rows both come from, when persisted (the caller unpersists)


def split_valid(df: DataFrame, reason: Column, persist: bool = False) -> ValidSplit:
    """Split rows into valid ones and quarantined ones with `reason`; every input row is in exactly
    one. With `persist`, the checked rows are persisted, so writing the quarantine does not read the
    input and rank duplicates a second time; the caller releases them once the output is written."""
    df = df.withColumn("reason", reason)
    content_hash = F.xxhash64(*[F.col(c.name) for c in INPUT_COLUMNS])
    # Rank duplicates among valid rows only, so an invalid copy never displaces a valid one.
    order = Window.partitionBy("event_id", F.col("reason") == "").orderBy(
        F.col("event_ts").asc_nulls_last(), content_hash
    )
    ranked = df.withColumn("_dup_rank", F.when(F.col("reason") == "", F.row_number().over(order)))
    ranked = ranked.withColumn(
        "reason",
        F.when(F.col("_dup_rank") > 1, F.lit("duplicate_event_id")).otherwise(F.col("reason")),
    ).drop("_dup_rank", "_bad_dwell")
    if persist:
        ranked = ranked.persist(StorageLevel.MEMORY_AND_DISK)
    valid = ranked.filter(F.col("reason") == "").drop("reason")
    quarantined = ranked.filter(F.col("reason") != "")
    return ValidSplit(valid, quarantined, ranked if persist else None)
