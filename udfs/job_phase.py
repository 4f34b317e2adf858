"""Name the Spark jobs a phase starts: the Spark UI, the event log and `benchmarks/score_fixed_cost.py`
then say which phase of `clickweight score` each job belongs to (PySpark's own call sites read
`NativeMethodAccessorImpl.java:0`)."""
from __future__ import annotations

from pyspark.sql import SparkSession

PREFIX = "clickweight score: "


def start_phase(spark: SparkSession, phase: str) -> None:
    """Jobs started from this thread from now on carry `clickweight score: <phase>` as their description."""
    spark.sparkContext.setJobDescription(PREFIX + phase)


def end_phases(spark: SparkSession) -> None:
    """Later jobs (a pipeline's training, a table's publication) no longer carry a score phase."""
    spark.sparkContext.setJobDescription(None)
