"""DDP training under faults (torchrun, gloo, tiny BERT): SIGKILL + resume replays the run; a dying rank fails fast.

The training table is written directly with pyarrow in the score output's layout (no Spark needed).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import fault_pythonpath, tiny_overrides, write_row_table

from jobs import config
from jobs.train import run_training

ROOT = Path(__file__).resolve().parents[2]
MAX_LEN = 32


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    """480 rows in 4 files x 2 row groups: enough shards for 2 ranks, ~10 steps of 16 per epoch."""
    root = tmp_path_factory.mktemp("train_table") / "weighted"
    return write_row_table(root, files=4, rows=120, row_group_size=60, days=2, seed=0, max_len=MAX_LEN)


def overrides(model_dir: str, *extra: str) -> list[str]:
    # A row table without a score summary: the cross-encoder (its prior is the table's prior_logit).
    return tiny_overrides(model_dir, "train.launcher=torchrun", "model.kind=cross_encoder", "train.compact_pairs=false",
                          "train.batch_size=16", "train.epochs=2",
                          "train.lr=0.002", "train.warmup_ratio=0.2", "train.eval_fraction=0.3",
                          "train.early_stopping_patience=5", "train.checkpoint_every_steps=3",
                          "train.shuffle_buffer_rows=64", *extra)


def kill_tree(pid: int) -> None:
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.timeout(400)
def test_sigkill_mid_epoch_then_rerun_resumes_with_the_same_loss_curve(table, tiny_model_dir, tmp_path):
    cfg = config.load_config(overrides=overrides(tiny_model_dir))
    clean = run_training(table, str(tmp_path / "clean"), cfg)
    total = clean["global_step"]
    assert clean["resumed_from_step"] == 0 and total == 2 * clean["steps_per_epoch"] >= 16
    assert len(clean["loss_curve"]) == total

    out = tmp_path / "killed"
    sets = [a for o in overrides(tiny_model_dir) for a in ("--set", o)]
    proc = subprocess.Popen([sys.executable, "-m", "jobs.train", "--input", table, "--output", str(out), *sets],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "checkpoint.pt"
    try:
        deadline = time.time() + 200
        while time.time() < deadline and proc.poll() is None and not ckpt.exists():
            time.sleep(0.02)
        # SIGKILL the whole launch right after the first checkpoint: CLI, torchrun and both ranks
        # (torchrun starts ranks in sessions of their own, so a process-group kill would miss them).
        kill_tree(proc.pid)
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(torch.load(ckpt, weights_only=True)["state"])
    assert 0 < state["global_step"] < total and state["step_in_epoch"] > 0, state  # died mid-epoch
    assert not (out / "train_summary.json").exists()

    resumed = run_training(table, str(out), cfg)
    assert resumed["resumed_from_step"] == state["global_step"]
    assert resumed["global_step"] == total
    # torchtune-style: the resumed run replays the same steps, so the curves agree step for step.
    assert np.allclose(resumed["loss_curve"], clean["loss_curve"], rtol=1e-6, atol=1e-7)
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in clean["history"]], rel=1e-6)
    assert resumed["history"][-1]["eval_loss"] == pytest.approx(clean["history"][-1]["eval_loss"], rel=1e-5)


@pytest.mark.timeout(180)
def test_a_rank_that_dies_fails_the_run_fast(table, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CLICKWEIGHT_FAULT_RANK", "1:3")  # rank 1 exits after its third step (tests/faults)
    monkeypatch.setenv("PYTHONPATH", fault_pythonpath(os.environ.get("PYTHONPATH")))
    cfg = config.load_config(overrides=overrides(tiny_model_dir))
    started = time.time()
    with pytest.raises(RuntimeError, match="training failed"):
        run_training(table, str(tmp_path / "model"), cfg)
    elapsed = time.time() - started
    assert elapsed < 90, f"took {elapsed:.0f}s: the surviving rank hung instead of being torn down"
    assert not (tmp_path / "model" / "train_summary.json").exists()


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    """Checkpoints load with weights_only=True: a pickle that would run code is rejected."""
    import pickle

    from training.checkpoint import load_checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "optim": {}, "sched": {}, "torch_rng": torch.get_rng_state(),
                "state": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path, None, None, None)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_keeps_the_start_shares_as_a_tensor(tmp_path):
    """The gate margin's per-row start shares survive a save/load exactly, outside the state's JSON;
    a checkpoint that still holds them in its JSON (older clickweight) loads the same."""
    import json

    from training.checkpoint import State, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 1)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: 1.0)
    shares = [0.1, -2.5e-7, 3.0000000001, 0.0]
    state = State(epoch=1, best="start", start_contributions=shares, fingerprint={"config": "x"})
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, optim, sched, state, {"torch_rng": torch.get_rng_state()})
    blob = torch.load(path, weights_only=True)
    assert "start_contributions" not in json.loads(blob["state"])
    assert blob["start_contributions"].dtype == torch.float64
    loaded = load_checkpoint(path, model, optim, sched)
    assert loaded.start_contributions == shares and loaded.epoch == 1 and loaded.best == "start"

    blob["state"] = json.dumps({**json.loads(blob["state"]), "start_contributions": shares})
    del blob["start_contributions"]
    torch.save(blob, path)
    assert load_checkpoint(path, model, optim, sched).start_contributions == shares
