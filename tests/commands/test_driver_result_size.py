"""The score job collects nothing big to the driver: it runs under a 1 MiB `spark.driver.maxResultSize`.

`spark.driver.maxResultSize` caps the serialized task results of each Spark action the driver fetches
(collect, toPandas, broadcast joins): above it the action fails. The limit is read when the SparkContext
starts, so the job runs in a child process, the console command's entry point (`clickweight score
--set spark.conf.spark.driver.maxResultSize=1m`), with its own JVM. Its input (benchmarks/big_clickstream,
20k rows, ~5k distinct pairs) gives a row table and a pair table that each exceed the limit when collected:
after the job, the same child (same SparkContext, same limit) shows that a deliberate collect() of either
fails, so a job that collected one would have failed.

The default weighting does fetch one bounded aggregate, the (position, pair) cells (at most
weighting.max_driver_cells rows; ~10k here, under the limit): an aggregate, not a table. Past
max_driver_cells (the second case) the click model's EM fetches the cells of a hash sample of pairs
instead, and every pair's label stays in Spark.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
LIMIT = "1m"
ROWS = 20_000

# Child: the score CLI in-process, then, in its session, a collect() of the row table and of the pair table.
SCORE_THEN_COLLECT = """
import json, sys
from pyspark.sql import SparkSession
from jobs.cli import main
from udfs.clickstream.schema import PAIRS_DIR, read_folder
out, argv = sys.argv[1], sys.argv[2:]
result = {"rc": main(argv)}
spark = SparkSession.getActiveSession()
result["limit"] = spark.sparkContext.getConf().get("spark.driver.maxResultSize")
for name, frame in (("rows", spark.read.parquet(out)), ("pairs", read_folder(spark, f"{out}/{PAIRS_DIR}"))):
    try:
        result[name] = {"collected": len(frame.collect())}
    except Exception as e:
        result[name] = {"error": str(e)[:2000]}
print("RESULT " + json.dumps(result), flush=True)
spark.stop()
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("max_cells", [None, 2000], ids=["driver_cells", "spark_em"])
def test_score_job_runs_under_a_small_driver_result_size(tmp_path, tiny_model_dir, max_cells):
    from benchmarks.big_clickstream import generate

    data = generate(str(tmp_path / "in"), rows=ROWS, seed=0, queries=1500, verbose=False)
    assert data["distinct_pairs"] > 4000   # enough pairs that the pair table outgrows the limit
    out = tmp_path / "out"
    sets = tiny_overrides(tiny_model_dir, f"spark.conf.spark.driver.maxResultSize={LIMIT}",
                          *([f"weighting.max_driver_cells={max_cells}"] if max_cells else []))
    argv = ["score", "--input", str(tmp_path / "in" / "clickstream"), "--output", str(out),
            *[a for o in sets for a in ("--set", o)]]
    child = subprocess.run([sys.executable, "-c", SCORE_THEN_COLLECT, str(out), *argv], cwd=ROOT,
                           env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}, capture_output=True, text=True,
                           timeout=540)
    lines = [x for x in child.stdout.splitlines() if x.startswith("RESULT ")]
    assert child.returncode == 0 and lines, child.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])

    # The job ran, whole, under the limit.
    assert result["rc"] == 0 and result["limit"] == LIMIT
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_out"] == ROWS and summary["pairs"]["pairs"] == data["distinct_pairs"]
    assert summary["aggregates"] == ("spark passes" if max_cells else "driver cells")
    assert summary["pair_label"] == "click_model"
    # The limit bites: in that same session, collecting either table of the output fails.
    for table in ("rows", "pairs"):
        assert "is bigger than spark.driver.maxResultSize" in result[table].get("error", ""), (table, result[table])
