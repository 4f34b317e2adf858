"""A real Spark standalone cluster on 127.0.0.1: master + two workers from the installed pyspark.

spark-submit runs the score job on it; one worker (with its executor and Python workers) is
SIGKILLed while scoring runs there; the job must still finish, with the same rows and weights as
an undisturbed local run. Every process started here is stopped by PID in a finally block.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.cluster
SCORE_COLUMNS = ("relevance", "p_model", "loss", "info_gain", "propensity", "raw_weight", "weight")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return int(json.load(r).get("aliveworkers", 0))
    except OSError:
        return 0


def runs_python_tasks(pid: int) -> bool:
    """True once the worker's executor has started Python workers (the scoring UDF is running)."""
    try:
        return any("pyspark.daemon" in " ".join(c.cmdline()) or "pyspark.worker" in " ".join(c.cmdline())
                   for c in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return False


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process we started and everything below it (executor JVM, Python workers)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    for p in [*kids]:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.mark.timeout(900)
def test_standalone_cluster_survives_a_lost_worker(spark, tiny_model_dir, tmp_path):
    raw = tmp_path / "raw"
    write(generate(rows=800, days=2, seed=9, malformed_fraction=0.02), str(raw))
    sets = tiny_overrides(tiny_model_dir, "run_id=cluster", "weighting.strategy=combined", "weighting.w_max=4.0",
                          "spark.conf.spark.sql.shuffle.partitions=8")
    # Reference: the same job, undisturbed, in local mode.
    run_score(spark, f"{raw}/clickstream", str(tmp_path / "local"), config.load_config(overrides=sets))

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_HOST": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_WORKER_DIR": str(tmp_path / "work")}
    port, ui = free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    logs = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")
        logs.append(log)
        proc = subprocess.Popen([str(BIN / "spark-class"), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(ui)])
        wait_for(lambda: alive_workers(ui) == 0 and _listening(port), 60, "the master")
        workers = [start(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
                                        "--cores", "1", "--memory", "2g", "--webui-port", str(free_port())])
                   for i in (1, 2)]
        wait_for(lambda: alive_workers(ui) == 2, 90, "two registered workers")

        sub_args = [a for o in sets for a in ("--set", o)]
        submit = subprocess.Popen(
            [str(BIN / "spark-submit"), "--master", master_url, "--conf", "spark.driver.host=127.0.0.1",
             "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.executor.memory=1g",
             "--conf", "spark.executor.cores=1", "--conf", "spark.task.maxFailures=4",
             # Each scoring task waits 2 s first: the job cannot finish before a worker is killed.
             "--conf", "spark.executorEnv.CLICKWEIGHT_TASK_DELAY_S=2",
             "--conf", f"spark.pyspark.python={sys.executable}",
             str(ROOT / "jobs" / "score.py"), "--input", f"{raw}/clickstream", "--output", str(tmp_path / "cluster"),
             *sub_args],
            env=env, stdout=open(tmp_path / "submit.out", "wb"), stderr=open(tmp_path / "submit.err", "wb"))
        procs.append(submit)
        # Kill the first worker (and its executor) seen running Python scoring tasks.
        busy: list[subprocess.Popen] = []

        def a_worker_scores() -> bool:
            busy[:] = [w for w in workers if runs_python_tasks(w.pid)]
            return bool(busy) or submit.poll() is not None

        wait_for(a_worker_scores, 240, "scoring tasks on a worker")
        assert submit.poll() is None and busy, "the job ended before a worker could be killed"
        kill_tree(busy[0])
        # With one 1-core worker left, the ~300 short stages (pair table included) take minutes.
        rc = submit.wait(timeout=600)
        err = (tmp_path / "submit.err").read_text(errors="replace")
        assert rc == 0, err[-4000:]
        assert "Lost executor" in err or "lost" in err.lower()  # the loss was noticed, then survived
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                kill_tree(proc)
        for log in logs:
            log.close()

    a = pd.read_parquet(tmp_path / "local").sort_values("event_id").reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "cluster").sort_values("event_id").reset_index(drop=True)
    assert len(a) == len(b) > 600 and list(a["event_id"]) == list(b["event_id"])
    from udfs.schema import INPUT_COLUMNS

    plain = [c.name for c in INPUT_COLUMNS] + ["event_date", "query_bucket", "scorer_model", "run_id", "input_len"]
    pd.testing.assert_frame_equal(a[plain], b[plain], check_exact=True)
    assert all(np.array_equal(x, y) for x, y in zip(a["input_ids"], b["input_ids"]))
    # Bit-identical to the local run, scores and weights included (no tolerance).
    for col in SCORE_COLUMNS:
        assert np.array_equal(a[col].to_numpy(), b[col].to_numpy()), col
    assert np.array_equal(a["propensity"].to_numpy(), b["propensity"].to_numpy())
    summary = json.loads((tmp_path / "cluster" / "_summary.json").read_text())
    assert summary["rows_in"] == 800 == summary["rows_out"] + summary["rows_quarantined"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
