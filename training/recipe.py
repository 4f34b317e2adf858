"""Weighted fine-tuning recipe: Petastorm shards -> DDP BERT cross-encoder -> saved model.

    clickweight train --input runs/demo/weighted --output runs/demo/model --set train.epochs=3
    spark-submit jobs/train.py --input ... --output ...   # TorchDistributor, local mode, N ranks

setup (process group, model, optimiser, plan) -> train (epochs: guarded shard pass, held-out
evaluation, checkpoints, early stopping) -> save (save_pretrained) -> cleanup. Every rank takes
the same number of optimiser steps per epoch, so DDP never waits on a rank that ran dry.
A rerun with the same output folder resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from training import metrics
from training.model import adamw, build_cross_encoder, forward_logits, linear_warmup_decay, save_model, weighted_bce
from training.reader import (
    ReaderGuardError,
    ShuffleBuffer,
    check_columns,
    dataset_row_groups,
    dataset_rows,
    is_eval,
    iter_shard,
    shard_train_rows,
    training_fields,
)

CHECKPOINT = "checkpoint.pt"


@dataclass
class State:
    """Everything a resumed run needs besides model/optimiser/scheduler tensors."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_eval_loss: float = math.inf
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    # Mean loss over all ranks of every optimiser step so far: a resumed run carries the steps
    # before its restart, so its curve (and the epoch's train_loss) matches an uninterrupted run.
    loss_curve: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- setup

def _dist_setup(use_gpu: bool) -> tuple[int, int, torch.device]:
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if use_gpu and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    return rank, world, device


def _allreduce(values: list[float], op=None) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


def plan_steps(input_dir: str, rank: int, world: int, t: dict[str, Any]) -> int:
    """Optimiser steps per epoch, identical on every rank: the smallest shard decides."""
    check_columns(input_dir, training_fields())
    groups = dataset_row_groups(input_dir)
    if groups < world:
        raise ValueError(f"{input_dir} has {groups} row groups for {world} ranks: re-run score with "
                         f"output.files_per_date >= {math.ceil(world / max(1, groups))} x current")
    train_rows, _ = shard_train_rows(input_dir, rank, world, t["eval_fraction"], t["reader_pool"])
    steps = int(_allreduce([train_rows // t["batch_size"]], dist.ReduceOp.MIN if dist.is_initialized() else None)[0])
    if t["max_steps_per_epoch"]:
        steps = min(steps, t["max_steps_per_epoch"])
    if steps < 1:
        raise ValueError(f"a shard has fewer than train.batch_size={t['batch_size']} training rows; "
                         "lower the batch size or the number of ranks")
    return steps


# ---------------------------------------------------------------- checkpoint

def gather_rng_states() -> dict[str, torch.Tensor]:
    """Every rank's RNG state, stacked by rank (a collective: all ranks call it).

    Ranks draw different amounts of randomness (dropout over dynamically padded batches), so
    restoring rank 0's state everywhere would make a resumed run diverge from an uninterrupted one.
    """
    mine = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():  # dropout on GPU draws from the CUDA generator
        mine["cuda_rng"] = torch.cuda.get_rng_state()
    everyone = [mine]
    if dist.is_initialized():
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
    return {k: torch.stack([e[k].cpu() for e in everyone]) for k in mine}


def save_checkpoint(path: Path, model, optim, sched, state: State, rng: dict[str, torch.Tensor]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
        "state": json.dumps(state.__dict__), **rng,
    }, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint intact


def load_checkpoint(path: Path, model, optim, sched, rank: int = 0) -> State:
    blob = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    model.load_state_dict(blob["model"])
    optim.load_state_dict(blob["optim"])
    sched.load_state_dict(blob["sched"])
    rng = blob["torch_rng"]
    if rng.dim() == 2:  # one row per rank; a resume with more ranks reuses row 0
        # clone(): set_rng_state reads the raw storage, so a row view (offset != 0) would be garbage.
        rng = rng[rank if rank < len(rng) else 0].clone()
    torch.set_rng_state(rng)
    if "cuda_rng" in blob and torch.cuda.is_available():
        cuda = blob["cuda_rng"]
        torch.cuda.set_rng_state(cuda[rank if rank < len(cuda) else 0].clone())
    return State(**json.loads(blob["state"]))


# ---------------------------------------------------------------- train

def _to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def _evaluate(model, rows: list[dict[str, np.ndarray]], device: torch.device, batch_size: int) -> dict[str, float]:
    """Held-out queries' clicks: weighted loss (early stopping), log loss and AUC, over all ranks."""
    model.eval()
    logits, labels, wts = [], [], []
    with torch.inference_mode():
        for part in rows:
            for i in range(0, len(part["clicked"]), batch_size):
                b = _to_tensors({k: v[i:i + batch_size] for k, v in part.items()}, device)
                logits.append(forward_logits(model, b["input_ids"], b["token_type_ids"], b["input_len"]).float().cpu())
                labels.append(b["clicked"].cpu())
                wts.append(b["weight"].cpu())
    model.train()
    z = torch.cat(logits).numpy() if logits else np.zeros(0)
    y = torch.cat(labels).numpy() if labels else np.zeros(0)
    w = torch.cat(wts).numpy() if wts else np.zeros(0)
    gathered = [(z, y, w)]
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (z, y, w))
    z, y, w = (np.concatenate([g[i] for g in gathered]) for i in range(3))
    if len(z) == 0:
        return {"eval_rows": 0}
    p = 1 / (1 + np.exp(-z))
    per_row = metrics.log_loss_per_row(y, p)
    return {"eval_rows": int(len(z)), "eval_loss": float(np.mean(w * per_row)),
            "eval_logloss": float(per_row.mean()), "eval_auc": metrics.auc(y, p)}


def _maybe_inject_fault(rank: int, global_step: int) -> None:
    """Test hook, off unless CLICKWEIGHT_FAULT_RANK='RANK:STEP': that rank dies after that step."""
    spec = os.environ.get("CLICKWEIGHT_FAULT_RANK")
    if spec and spec == f"{rank}:{global_step}":
        print(f"[clickweight train] fault injected: rank {rank} exits after step {global_step}", flush=True)
        os._exit(17)


def train_worker(input_dir: str, output_dir: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One DDP rank. Returns the same summary on every rank."""
    t, started = cfg["train"], time.time()
    rank, world, device = _dist_setup(t["use_gpu"])
    torch.set_num_threads(max(1, t["torch_threads"]))
    torch.manual_seed(t["seed"])
    out = Path(output_dir)
    ckpt_dir = out / "checkpoints"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)

    model = build_cross_encoder(cfg["model"]["path"]).to(device)
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    optim = adamw(model, t["lr"], t["weight_decay"])
    steps = plan_steps(input_dir, rank, world, t)
    total_steps = steps * t["epochs"]
    warmup = int(t["warmup_ratio"] * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, linear_warmup_decay(warmup, total_steps))
    expected_rows = dataset_rows(input_dir)

    state = State()
    if (ckpt_dir / CHECKPOINT).exists():
        state = load_checkpoint(ckpt_dir / CHECKPOINT, model, optim, sched, rank)
    resumed_from = state.global_step
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if (ckpt_dir / "best.pt").exists():
        best_state = torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=True)

    while state.epoch < t["epochs"] and not state.stopped_early:
        epoch = state.epoch
        rng = np.random.default_rng([t["seed"], epoch, rank])
        buffer = ShuffleBuffer(t["shuffle_buffer_rows"], rng)
        eval_rows: list[dict[str, np.ndarray]] = []
        rows_read, step, losses = 0, 0, []
        read_wait_s, step_s, timed_steps = 0.0, 0.0, 0  # is the reader ever the bottleneck?

        def run_batches(buffer: ShuffleBuffer, losses: list[float], final: bool) -> None:
            nonlocal step, step_s, timed_steps
            for batch in buffer.take(t["batch_size"], final=final):
                if step >= steps:
                    continue  # drain: the guard still needs every row counted
                step += 1
                if step <= state.step_in_epoch:
                    continue  # resumed mid-epoch: replay the seeded order up to the checkpoint
                tick = time.perf_counter()
                b = _to_tensors(batch, device)
                logits = forward_logits(ddp, b["input_ids"], b["token_type_ids"], b["input_len"])
                loss = weighted_bce(logits, b["clicked"], b["weight"])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), t["max_grad_norm"])
                optim.step()
                sched.step()
                step_loss = float(loss.detach())
                if world > 1:
                    step_loss = _allreduce([step_loss])[0] / world
                losses.append(step_loss)
                step_s += time.perf_counter() - tick
                timed_steps += 1
                state.loss_curve.append(step_loss)
                state.global_step += 1
                _maybe_inject_fault(rank, state.global_step)
                state.step_in_epoch = step
                if t["checkpoint_every_steps"] and state.global_step % t["checkpoint_every_steps"] == 0 \
                        and step < steps:
                    rng_states = gather_rng_states()  # every rank takes part
                    if rank == 0:
                        save_checkpoint(ckpt_dir / CHECKPOINT, model, optim, sched, state, rng_states)

        batches = iter_shard(input_dir, rank, world, seed=t["seed"] + epoch, fields=training_fields(),
                             pool=t["reader_pool"])
        while True:
            tick = time.perf_counter()
            batch = next(batches, None)
            read_wait_s += time.perf_counter() - tick
            if batch is None:
                break
            rows_read += len(batch["clicked"])
            held = is_eval(batch.pop("query_bucket"), t["eval_fraction"])
            if held.any():
                eval_rows.append({k: v[held] for k, v in batch.items()})
            buffer.add({k: v[~held] for k, v in batch.items()})
            run_batches(buffer, losses, final=False)
        run_batches(buffer, losses, final=True)

        total_read = int(_allreduce([rows_read])[0])
        # This rank's split of the epoch's time, waiting on Petastorm vs in steps (rank 0's is saved).
        timing = {"read_wait_s": round(read_wait_s, 3), "step_s": round(step_s, 3), "timed_steps": timed_steps,
                  "rows_read_per_s": round(rows_read / read_wait_s, 1) if read_wait_s else None,
                  "rows_trained_per_s": round(timed_steps * t["batch_size"] / step_s, 1) if step_s else None}
        if total_read != expected_rows:
            raise ReaderGuardError(f"epoch {epoch}: ranks read {total_read} rows but the Parquet footers of "
                                   f"{input_dir} hold {expected_rows}: refusing to train on a partial read")
        if step < steps:
            raise ReaderGuardError(f"epoch {epoch}: rank {rank} made {step} of {steps} planned steps")

        ev = _evaluate(model, eval_rows, device, t["batch_size"] * 2)
        # The epoch's steps, those before a resume included (every rank takes `steps` steps).
        epoch_losses = state.loss_curve[-steps:]
        train_loss = [float(np.sum(epoch_losses)), float(len(epoch_losses))]
        record = {"epoch": epoch, "steps": steps, "global_step": state.global_step,
                  "train_loss": train_loss[0] / train_loss[1] if train_loss[1] else None,
                  "rows_read": total_read, **ev, "timing_rank0": timing}
        state.history.append(record)
        if "eval_loss" not in ev:  # no held-out query in this table: keep the latest weights
            improved = True
        else:
            improved = ev["eval_loss"] < state.best_eval_loss - 1e-6
        if improved:
            state.best_eval_loss = ev.get("eval_loss", state.best_eval_loss)
            state.bad_epochs = 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if rank == 0:
                torch.save(best_state, ckpt_dir / "best.tmp")
                os.replace(ckpt_dir / "best.tmp", ckpt_dir / "best.pt")
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs > t["early_stopping_patience"]
        state.epoch += 1
        state.step_in_epoch = 0
        rng_states = gather_rng_states()
        if rank == 0:
            save_checkpoint(ckpt_dir / CHECKPOINT, model, optim, sched, state, rng_states)
            print(f"[clickweight train] epoch {epoch}: " + json.dumps(record), flush=True)
        if dist.is_initialized():
            dist.barrier()

    summary = {
        "input": input_dir, "output": output_dir, "world_size": world, "steps_per_epoch": steps,
        "global_step": state.global_step, "resumed_from_step": resumed_from, "history": state.history,
        "loss_curve": state.loss_curve,
        "best_eval_loss": state.best_eval_loss if math.isfinite(state.best_eval_loss) else None,
        "stopped_early": state.stopped_early,
        "rows_per_epoch": expected_rows, "train_rows_per_epoch": steps * t["batch_size"] * world,
        "seconds": round(time.time() - started, 2),
    }
    if rank == 0:
        model.load_state_dict(best_state)
        save_model(model, cfg["model"]["path"], out, {"clickweight": summary, "config": cfg})
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary
