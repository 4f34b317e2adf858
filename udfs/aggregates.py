"""Order-independent aggregates for the statistics weights depend on.

A Spark `sum`/`avg` over doubles adds in whatever order partitions and shuffle blocks arrive,
so the last bits change with input partitioning and (on a cluster) with fetch order; every
weight then changes with them. Casting each term to a wide decimal first makes the sum exact
(decimal addition does not round), hence identical for any order. Terms are rounded once, per
row, to 18 decimals: far below anything a weight can notice.
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

EXACT = "decimal(38,18)"  # 20 integer digits: sums up to 1e20 (e.g. 1e9 rows of values < 1e11)


def exact_sum(col: Column | str) -> Column:
    c = F.col(col) if isinstance(col, str) else col
    return F.sum(c.cast(EXACT)).cast("double")


def exact_avg(col: Column | str) -> Column:
    c = F.col(col) if isinstance(col, str) else col
    return F.avg(c.cast(EXACT)).cast("double")
