"""Training on a real Spark standalone cluster on 127.0.0.1 (master + two 1-core workers).

`spark-submit jobs/train.py` with `train.local_mode=false`: TorchDistributor runs the 2 DDP ranks
as barrier tasks on the 2 executors (gloo), Petastorm reads with the guard on, and the exported
model loads. Then one worker is SIGKILLed mid-training: the run must fail (non-zero exit, no
hang), and a rerun on a fresh worker must resume from the checkpoint the killed run left.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides
from test_cluster import BIN, ROOT, _listening, alive_workers, free_port, kill_tree, wait_for

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score

pytestmark = pytest.mark.cluster


def rank_lines(work: Path) -> dict[str, str]:
    """'rank R/W' -> the executor folder whose logs printed it."""
    found = {}
    for log in work.glob("app-*/*/std*"):
        for line in log.read_text(errors="replace").splitlines():
            if "[clickweight train] rank " in line:
                found[line.split("[clickweight train] ")[1].split(" on ")[0]] = log.parent.name
    return found


@pytest.mark.timeout(1200)
def test_ddp_ranks_run_on_executors_and_a_killed_worker_run_resumes(spark, tiny_model_dir, tmp_path):
    raw = tmp_path / "raw"
    write(generate(rows=800, days=2, seed=4, malformed_fraction=0.0), str(raw))
    weighted = tmp_path / "weighted"
    sets = tiny_overrides(tiny_model_dir, "train.local_mode=false", "train.num_processes=2", "train.batch_size=8",
                          "train.epochs=2", "train.eval_fraction=0.2", "train.checkpoint_every_steps=2",
                          "train.precision=fp32", "scorer.precision=fp32")
    run_score(spark, f"{raw}/clickstream", str(weighted), config.load_config(overrides=sets))

    work = tmp_path / "work"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_MASTER_HOST": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_WORKER_DIR": str(work)}
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

    def worker(name: str) -> subprocess.Popen:
        return start(name, ["org.apache.spark.deploy.worker.Worker", master_url, "--host", "127.0.0.1",
                            "--cores", "1", "--memory", "2g", "--webui-port", str(free_port())])

    def submit(output: Path, name: str, *conf: str) -> subprocess.Popen:
        args = [a for o in sets for a in ("--set", o)]
        proc = subprocess.Popen(
            [str(BIN / "spark-submit"), "--master", master_url, "--conf", "spark.driver.host=127.0.0.1",
             "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.executor.memory=1g",
             "--conf", "spark.executor.cores=1", "--conf", f"spark.pyspark.python={sys.executable}",
             # A barrier stage that cannot get its 2 slots fails at once instead of retrying for 10 minutes.
             "--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.interval=1s",
             "--conf", "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures=2",
             *conf, str(ROOT / "jobs" / "train.py"), "--input", str(weighted), "--output", str(output), *args],
            env=env, stdout=open(tmp_path / f"{name}.out", "wb"), stderr=open(tmp_path / f"{name}.err", "wb"))
        procs.append(proc)
        return proc

    try:
        start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(ui)])
        wait_for(lambda: _listening(port), 60, "the master")
        workers = [worker("worker1"), worker("worker2")]
        wait_for(lambda: alive_workers(ui) == 2, 90, "two registered workers")

        # 1. A clean run: two ranks, one per executor; the model loads.
        run = submit(tmp_path / "model", "train1")
        rc = run.wait(timeout=420)
        assert rc == 0, (tmp_path / "train1.err").read_text(errors="replace")[-4000:]
        summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
        assert summary["world_size"] == 2 and len(summary["history"]) == 2
        ranks = rank_lines(work)
        assert set(ranks) == {"rank 0/2", "rank 1/2"} and ranks["rank 0/2"] != ranks["rank 1/2"], ranks
        from transformers import AutoModel

        assert AutoModel.from_pretrained(tmp_path / "model").config.hidden_size == 32

        # 2. A worker killed mid-training: the run fails cleanly (exits non-zero, does not hang).
        killed = tmp_path / "killed"
        run = submit(killed, "train2", "--conf", "spark.executorEnv.CLICKWEIGHT_STEP_DELAY_S=1.5")
        wait_for(lambda: (killed / "checkpoints" / "checkpoint.pt").exists() or run.poll() is not None, 300,
                 "the first checkpoint")
        assert run.poll() is None, "training ended before a worker could be killed"
        kill_tree(workers[0])
        rc = run.wait(timeout=300)
        assert rc != 0
        assert not (killed / "train_summary.json").exists()

        # 3. The rerun, with a fresh worker in place of the lost one, resumes from that checkpoint.
        worker("worker3")
        wait_for(lambda: alive_workers(ui) == 2, 90, "a replacement worker")
        run = submit(killed, "train3")
        rc = run.wait(timeout=420)
        assert rc == 0, (tmp_path / "train3.err").read_text(errors="replace")[-4000:]
        resumed = json.loads((killed / "train_summary.json").read_text())
        assert resumed["resumed_from_step"] > 0
        assert resumed["global_step"] == summary["global_step"]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                kill_tree(proc)
        for log in logs:
            log.close()
