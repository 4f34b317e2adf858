"""Training input: rows/s the Petastorm reader delivers alone vs rows/s the DDP training step consumes.

1. Reader alone: each rank's shard read the way training reads it (`training.reader.iter_shard`
   over the numeric training columns, the seeded shuffle buffer, batches of train.batch_size made
   into torch tensors), with no model.
2. Training: the real `clickweight train` (DDP, 2 ranks, gloo on CPU, MiniLM) for a few steps; each
   epoch record carries rank 0's split of its time: waiting on the reader vs inside training steps.

The reader must never be the bottleneck: reader-alone rows/s per rank >= 5x trained rows/s per rank.

    .venv/bin/python -m benchmarks.reader_throughput                       # scores 20k rows first
    .venv/bin/python -m benchmarks.reader_throughput --data runs/demo/round_0/information_gain/weighted

Writes benchmarks/results/reader_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import bench_data
from jobs import config
from training.model import BiEncoderTrainee
from training.reader import ShuffleBuffer, dataset_rows, iter_shard, training_fields

ROOT = Path(__file__).resolve().parent.parent


def score_table(work: Path, rows: int, conf: str) -> str:
    from jobs.common import get_spark
    from jobs.score import run_score

    cfg = config.load_config(conf, overrides=["run_id=reader-bench"])
    src = bench_data.write_clickstream(bench_data.clickstream(bench_data.real_pairs(), rows, 4, seed=5), work / "in")
    spark = get_spark(cfg)
    run_score(spark, src, str(work / "weighted"), cfg)
    spark.stop()
    return str(work / "weighted")


def reader_alone(data: str, rank: int, world: int, batch_size: int, buffer_rows: int, pool: str) -> dict:
    import torch

    t0 = time.perf_counter()
    rows = batches = 0
    buffer = ShuffleBuffer(buffer_rows, np.random.default_rng([0, 0, rank]))

    def drain(final: bool) -> None:
        nonlocal batches
        for b in buffer.take(batch_size, final=final):
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}
            batches += 1

    fields = training_fields(BiEncoderTrainee.input_columns, compact_pairs=False)
    for batch in iter_shard(data, rank, world, seed=0, fields=fields, pool=pool):
        rows += len(batch["clicked"])
        batch.pop("query_bucket")
        buffer.add(batch)
        drain(False)
    drain(True)
    wall = time.perf_counter() - t0
    return {"rank": rank, "rows": rows, "batches": batches, "wall_s": round(wall, 3), "rows_per_s": rows / wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a `clickweight score` output folder (default: score --rows rows first)")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=30, help="training steps per rank to time")
    p.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "reader_throughput.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    work = Path(tempfile.mkdtemp(prefix="cw-reader-"))
    try:
        data = args.data or score_table(work, args.rows, args.conf)
        t = config.load_config(args.conf)["train"]
        world = t["num_processes"]
        alone = [reader_alone(data, r, world, t["batch_size"], t["shuffle_buffer_rows"], t["reader_pool"])
                 for r in range(world)]
        for r in alone:
            print("reader alone:", json.dumps(r), flush=True)

        cmd = [str(Path(sys.executable).parent / "clickweight"), "train", "--conf", args.conf, "--input", data,
               "--output", str(work / "model"), "--set", "train.epochs=1",
               "--set", f"train.max_steps_per_epoch={args.steps}", "--set", "train.checkpoint_every_steps=0"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=open(work / "train.log", "wb"))
        train_wall = time.perf_counter() - t0
        summary = json.loads((work / "model" / "train_summary.json").read_text())
        timing = summary["history"][0]["timing_rank0"]
        print("training (rank 0):", json.dumps(timing), flush=True)
    except subprocess.CalledProcessError:
        print((work / "train.log").read_text()[-3000:])
        raise
    finally:
        keep = work / "model" / "train_summary.json"
        summary_text = keep.read_text() if keep.exists() else None
        shutil.rmtree(work, ignore_errors=True)

    reader_per_rank = float(np.mean([r["rows_per_s"] for r in alone]))
    trained_per_rank = timing["rows_trained_per_s"]
    report = {"benchmark": "reader_throughput", "cores": os.cpu_count(),
              "data_rows": dataset_rows(data) if args.data else args.rows,
              "world": world, "batch_size": t["batch_size"],
              "reader_pool": t["reader_pool"], "reader_alone": alone, "train_timing_rank0": timing,
              "train_wall_s": round(train_wall, 1), "reader_rows_per_s_per_rank": reader_per_rank,
              "trained_rows_per_s_per_rank": trained_per_rank,
              "reader_over_training": reader_per_rank / trained_per_rank,
              "train_summary": json.loads(summary_text) if summary_text else None,
              "command": "python -m benchmarks.reader_throughput " + " ".join(argv or sys.argv[1:])}
    if report["train_summary"]:
        report["train_summary"].pop("loss_curve", None)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print("\n| reader alone rows/s per rank | in-training reader rows/s (rank 0) | trained rows/s per rank "
          "| reader / training | read wait s | step s |")
    print("|---|---|---|---|---|---|")
    print(f"| {reader_per_rank:.0f} | {timing['rows_read_per_s']} | {trained_per_rank} "
          f"| {reader_per_rank / trained_per_rank:.0f}x | {timing['read_wait_s']} | {timing['step_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
