"""The training settings, typed: `train.*` of a validated config (jobs/config.py validates it), built
once by each rank's recipe and read as attributes. Frozen: nothing in a run changes them."""
from __future__ import annotations

from dataclasses import dataclass

from udfs.config_section import ConfigSection


@dataclass(frozen=True)
class TrainSettings(ConfigSection):
    launcher: str                      # torch_distributor | torchrun
    num_processes: int
    local_mode: bool
    use_gpu: bool
    epochs: int
    batch_size: int                    # per rank
    max_steps_per_epoch: int | None
    precision: str                     # auto | fp32 | bf16
    compact_pairs: bool                # train on the pair table (else on the row table)
    objective: str                     # pointwise | listwise
    position_tower: bool
    tower_noise_floor: bool            # the tower's clicks get a learnt floor eps (noise clicks)
    label_prior_impressions: float
    pair_weight_power: float
    lr: float
    head_lr: float
    recalibrate_start: bool
    select_by: str
    select_margin_se: float            # the start is kept only if it wins by more than this many SEs
    save_candidates: bool              # also write the start and each epoch (model + held-out arrays)
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    eval_fraction: float
    early_stopping_patience: int
    shuffle_buffer_rows: int
    reader_pool: str                   # dummy | thread
    torch_threads: int
    checkpoint_every_steps: int
    seed: int

    SECTION = "train"
    FLOATS = ("label_prior_impressions", "pair_weight_power", "lr", "head_lr", "weight_decay", "warmup_ratio",
              "max_grad_norm", "eval_fraction", "select_margin_se")
