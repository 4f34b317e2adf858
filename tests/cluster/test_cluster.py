"""A real Spark standalone cluster on 127.0.0.1: master + two workers from the installed pyspark.

spark-submit runs the score job on it; one worker (with its executor and Python workers) is
SIGKILLed while scoring runs there; the job must still finish, with the same rows and weights as
an undisturbed local run. Every process started here is stopped by PID on the way out.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import fault_pythonpath, tiny_overrides
from standalone import StandaloneCluster, kill_tree, wait_for

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score

pytestmark = pytest.mark.cluster
SCORE_COLUMNS = ("relevance", "p_model", "loss", "info_gain", "propensity", "raw_weight", "weight")


def runs_python_tasks(pid: int) -> bool:
    """True once the worker's executor has started Python workers (the scoring UDF is running)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return False
    for c in children:
        try:   # one child exiting between the listing and its cmdline must not hide the others
            line = " ".join(c.cmdline())
        except psutil.Error:
            continue
        if "pyspark.daemon" in line or "pyspark.worker" in line:
            return True
    return False


@pytest.mark.timeout(900)
def test_standalone_cluster_survives_a_lost_worker(spark, tiny_model_dir, tmp_path):
    raw = tmp_path / "raw"
    write(generate(rows=800, days=2, seed=9, malformed_fraction=0.02), str(raw))
    sets = tiny_overrides(tiny_model_dir, "output.row_model_inputs=true", "run_id=cluster",
                          "weighting.strategy=combined", "weighting.w_max=4.0",
                          "spark.conf.spark.sql.shuffle.partitions=8")
    # Reference: the same job, undisturbed, in local mode.
    run_score(spark, f"{raw}/clickstream", str(tmp_path / "local"), config.load_config(overrides=sets))

    with StandaloneCluster(tmp_path, workers=2) as cluster:
        submit = cluster.submit(
            "submit", "jobs/score.py",
            ["--input", f"{raw}/clickstream", "--output", str(tmp_path / "cluster"),
             *[a for o in sets for a in ("--set", o)]],
            "--conf", "spark.task.maxFailures=4",
            # Each scoring task waits 2 s first: the job cannot finish before a worker is killed.
            "--conf", "spark.executorEnv.CLICKWEIGHT_TASK_DELAY_S=2",
            "--conf", f"spark.executorEnv.PYTHONPATH={fault_pythonpath()}")  # tests/faults adds the delay
        # Kill the first worker (and its executor) seen running Python scoring tasks.
        busy: list = []

        def a_worker_scores() -> bool:
            busy[:] = [w for w in cluster.workers if runs_python_tasks(w.pid)]
            return bool(busy) or submit.poll() is not None

        wait_for(a_worker_scores, 240, "scoring tasks on a worker")
        assert submit.poll() is None and busy, "the job ended before a worker could be killed"
        kill_tree(busy[0])
        # With one 1-core worker left, the ~300 short stages (pair table included) take minutes.
        rc = submit.wait(timeout=600)
        err = cluster.stderr("submit")
        assert rc == 0, err[-4000:]
        assert "Lost executor" in err or "lost" in err.lower()  # the loss was noticed, then survived

    a = pd.read_parquet(tmp_path / "local").sort_values("event_id").reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "cluster").sort_values("event_id").reset_index(drop=True)
    assert len(a) == len(b) > 600 and list(a["event_id"]) == list(b["event_id"])
    from udfs.clickstream.schema import INPUT_COLUMNS

    plain = [c.name for c in INPUT_COLUMNS] + ["event_date", "query_bucket", "scorer_model", "run_id", "input_len"]
    pd.testing.assert_frame_equal(a[plain], b[plain], check_exact=True)
    assert all(np.array_equal(x, y) for x, y in zip(a["input_ids"], b["input_ids"]))
    # Bit-identical to the local run, scores and weights included (no tolerance).
    for col in SCORE_COLUMNS:
        assert np.array_equal(a[col].to_numpy(), b[col].to_numpy()), col
    assert np.array_equal(a["propensity"].to_numpy(), b["propensity"].to_numpy())
    summary = json.loads((tmp_path / "cluster" / "_summary.json").read_text())
    assert summary["rows_in"] == 800 == summary["rows_out"] + summary["rows_quarantined"]

