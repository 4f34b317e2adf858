"""Training state and checkpoints: what a resumed run needs to continue as if never stopped.

`checkpoint.pt` (model, optimiser, scheduler, every rank's RNG, the State) is written atomically
every `train.checkpoint_every_steps` and at each epoch end; `best.pt` holds the weights of the
best of {start, each epoch} on held-out data. Loaded with weights_only=True: never unpickles code.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from udfs.files import replace_atomically, write_text_atomically

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FINGERPRINT = "fingerprint.json"  # beside checkpoint.pt: what it was trained on, readable without torch


def run_fingerprint(table: str, score_summary: dict[str, Any], cfg: dict[str, Any]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the input (its scoring run, every file the trainer
    streams with its size, the row count) and the training config (run_id aside)."""
    import hashlib

    from training.reader import dataset_rows, file_sizes
    from udfs.config_hash import config_hash

    material = json.dumps({"files": file_sizes(table), "rows": dataset_rows(table)}, sort_keys=True)
    return {"input_run_id": str(score_summary.get("run_id")),
            "input_files": hashlib.sha256(material.encode()).hexdigest()[:16],
            "config": config_hash({**cfg, "run_id": None})}


def fingerprint_mismatch(saved: dict[str, str] | None, current: dict[str, str]) -> str | None:
    """None when a checkpoint may be resumed, else what differs, in words."""
    if saved is None:
        return "the checkpoint records no input or config (written by an older clickweight)"
    labels = {"input_run_id": "the input's scoring run", "input_files": "the input's files", "config": "the config"}
    diff = [label for key, label in labels.items() if saved.get(key) != current[key]]
    return (", ".join(diff) + " differ") if diff else None


def read_fingerprint(folder: Path) -> dict[str, str] | None:
    path = folder / FINGERPRINT
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class State:
    """Everything a resumed run needs besides model/optimiser/scheduler tensors."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_eval_loss: float = math.inf
    best: str = "start"            # which model best.pt holds: "start" or "epoch N"
    start_eval: dict[str, Any] | None = None
    start_contributions: list[float] = field(default_factory=list)  # each held-out row's share of the start's criterion
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    # Mean loss over all ranks of every optimiser step so far: a resumed run carries the steps
    # before its restart, so its curve (and the epoch's train_loss) matches an uninterrupted run.
    loss_curve: list[float] = field(default_factory=list)
    fingerprint: dict[str, str] = field(default_factory=dict)  # run_fingerprint of the run that wrote it


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
    write_text_atomically(path.parent / FINGERPRINT, json.dumps(state.fingerprint, sort_keys=True) + "\n")
    # the start's per-row criterion shares (one per held-out cell) go as a float64 tensor, not JSON:
    # at a million held-out cells that is 8 MB of binary against ~20 MB of text re-encoded every save
    fields = {k: v for k, v in state.__dict__.items() if k != "start_contributions"}
    blob = {"model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
            "state": json.dumps(fields),
            "start_contributions": torch.tensor(state.start_contributions, dtype=torch.float64), **rng}
    replace_atomically(path, lambda tmp: torch.save(blob, tmp))  # a kill mid-save keeps the previous one


def load_checkpoint(path: Path, model, optim, sched, rank: int = 0) -> State:
    blob = torch.load(path, map_location="cpu", weights_only=True)
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
    state = State(**json.loads(blob["state"]))  # a checkpoint from before the tensor holds them in its JSON
    if "start_contributions" in blob:
        state.start_contributions = blob["start_contributions"].tolist()
    return state


def snapshot(model) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (the best-so-far model)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_best(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    replace_atomically(folder / BEST, lambda tmp: torch.save(weights, tmp))


def load_best(folder: Path) -> dict[str, torch.Tensor] | None:
    path = folder / BEST
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
