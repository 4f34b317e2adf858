"""Weighted fine-tuning recipe: Petastorm shards -> DDP trainee -> the best of {start, each epoch}.

    clickweight train --input runs/demo/round_0/weighted_none --output runs/demo/model --set train.epochs=3
    spark-submit jobs/train.py --input ... --output ...   # TorchDistributor, N ranks

setup (process group, trainee at the scorer's calibrated start, optimiser, held-out pass, plan)
-> train (evaluate the start; per epoch: guarded shard pass, held-out evaluation, checkpoint,
early stopping) -> save (the best of {start, each epoch} by held-out weighted log loss) -> cleanup.
Every rank takes the same number of optimiser steps per epoch, so DDP never waits on a rank that
ran dry. A rerun with the same output folder and the same input and config resumes from its
last checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from training import checkpoint as ckpt
from training.metrics import (
    GATE_TOLERANCE,
    SELECT_KEYS,
    criterion_contributions,
    criterion_inputs,
    examination_cells,
    floored_logit,
    gate_keeps,
    held_out_metrics,
    log_examination,
    paired_standard_error,
    resolve_select_by,
    targets,
)
from training.model import adamw, build_trainee, linear_warmup_decay, optimiser_step, save_trainee
from training.progress import EpochProgress
from training.reader import (
    QueryBatchBuffer,
    ReaderGuardError,
    ShuffleBuffer,
    check_columns,
    check_rows_read,
    dataset_row_groups,
    dataset_rows,
    is_eval,
    iter_shard,
    read_text,
    training_fields,
    training_table,
)
from training.settings import TrainSettings
from udfs.clickstream.schema import (
    POSITION_CLICKS,
    POSITION_IMPRESSIONS,
    POSITION_LABEL,
    POSITION_WEIGHT,
    QUERY_KEY,
)
from udfs.errors import UserError
from udfs.scoring.device import autocast, resolve_precision
from udfs.weighting import calibration


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


def _gather_arrays(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    gathered = [arrays]
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, arrays)
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(len(arrays)))


def epoch_line(record: dict[str, Any], start: dict[str, Any], key: str) -> str:
    """The epoch's numbers a person reads: losses, held-out click AUC, the selection criterion against the start."""
    def num(d: dict[str, Any], k: str) -> str:
        v = d.get(k)
        return "n/a" if v is None else f"{v:.4f}"

    if not record:  # the start itself
        return f"held-out {key} {num(start, key)}, held-out click AUC {num(start, 'eval_auc')}"
    return (f"train loss {num(record, 'train_loss')}, held-out {key} {num(record, key)} (start {num(start, key)}), "
            f"held-out click AUC {num(record, 'eval_auc')} (start {num(start, 'eval_auc')})")


def read_score_summary(input_dir: str) -> dict[str, Any]:
    text = read_text(f"{input_dir.rstrip('/')}/_summary.json")
    return json.loads(text) if text else {}


class WeightedFinetuneRecipe:
    """One DDP rank of weighted fine-tuning (torchtune's setup / train / save / cleanup)."""

    def __init__(self, input_dir: str, output_dir: str, cfg: dict[str, Any]):
        self.cfg, self.t = cfg, TrainSettings.from_config(cfg)
        self.input_dir, self.out = input_dir, Path(output_dir)
        self.compact = self.t.compact_pairs
        self.table = training_table(input_dir, self.compact)
        self.score_summary = read_score_summary(input_dir)
        self.ckpt_dir = self.out / "checkpoints"
        has_propensity = bool(self.score_summary.get("propensity"))
        self.select_key = SELECT_KEYS[resolve_select_by(self.t.select_by, self.compact, self.t.position_tower,
                                                        has_propensity)]
        if self.t.select_by == "auto" and self.compact and not self.t.position_tower and not has_propensity:
            print("[clickweight train] train.select_by=auto: the score run has no examination propensities "
                  "(_summary.json), so the gate judges held-out clicks by impression_loss", flush=True)
        self.started = time.time()

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        t = self.t
        self.rank, self.world, self.device = _dist_setup(t.use_gpu)
        # One line per rank: in a cluster's executor logs it says which rank ran where, and from which
        # Python (a shipped environment's: ./env/bin/python under the executor's work dir).
        print(f"[clickweight train] rank {self.rank}/{self.world} on {socket.gethostname()} pid {os.getpid()} "
              f"device {self.device} python {sys.executable} torch {torch.__file__}", flush=True)
        torch.set_num_threads(max(1, t.torch_threads))
        torch.manual_seed(t.seed)
        self.precision = resolve_precision(t.precision, str(self.device))
        self.model = build_trainee(self.cfg["model"]["kind"], self.cfg["model"]["path"],
                                   self.score_summary.get("calibration")).to(self.device)
        self.model.train()
        self.tower = t.position_tower
        self.fields = (*training_fields(self.model.input_columns, self.compact, t.objective, self.tower),
                       self.model.start_feature)
        # examination_loss judges held-out clicks per position; the gate study reads them too
        self.examination = self.select_key == SELECT_KEYS["examination_loss"]
        if (t.save_candidates and self.compact) or self.examination:
            self.fields = (*self.fields, POSITION_IMPRESSIONS, POSITION_CLICKS)
        self.log_theta = self._log_examination() if self.examination else None
        self.fields = tuple(dict.fromkeys(self.fields))
        self.eval_rows, train_rows, start_data, position_weights = self._held_out_pass()
        self.start_head = self._fit_start_head(start_data) if t.recalibrate_start else None
        if self.tower:
            self.model.add_position_tower(self._tower_start(position_weights[0]),
                                          self._floor_start(*position_weights[1:]) if t.tower_noise_floor else None)
            self.model.to(self.device)
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.model) if dist.is_initialized() else self.model
        self.optim = adamw(self.model, t.lr, t.weight_decay, t.head_lr)
        self.steps = self._plan_steps(train_rows)
        total = self.steps * t.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, linear_warmup_decay(int(t.warmup_ratio * total),
                                                                                     total))
        self.state = self._resume()
        self.resumed_from = self.state.global_step
        self.best_weights = ckpt.load_best(self.ckpt_dir) or ckpt.snapshot(self.model)

    def _held_out_pass(self) -> tuple[dict[str, np.ndarray], int, np.ndarray, np.ndarray | None]:
        """One guarded pass over this rank's shard: its held-out rows (kept for every evaluation), how
        many rows it will train on, the start head's fitting data and (position tower) the training
        rows' summed weight, clicks and impressions per position bucket (3 x buckets)."""
        check_columns(self.table, self.fields)
        groups = dataset_row_groups(self.table)
        if groups < self.world:
            raise UserError(f"{self.table} has {groups} row groups for {self.world} ranks: re-run score with "
                             "more output files (output.files_per_date / output.min_row_groups_per_rank)")
        held, start, train_rows, rows, by_position = [], [], 0, 0, None
        feature = self.model.start_feature
        shard = iter_shard(self.table, self.rank, self.world, seed=0, fields=self.fields, pool=self.t.reader_pool)
        for batch in shard:
            mask = is_eval(batch["query_bucket"], self.t.eval_fraction)
            rows += len(mask)
            train_rows += int((~mask).sum())
            if mask.any():
                held.append({k: v[mask] for k, v in batch.items()})
            part = {k: v[~mask] for k, v in batch.items()}
            tg = targets(part, self.compact, self.t)
            start.append(np.stack([part[feature].astype(np.float64), tg["label"], tg["weight"]]))
            if self.tower and len(part[POSITION_WEIGHT]):
                sums = np.stack([np.asarray(np.stack(part[c]), np.float64).sum(axis=0)
                                 for c in (POSITION_WEIGHT, POSITION_CLICKS, POSITION_IMPRESSIONS)])
                by_position = sums if by_position is None else by_position + sums
        check_rows_read(int(_allreduce([rows])[0]), self.table, "held-out pass")
        merged = {k: np.concatenate([h[k] for h in held]) for k in held[0]} if held else {}
        if self.tower:  # every rank's sums (a collective: each rank takes part, with zeros if it has none)
            width = self.cfg["output"]["position_buckets"] if by_position is None else by_position.shape[1]
            sums = by_position if by_position is not None else np.zeros((3, width))
            by_position = np.array(_allreduce(list(sums.ravel()))).reshape(3, width)
        return (merged, train_rows, (np.concatenate(start, axis=1) if start else np.zeros((3, 0))),
                by_position)

    def _log_examination(self) -> np.ndarray:
        """log theta_k per position bucket: the score job's examination propensity (relative to position 1,
        floored at weighting.propensity_min; the last bucket, k and deeper, takes theta_k)."""
        propensity = self.score_summary.get("propensity")
        if not propensity:
            raise UserError("train.select_by=examination_loss needs the score run's examination propensities "
                            "(_summary.json 'propensity'), which this input lacks")
        return log_examination(propensity, float(self.cfg["weighting"]["propensity_min"]),
                               int(self.cfg["output"]["position_buckets"]))

    def _tower_start(self, position_weights: np.ndarray) -> list[float]:
        """The position tower's start: t_k = log theta_k, the score job's examination propensity (its
        deepest bucket the propensity there), centred so that its training-weighted mean is 0 (the
        start head was fitted without positions, so the start's average logit stays where it was)."""
        theta = {int(k): float(v) for k, v in (self.score_summary.get("propensity") or {}).items()}
        floor = float(self.cfg["weighting"]["propensity_min"])
        logs = np.log([max(theta.get(k, floor), floor) for k in range(1, len(position_weights) + 1)])
        total = position_weights.sum()
        centre = float(np.dot(position_weights, logs) / total) if total > 0 else 0.0
        return (logs - centre).tolist()

    @staticmethod
    def _floor_start(clicks: np.ndarray, impressions: np.ndarray) -> float:
        """The noise floor's start: half the click rate at the deepest position bucket with impressions,
        the least examined place, where clicks are likeliest to be the floor (training moves it)."""
        seen = np.flatnonzero(impressions > 0)
        return 0.5 * float(clicks[seen[-1]] / impressions[seen[-1]]) if len(seen) else 0.01

    def _fit_start_head(self, data: np.ndarray) -> dict[str, float]:
        """The start's click head refitted to the training loss on the training rows: (a, b) of a
        bi-encoder, the bias on a cross-encoder's prior. The ranking is the scorer's, untouched; the
        probabilities now fit the weighted target the epochs are judged on, so an epoch has to
        beat the start by what the encoder learns, not by the weights shifting the base rate."""
        x, y, w = data

        def sums_at(a: float, b: float) -> dict[str, float]:
            local = calibration.logistic_sums(x, y, w, a, b)
            return dict(zip(local, _allreduce(list(local.values()))))

        a0, b0, fit_a = self.model.start_head()
        a, b = calibration.fit_start_head(sums_at, a0, b0, fit_a=fit_a)
        self.model.set_start_head(a, b)
        return {"a_scorer": a0, "b_scorer": b0, "a": a, "b": b}

    def _plan_steps(self, train_rows: int) -> int:
        """Optimiser steps per epoch, identical on every rank: the smallest shard decides."""
        t = self.t
        op = dist.ReduceOp.MIN if dist.is_initialized() else None
        steps = int(_allreduce([train_rows // t.batch_size], op)[0])
        if t.max_steps_per_epoch:
            steps = min(steps, t.max_steps_per_epoch)
        if steps < 1:
            raise UserError(f"a shard has fewer than train.batch_size={t.batch_size} training rows; "
                             "lower the batch size or the number of ranks")
        return steps

    def _resume(self) -> ckpt.State:
        """The checkpoint's state when it was written for this input and config; a fresh State when
        there is none. Any other checkpoint is refused (jobs/train.py checks first, on the driver)."""
        fingerprint = ckpt.run_fingerprint(self.table, self.score_summary, self.cfg)
        path = self.ckpt_dir / ckpt.CHECKPOINT
        if path.exists():
            differs = ckpt.fingerprint_mismatch(ckpt.read_fingerprint(self.ckpt_dir), fingerprint)
            if differs:
                raise UserError(f"{path} was written for another run ({differs}): rerun with --fresh")
            return ckpt.load_checkpoint(path, self.model, self.optim, self.sched, self.rank)
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        return ckpt.State(fingerprint=fingerprint)

    # ------------------------------------------------------------ train

    def _tensors(self, batch: dict[str, np.ndarray], training: bool = True) -> dict[str, torch.Tensor]:
        """The batch's model inputs and (training) the loss's columns, as tensors on the device."""
        loss = ("label", "weight", QUERY_KEY, POSITION_LABEL, POSITION_WEIGHT) if training else ()
        return {k: torch.from_numpy(np.ascontiguousarray(_dense(v))).to(self.device) for k, v in batch.items()
                if k in self.model.input_columns or k in loss}

    def _held_out_logits(self) -> np.ndarray:
        """This rank's held-out pairs' logits z under the current weights (the relevance tower's)."""
        self.model.eval()
        rows, out = self.eval_rows, []
        n = len(rows["query_bucket"]) if rows else 0
        size = self.t.batch_size * 2
        with torch.inference_mode(), autocast(self.precision, str(self.device)):
            for i in range(0, n, size):
                b = self._tensors({k: v[i:i + size] for k, v in rows.items()}, training=False)
                out.append(self.model(b).float().cpu().numpy())
        self.model.train()
        return np.concatenate(out) if out else np.zeros(0)

    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics of the current weights, over all ranks."""
        rows = self.eval_rows
        n = len(rows["query_bucket"]) if rows else 0
        z = self._held_out_logits()
        names = ("label", "weight", "clicks", "impressions", "query")
        tg = {**targets(rows, self.compact), "query": rows["query_bucket"]} if n else \
            {k: np.zeros(0) for k in names}
        if self.tower:
            z, tg = self._by_position(z, rows, names)
        if self.examination:
            width = len(self.log_theta)
            for c in (POSITION_IMPRESSIONS, POSITION_CLICKS):
                tg[c] = np.asarray(_dense(rows[c]), np.float64) if n else np.zeros((0, width))
            names = (*names, POSITION_IMPRESSIONS, POSITION_CLICKS)
        z, *vals = _gather_arrays((z, *(tg[k] for k in names)))
        tg = dict(zip(names, vals))
        metrics = held_out_metrics(z, tg)
        # each held-out row's share of the selection criterion, and its query: the gate's margin
        if self.examination and len(z):
            cells = examination_cells(z, tg[POSITION_IMPRESSIONS], tg[POSITION_CLICKS], tg["query"], self.log_theta)
            share = criterion_contributions(cells["z"], cells["label"], cells["weight"], offset=cells["offset"])
            metrics[self.select_key] = float(share.sum())
            self.eval_contributions = (share, cells["query"])
        else:
            self.eval_contributions = (criterion_contributions(z, *criterion_inputs(self.select_key, tg)) if len(z)
                                       else np.zeros(0), tg["query"])
        return metrics

    def _by_position(self, z: np.ndarray, rows: dict[str, np.ndarray],
                     names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """With the tower, candidates are judged on what they were trained to predict: each held-out
        pair's clicks at each position it was shown at, with logit z + t_k (their own tower's t).
        Judged on clicks pooled over positions, a model whose z leaves position to the tower would
        lose to one that folds the ranker's positions into z, however well it ranks."""
        if not len(z):
            return z, {k: np.zeros(0) for k in names}
        tower = self.model.position_tower.detach().float().cpu().numpy().astype(np.float64)
        n = _dense(rows[POSITION_IMPRESSIONS]).astype(np.float64)
        shown = n > 0
        by_k = {"label": rows[POSITION_LABEL], "weight": rows[POSITION_WEIGHT], "clicks": rows[POSITION_CLICKS],
                "impressions": n, "query": np.broadcast_to(np.asarray(rows["query_bucket"])[:, None], n.shape)}
        flat = {k: np.asarray(_dense(by_k[k]), np.float64)[shown] for k in names}
        logits = (z[:, None] + tower[None, :])[shown]
        if self.model.noise_floor is not None:
            logits = floored_logit(logits, float(self.model.noise_floor.detach().float().cpu()))
        return logits, flat

    def _step(self, batch: dict[str, np.ndarray]) -> float:
        value = optimiser_step(self.ddp, self.model, self.optim, self._tensors(batch), self.precision,
                               str(self.device), self.t.max_grad_norm, self.sched, self.t.objective)
        return _allreduce([value])[0] / self.world if self.world > 1 else value

    def train(self) -> None:
        state = self.state
        if state.start_eval is None:  # the start is a candidate: training must beat it to be kept
            state.start_eval = self.evaluate()
            state.best_eval_loss = state.start_eval.get(self.select_key, math.inf)
            state.best = "start"
            if self.t.select_margin_se > 0:  # the margin's paired SE needs the start's per-row shares
                state.start_contributions = self.eval_contributions[0].tolist()
            if self.rank == 0:
                ckpt.save_best(self.ckpt_dir, self.best_weights)
                print(f"[clickweight train] start, before step 1: {epoch_line({}, state.start_eval, self.select_key)}"
                      f" over {state.start_eval.get('eval_rows', 0)} held-out rows", flush=True)
            self._save_candidate("start")
        while state.epoch < self.t.epochs and not state.stopped_early:
            record = self.train_epoch(state.epoch)
            self._select(record)
            self._save_candidate(f"epoch_{record['epoch']}")
            state.epoch += 1
            state.step_in_epoch = 0
            self.save_checkpoint()
            if self.rank == 0:
                print(f"[clickweight train] epoch {record['epoch'] + 1}/{self.t.epochs} done: "
                      f"{epoch_line(record, state.start_eval, self.select_key)}; exported so far: {state.best}",
                      flush=True)
            if dist.is_initialized():
                dist.barrier()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        t, state = self.t, self.state
        rng = np.random.default_rng([t.seed, epoch, self.rank])
        buffer = (QueryBatchBuffer(t.shuffle_buffer_rows, rng, QUERY_KEY) if t.objective == "listwise"
                  else ShuffleBuffer(t.shuffle_buffer_rows, rng))
        rows_read, step = 0, 0
        read_wait_s = step_s = 0.0
        progress = EpochProgress(f"epoch {epoch + 1}/{t.epochs}", self.steps, state.step_in_epoch,
                                 t.batch_size * self.world, enabled=self.rank == 0)

        def run_batches(final: bool) -> None:
            nonlocal step, step_s
            for batch in buffer.take(t.batch_size, final=final):
                if step >= self.steps:
                    continue  # drain: the guard still needs every row counted
                step += 1
                if step <= state.step_in_epoch:
                    continue  # resumed mid-epoch: replay the seeded order up to the checkpoint
                tick = time.perf_counter()
                state.loss_curve.append(self._step(batch))
                step_s += time.perf_counter() - tick
                progress.update(state.loss_curve[-1])
                state.global_step += 1
                state.step_in_epoch = step
                if t.checkpoint_every_steps and state.global_step % t.checkpoint_every_steps == 0 \
                        and step < self.steps:
                    self.save_checkpoint()

        batches = iter_shard(self.table, self.rank, self.world, seed=t.seed + epoch, fields=self.fields,
                             pool=t.reader_pool)
        while True:
            tick = time.perf_counter()
            batch = next(batches, None)
            read_wait_s += time.perf_counter() - tick
            if batch is None:
                break
            rows_read += len(batch["query_bucket"])
            train = ~is_eval(batch["query_bucket"], t.eval_fraction)
            part = {k: v[train] for k, v in batch.items()}
            buffer.add({**{k: part[k] for k in self.model.input_columns},
                        **{k: part[k] for k in (QUERY_KEY, POSITION_LABEL, POSITION_WEIGHT) if k in part},
                        **{k: v for k, v in targets(part, self.compact, t).items() if k in ("label", "weight")}})
            run_batches(final=False)
        run_batches(final=True)
        progress.close()
        total_read = check_rows_read(int(_allreduce([rows_read])[0]), self.table, f"epoch {epoch}")
        if step < self.steps:
            raise ReaderGuardError(f"epoch {epoch}: rank {self.rank} made {step} of {self.steps} planned steps")
        epoch_losses = state.loss_curve[-self.steps:]  # those before a resume included
        return {"epoch": epoch, "steps": self.steps, "global_step": state.global_step,
                "train_loss": float(np.mean(epoch_losses)) if epoch_losses else None,
                "rows_read": total_read, **self.evaluate(),
                "timing_rank0": {"read_wait_s": round(read_wait_s, 3), "step_s": round(step_s, 3),
                                 "step_ms": round(1000 * step_s / max(1, self.steps), 1)}}

    def _select(self, record: dict[str, Any]) -> None:
        """Keep the epoch if it beats the best so far (the start included) on the held-out criterion
        train.select_by names (training.metrics.SELECT_KEYS)."""
        state = self.state
        state.history.append(record)
        key = self.select_key
        se = None
        if (key in record and state.best == "start" and self.t.select_margin_se > 0 and state.start_contributions
                and record[key] >= state.best_eval_loss - GATE_TOLERANCE):
            # a start that wins by less than the held-out clicks can tell apart is not kept over training
            contributions, queries = self.eval_contributions
            se = paired_standard_error(contributions, np.asarray(state.start_contributions), queries)
            record["start_margin_se"] = se
        improved = key not in record or gate_keeps(record[key], state.best_eval_loss, state.best == "start",
                                                   self.t.select_margin_se, se)
        if improved:  # (no held-out query at all: keep the latest weights)
            state.best_eval_loss = record.get(key, state.best_eval_loss)
            state.best = f"epoch {record['epoch']}"
            state.bad_epochs = 0
            self.best_weights = ckpt.snapshot(self.model)
            if self.rank == 0:
                ckpt.save_best(self.ckpt_dir, self.best_weights)
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs > self.t.early_stopping_patience

    def _save_candidate(self, name: str) -> None:
        """train.save_candidates: the current weights as a model folder (rank 0) and each rank's held-out
        pairs with their logits z (the relevance tower's: no position term), clicks and impressions, in
        total and per position where the table has them, so gate criteria can be studied offline."""
        if not self.t.save_candidates:
            return
        folder = self.out / "candidates" / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = self.eval_rows
        n = len(rows["query_bucket"]) if rows else 0
        arrays = {"z": self._held_out_logits()}
        if n:
            tg = targets(rows, self.compact)
            arrays.update(query_bucket=rows["query_bucket"], clicks=tg["clicks"], impressions=tg["impressions"])
            for c in (POSITION_IMPRESSIONS, POSITION_CLICKS):
                if c in rows:
                    arrays[c] = np.asarray(_dense(rows[c]), np.float64)
        np.savez(folder / f"heldout_rank{self.rank}.npz", **arrays)
        if self.rank == 0:
            save_trainee(self.model, self.cfg["model"]["path"], folder, {"clickweight": {"candidate": name},
                                                                          "config": self.cfg})

    def save_checkpoint(self) -> None:
        rng = ckpt.gather_rng_states()  # a collective: every rank takes part
        if self.rank == 0:
            ckpt.save_checkpoint(self.ckpt_dir / ckpt.CHECKPOINT, self.model, self.optim, self.sched, self.state, rng)

    # ------------------------------------------------------------ save / cleanup

    def save(self) -> dict[str, Any]:
        """The selected model (best of start and epochs) and the run summary; the same dict on every rank."""
        state = self.state
        summary = {
            "input": self.input_dir, "table": self.table, "compact_pairs": self.compact, "output": str(self.out),
            "kind": self.model.kind, "precision": self.precision, "world_size": self.world,
            "steps_per_epoch": self.steps, "global_step": state.global_step, "resumed_from_step": self.resumed_from,
            "history": state.history,
            "start": state.start_eval, "start_head": self.start_head, "selected": state.best,
            "selected_by": self.select_key,
            "loss_curve": state.loss_curve,
            "best_eval_loss": state.best_eval_loss if math.isfinite(state.best_eval_loss) else None,
            "stopped_early": state.stopped_early, "rows_per_epoch": dataset_rows(self.table),
            "train_rows_per_epoch": self.steps * self.t.batch_size * self.world,
            "scorer": self.score_summary.get("scorer_model"), "input_run_id": self.score_summary.get("run_id"),
            "objective": self.t.objective, "position_tower": self._tower_summary(),
            "seconds": round(time.time() - self.started, 2),
        }
        if self.rank == 0:
            self.model.load_state_dict(self.best_weights)
            scorer = self.score_summary.get("scorer_path")  # whose logit the table's prior_logit is
            prior = {"path": scorer, "calibration": self.score_summary.get("calibration")} if scorer else None
            save_trainee(self.model, self.cfg["model"]["path"], self.out, {"clickweight": summary, "config": self.cfg},
                         prior=prior)
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary

    def _tower_summary(self) -> dict[str, Any] | None:
        """The selected model's position tower: its logits and exp(t_k - t_1), the examination it learnt
        relative to position 1 (dropped at export: the saved model is the relevance tower alone)."""
        t = self.best_weights.get("position_tower")
        if t is None:
            return None
        t = t.float().cpu().numpy()
        out = {"logits": [round(float(v), 5) for v in t],
               "examination": [round(float(v), 5) for v in np.exp(t - t[0])]}
        floor = self.best_weights.get("noise_floor")
        if floor is not None:
            out["noise_floor"] = round(float(torch.sigmoid(floor.float())), 5)
        return out

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _dense(v: np.ndarray) -> np.ndarray:
    """A column of equal-length arrays (petastorm may hand them over as an object array) as a 2-D array."""
    return np.stack(v) if v.dtype == object else v


def train_worker(input_dir: str, output_dir: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One DDP rank, as TorchDistributor and torchrun call it. Returns the same summary on every rank."""
    recipe = WeightedFinetuneRecipe(input_dir, output_dir, cfg)
    recipe.setup()
    recipe.train()
    summary = recipe.save()
    recipe.cleanup()
    return summary
