"""The GPU paths of the trainees' forward, run on the CPU by asking for them: queries and titles
through the encoder in one call, and widths rounded up to a multiple of 8, give the two-call,
exact-width embeddings and gradients (up to float rounding); the CPU's default stays the old path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training import model as tm


def _batch(rows: int = 12, columns: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = {}
    for key, top in (("query", 7), ("title", 21)):
        lens = rng.integers(3, top + 1, rows)
        ids = np.zeros((rows, columns), dtype=np.int32)
        for r, k in enumerate(lens):
            ids[r, :k] = [101, *rng.integers(1000, 5000, k - 2), 102]
        out[f"{key}_ids"], out[f"{key}_len"] = torch.from_numpy(ids), torch.from_numpy(lens)
    out["label"] = torch.from_numpy(rng.random(rows))
    out["weight"] = torch.ones(rows, dtype=torch.float64)
    return out


def test_trimmed_width_rounds_only_when_asked():
    lengths = torch.tensor([3, 9, 5])
    assert tm.trimmed_width(lengths, 32) == 9  # a CPU tensor: the exact width
    assert tm.trimmed_width(lengths, 32, round_up=True) == 16
    assert tm.trimmed_width(torch.tensor([16]), 32, round_up=True) == 16
    assert tm.trimmed_width(torch.tensor([29]), 30, round_up=True) == 30  # never past the columns


@pytest.fixture()
def trainee(tiny_model_dir):
    torch.manual_seed(0)
    return tm.build_trainee("bi_encoder", tiny_model_dir, {"a": 10.0, "b": -5.0}).eval()


def test_one_encoder_call_matches_two(trainee, monkeypatch):
    batch = _batch()
    calls = []
    pooled = tm.mean_pooled
    monkeypatch.setattr(tm, "mean_pooled", lambda *a, **k: calls.append(a[1].shape) or pooled(*a, **k))
    z_two = trainee(batch)
    assert [s[0] for s in calls] == [12, 12]  # the CPU's default: two calls, each at its own width
    calls.clear()
    z_one = trainee(batch, one_call=True)
    assert [s[0] for s in calls] == [24]
    torch.testing.assert_close(z_one, z_two, rtol=1e-5, atol=1e-5)


def test_one_encoder_call_gradients_match_two(trainee):
    batch = _batch(seed=1)
    grads = []
    for one_call in (False, True):
        trainee.zero_grad(set_to_none=True)
        tm.weighted_bce(trainee(batch, one_call=one_call), batch["label"], batch["weight"]).backward()
        grads.append({n: p.grad.clone() for n, p in trainee.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
