"""Real multi-process DDP (gloo, CPU) on a tiny BERT, reading Petastorm shards of a real score output."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from jobs.train import run_training


@pytest.fixture(scope="module")
def weighted(spark, tiny_model_dir, tmp_path_factory) -> str:
    raw = tmp_path_factory.mktemp("raw") / "data"
    write(generate(rows=800, days=2, seed=3, malformed_fraction=0.0), str(raw))
    out = tmp_path_factory.mktemp("w") / "weighted"
    # Uniform weights: the loss-decrease assertion should not hinge on one strategy's variance.
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=none"))
    run_score(spark, f"{raw}/clickstream", str(out), cfg)
    return str(out)


def train_cfg(model_dir: str, *extra: str) -> dict:
    return config.load_config(overrides=tiny_overrides(
        model_dir, "train.batch_size=16", "train.epochs=3", "train.lr=0.002", "train.warmup_ratio=0.0",
        "train.eval_fraction=0.3", "train.early_stopping_patience=5", "train.checkpoint_every_steps=10", *extra))


def test_torchrun_two_ranks_loss_decreases_and_model_loads(weighted, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "model"
    summary = run_training(weighted, str(out), train_cfg(tiny_model_dir, "train.launcher=torchrun"))
    hist = summary["history"]
    assert summary["world_size"] == 2 and len(hist) == 3
    assert all(h["rows_read"] == 800 for h in hist)  # the guard's count matched the footers every epoch
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.05
    assert hist[0]["eval_rows"] > 0 and hist[-1]["eval_logloss"] < 0.69
    assert summary["global_step"] == 3 * summary["steps_per_epoch"]
    model = AutoModelForSequenceClassification.from_pretrained(out)  # plain transformers, safetensors
    assert model.config.num_labels == 1 and (out / "model.safetensors").exists()
    assert json.loads((out / "clickweight_model.json").read_text())["clickweight"]["global_step"] > 0

    # A rerun on the finished folder resumes from the checkpoint and trains no further.
    again = run_training(weighted, str(out), train_cfg(tiny_model_dir, "train.launcher=torchrun"))
    assert again["resumed_from_step"] == summary["global_step"] == again["global_step"]
    blob = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert set(blob) == {"model", "optim", "sched", "torch_rng", "state"}


def test_torch_distributor_two_ranks(spark, weighted, tiny_model_dir, tmp_path):
    summary = run_training(weighted, str(tmp_path / "model"),
                           train_cfg(tiny_model_dir, "train.launcher=torch_distributor", "train.epochs=1"))
    assert summary["world_size"] == 2 and summary["history"][0]["rows_read"] == 800
    assert summary["global_step"] == summary["steps_per_epoch"] >= 5


def test_too_few_row_groups_for_ranks_is_a_clear_error(weighted, tiny_model_dir):
    from training.recipe import plan_steps

    t = train_cfg(tiny_model_dir)["train"]
    with pytest.raises(ValueError, match="8 row groups for 16 ranks"):
        plan_steps(weighted, 0, 16, t)


def test_weighted_bce_by_hand():
    import math

    from training.model import weighted_bce

    logits = torch.tensor([0.0, 2.0])
    loss = weighted_bce(logits, torch.tensor([1, 0]), torch.tensor([2.0, 0.5]))
    expected = (2.0 * math.log(2) + 0.5 * (2.0 + math.log1p(math.exp(-2.0)))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
