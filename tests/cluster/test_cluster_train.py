"""Training on a real Spark standalone cluster on 127.0.0.1 (master + two 1-core workers).

`spark-submit jobs/train.py` with `train.local_mode=false`: TorchDistributor runs the 2 DDP ranks
as barrier tasks on the 2 executors (gloo), Petastorm reads with the guard on, and the exported
model loads. Then one worker is SIGKILLed mid-training: the run must fail (non-zero exit, no
hang), and a rerun on a fresh worker must resume from the checkpoint the killed run left.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fault_pythonpath, tiny_overrides
from standalone import BARRIER, StandaloneCluster, kill_tree, wait_for

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

    args = [a for o in sets for a in ("--set", o)]

    def train(cluster: StandaloneCluster, name: str, output: Path, *conf: str):
        return cluster.submit(name, "jobs/train.py", ["--input", str(weighted), "--output", str(output), *args],
                              *BARRIER, *conf)

    with StandaloneCluster(tmp_path, workers=2) as cluster:
        # 1. A clean run: two ranks, one per executor; the model loads.
        rc = train(cluster, "train1", tmp_path / "model").wait(timeout=420)
        assert rc == 0, cluster.stderr("train1")[-4000:]
        summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
        assert summary["world_size"] == 2 and len(summary["history"]) == 2
        ranks = rank_lines(cluster.work)
        assert set(ranks) == {"rank 0/2", "rank 1/2"} and ranks["rank 0/2"] != ranks["rank 1/2"], ranks
        from transformers import AutoModel

        assert AutoModel.from_pretrained(tmp_path / "model").config.hidden_size == 32

        # 2. A worker killed mid-training: the run fails cleanly (exits non-zero, does not hang).
        killed = tmp_path / "killed"
        run = train(cluster, "train2", killed, "--conf", "spark.executorEnv.CLICKWEIGHT_STEP_DELAY_S=1.5",
                    "--conf", f"spark.executorEnv.PYTHONPATH={fault_pythonpath()}")
        wait_for(lambda: (killed / "checkpoints" / "checkpoint.pt").exists() or run.poll() is not None, 300,
                 "the first checkpoint")
        assert run.poll() is None, "training ended before a worker could be killed"
        kill_tree(cluster.workers[0])
        assert run.wait(timeout=300) != 0
        failure = cluster.output("train2")
        assert "training failed (Job aborted" in failure and "Rerun the same command to resume" in failure
        assert not (killed / "train_summary.json").exists()

        # 3. The rerun, with a fresh worker in place of the lost one, resumes from that checkpoint.
        cluster.add_worker("worker3")
        cluster.wait_workers(2)
        rc = train(cluster, "train3", killed).wait(timeout=420)
        assert rc == 0, cluster.stderr("train3")[-4000:]
        resumed = json.loads((killed / "train_summary.json").read_text())
        assert resumed["resumed_from_step"] > 0
        assert resumed["global_step"] == summary["global_step"]
