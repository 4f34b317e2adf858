"""Training state and checkpoints: what a resumed run needs to continue as if never stopped.

`checkpoint.pt` (model, optimiser, scheduler, every rank's RNG, the State) is written atomically
every `train.checkpoint_every_steps` and at each epoch end; `best.pt` holds the weights of the
best of {start, each epoch} on held-out data. Loaded with weights_only=True: never unpickles code.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class State:
    """Everything a resumed run needs besides model/optimiser/scheduler tensors."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_eval_loss: float = math.inf
    best: str = "start"            # which model best.pt holds: "start" or "epoch N"
    start_eval: dict[str, Any] | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    # Mean loss over all ranks of every optimiser step so far: a resumed run carries the steps
    # before its restart, so its curve (and the epoch's train_loss) matches an uninterrupted run.
    loss_curve: list[float] = field(default_factory=list)
    fingerprint: str = ""          # input run and training config; a checkpoint of another is not resumed


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
    return State(**json.loads(blob["state"]))


def snapshot(model) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (the best-so-far model)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_best(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    torch.save(weights, folder / "best.tmp")
    os.replace(folder / "best.tmp", folder / BEST)


def load_best(folder: Path) -> dict[str, torch.Tensor] | None:
    path = folder / BEST
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
