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
from jobs import inputs, tracking
from jobs.common import absolute, add_common_args, get_spark, log, parse_job_args, print_json
from jobs.outputs import (
    MARKER,
    LocalFS,
    OutputRefused,
    check_output,
    local_form,
    local_path,
    marker,
    output_kind,
)
from jobs.report import write_report_quietly
from udfs.clickstream.schema import PAIRS_DIR


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


def prepare_model_folder(input_dir: str, output_dir: str, cfg: dict[str, Any], overwrite: bool = False,
                         fresh: bool = False) -> None:
    """Refuse a model folder this run must not use; a checkpoint is resumed only if it was written for
    this input and config (else refuse, or with `fresh` start over). Runs on the driver, before any rank."""
    from training import checkpoint as ckpt
    from training.reader import training_table
    from training.recipe import read_score_summary

    fs = LocalFS()
    check_output(fs, output_dir, "train", [input_dir], overwrite)
    if fs.exists(output_dir) and (fresh or (overwrite and output_kind(fs, output_dir) != "train")):
        log.info("train: starting %s afresh", output_dir)
        fs.delete(output_dir)
    ckpt_dir = Path(output_dir) / "checkpoints"
    fingerprint = ckpt.run_fingerprint(training_table(input_dir, cfg["train"]["compact_pairs"]),
                                       read_score_summary(input_dir), cfg)
    if (ckpt_dir / ckpt.CHECKPOINT).exists():
        differs = ckpt.fingerprint_mismatch(ckpt.read_fingerprint(ckpt_dir), fingerprint)
        if differs:
            raise OutputRefused(f"{output_dir} holds a checkpoint of another run ({differs}). Rerun with --fresh "
                                "to start over in it, or choose another --output")
        log.info("train: resuming the checkpoint in %s", ckpt_dir)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    fs.write_text(f"{output_dir}/{MARKER}", marker("train", cfg["run_id"] or "train", output_dir, input=input_dir,
                                                   **{f"fingerprint_{k}": v for k, v in fingerprint.items()}))


def run_training(input_dir: str, output_dir: str, cfg: dict[str, Any], overwrite: bool = False,
                 fresh: bool = False) -> dict[str, Any]:
    from training.recipe import train_worker

    input_dir, output_dir = absolute(input_dir), absolute(local_path(output_dir))
    prepare_model_folder(input_dir, output_dir, cfg, overwrite, fresh)
    config_mod.dump(cfg, Path(output_dir) / "train_config.yaml")
    t = cfg["train"]
    if t["launcher"] == "torchrun":
        return run_torchrun(input_dir, output_dir, cfg)
    from pyspark.ml.torch.distributor import TorchDistributor

    get_spark(cfg)  # TorchDistributor needs an active session
    os.environ["OMP_NUM_THREADS"] = str(t["torch_threads"])
    # local_mode=False: each rank is a barrier task on an executor (GPU from the task's resources).
    distributor = TorchDistributor(num_processes=t["num_processes"], local_mode=t["local_mode"], use_gpu=t["use_gpu"])
    try:
        summary = distributor.run(train_worker, input_dir, output_dir, cfg)
    except Exception as exc:  # a rank or an executor died: say what, and how to continue
        java = getattr(exc, "java_exception", None)  # py4j: the Spark job's own reason, not the RPC call
        text = str(java.getMessage() if java is not None else exc).strip() or type(exc).__name__
        reason = text.splitlines()[0][:500]
        raise RuntimeError(f"training failed ({reason}). Rerun the same command to resume from the last "
                           f"checkpoint in {output_dir}/checkpoints") from exc
    # Every rank returns the same summary (rank 0's numbers, all-reduced), wherever the ranks ran.
    return summary if isinstance(summary, dict) else json.loads((Path(output_dir) / "train_summary.json").read_text())


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="clickweight train", description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="a `clickweight score` output folder")
    source.add_argument("--input-table", metavar="DB.NAME",
                        help="a table `clickweight score --output-table` publishes: its current version is streamed")
    p.add_argument("--output", required=True,
                   help="model folder (checkpoints inside; a rerun on the same input and config resumes)")
    p.add_argument("--fresh", action="store_true", help="discard the model folder's checkpoint and start over")
    p.add_argument("--overwrite", action="store_true", help="use --output even if it is not a clickweight model folder")
    add_common_args(p)
    return p


def check_arguments(source: str | None, output: str, compact_pairs: bool) -> None:
    """Before any work: a local --input is a score output with the table the trainer streams, and
    --output is a folder this command can write (local or a shared mount, never another URL)."""
    local_path(output)
    if source is None:
        return
    local = local_form(source)
    if compact_pairs or local is None or (Path(local) / MARKER).exists():
        inputs.check_clickweight_output(source, "score")
    else:  # train.compact_pairs=false also streams a plain row table with the training columns
        inputs.check_parquet(source)
    if compact_pairs and local is not None and not (Path(local) / PAIRS_DIR).is_dir():
        raise inputs.InputError(f"--input {source}: a score output without the {PAIRS_DIR}/ pair table (scored by "
                                "an older clickweight?): re-run `clickweight score`, or set train.compact_pairs=false")


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job_args(build_parser(), argv)
    check_arguments(args.input, args.output, cfg["train"]["compact_pairs"])
    source = args.input
    if args.input_table:  # the table's current version, resolved once: a switch during training is not seen
        from jobs.table_output import table_location

        cfg["spark"]["conf"].setdefault("spark.sql.catalogImplementation", "hive")
        source = table_location(get_spark(cfg), args.input_table)
        log.info("train: table %s is at %s", args.input_table, source)
    with tracking.run(cfg, "train", input=source) as ml:
        summary = run_training(source, args.output, cfg, overwrite=args.overwrite, fresh=args.fresh)
        tracking.log_train(ml, summary, cfg, args.output)
    log.info("train: %d steps in %.1fs -> %s", summary["global_step"], summary["seconds"], args.output)
    write_report_quietly(args.output)
    print_json({k: summary[k] for k in ("output", "global_step", "steps_per_epoch", "seconds", "history")})
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("train", main))
