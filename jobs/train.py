"""clickweight train: DDP fine-tuning on a `clickweight score` output, launched for N ranks.

    spark-submit jobs/train.py --input runs/demo/weighted --output runs/demo/model
    clickweight train --input DIR --output MODEL_DIR --set train.launcher=torchrun --set train.num_processes=2
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from jobs import config as config_mod
from jobs.common import absolute, add_common_args, get_spark, log, print_json, setup_logging


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(input_dir: str, output_dir: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """torchrun on this machine, bound to 127.0.0.1; a rank that dies fails the whole run."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={cfg['train']['num_processes']}",
           "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "training.run_rank", input_dir, output_dir, f.name]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["train"]["torch_threads"])}
    try:
        subprocess.run(cmd, check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"training failed (torchrun exit {exc.returncode}); see the rank logs above") from exc
    finally:
        os.unlink(f.name)
    return json.loads((Path(output_dir) / "train_summary.json").read_text())


def run_training(input_dir: str, output_dir: str, cfg: dict[str, Any]) -> dict[str, Any]:
    from training.recipe import train_worker

    input_dir, output_dir = absolute(input_dir), absolute(output_dir)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    config_mod.dump(cfg, Path(output_dir) / "train_config.yaml")
    t = cfg["train"]
    if t["launcher"] == "torchrun":
        return run_torchrun(input_dir, output_dir, cfg)
    from pyspark.ml.torch.distributor import TorchDistributor

    get_spark(cfg)  # TorchDistributor needs an active session
    os.environ["OMP_NUM_THREADS"] = str(t["torch_threads"])
    distributor = TorchDistributor(num_processes=t["num_processes"], local_mode=True, use_gpu=t["use_gpu"])
    distributor.run(train_worker, input_dir, output_dir, cfg)
    # run() may hand back any rank's value; the summary file is rank 0's, always.
    return json.loads((Path(output_dir) / "train_summary.json").read_text())


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="clickweight train", description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="a `clickweight score` output folder")
    p.add_argument("--output", required=True, help="model folder (checkpoints inside; rerun resumes)")
    add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    cfg = config_mod.load_config(args.conf, args.overrides)
    summary = run_training(args.input, args.output, cfg)
    log.info("train: %d steps in %.1fs -> %s", summary["global_step"], summary["seconds"], args.output)
    print_json({k: summary[k] for k in ("output", "global_step", "steps_per_epoch", "seconds", "history")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
