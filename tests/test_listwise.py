"""train.objective=listwise: the loss (against a loop written out by hand), batches of whole queries,
and the real recipe on a tiny BERT over a real score output's pair table (torchrun, 2 ranks, gloo)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from jobs.train import run_training
from training.model import weighted_listwise
from training.reader import QueryBatchBuffer
from udfs.clickstream.schema import PAIRS_DIR, QUERY_KEY
from udfs.errors import UserError


def listwise_by_hand(z, y, w, g) -> float:
    total = 0.0
    for key in dict.fromkeys(g):
        i = [k for k, gk in enumerate(g) if gk == key]
        if len(i) < 2 or sum(y[k] for k in i) == 0:
            continue
        lse = np.log(sum(np.exp(z[k]) for k in i))
        ys = sum(y[k] for k in i)
        total += sum(w[k] for k in i) * -sum(y[k] / ys * (z[k] - lse) for k in i)
    return total / len(z)


def test_listwise_loss_equals_the_loop_and_ignores_lists_without_information():
    rng = np.random.default_rng(0)
    n = 40
    z = rng.normal(0, 3, n)
    y = np.where(rng.random(n) < 0.4, rng.random(n), 0.0)
    w = rng.uniform(0.2, 3, n)
    g = rng.integers(0, 9, n) * 1_000_003 - 4_000_000  # int64 keys, negative ones included
    g[0] = 10**12  # a single-pair list: no listwise information
    got = weighted_listwise(torch.tensor(z), torch.tensor(y), torch.tensor(w), torch.tensor(g))
    assert float(got) == pytest.approx(listwise_by_hand(z, y, w, g), rel=1e-6)
    # Invariant to a shift of one query's logits (it is a softmax per query) ...
    shifted = z + np.where(g == g[1], 50.0, 0.0)
    assert float(weighted_listwise(torch.tensor(shifted), torch.tensor(y), torch.tensor(w),
                                   torch.tensor(g))) == pytest.approx(float(got), rel=1e-6)
    # ... and lowest when each query's softmax is its normalised labels.
    one = np.array([0.2, 0.6, 0.2, 0.0])
    keys = torch.tensor([5, 5, 5, 5])
    best = weighted_listwise(torch.tensor(np.log(one + 1e-9)), torch.tensor(one), torch.ones(4), keys)
    worse = weighted_listwise(torch.tensor(np.log(one[::-1].copy() + 1e-9)), torch.tensor(one), torch.ones(4), keys)
    assert float(best) < float(worse)
    # A query without clicks gives no gradient.
    zz = torch.tensor(z, requires_grad=True)
    weighted_listwise(zz, torch.zeros(n), torch.tensor(w), torch.tensor(g)).backward()
    assert torch.count_nonzero(zz.grad) == 0


def test_query_batches_hold_whole_queries_every_row_once_and_are_seeded():
    rows = 300
    keys = np.repeat(np.arange(60), np.random.default_rng(1).integers(1, 9, 60))[:rows]
    rows = len(keys)

    def run(seed):
        buf = QueryBatchBuffer(capacity=40, rng=np.random.default_rng(seed), key=QUERY_KEY)
        out = []
        for start in range(0, rows, 25):  # sorted by query, as the pair table's files are
            buf.add({"x": np.arange(start, min(start + 25, rows)), QUERY_KEY: keys[start:start + 25]})
            out += list(buf.take(16))
        out += list(buf.take(16, final=True))
        return out, buf.size
    batches, left = run(0)
    assert left == 0
    seen = np.concatenate([b["x"] for b in batches])
    assert sorted(seen.tolist()) == list(range(rows))  # every row exactly once
    assert all(len(b["x"]) <= 16 for b in batches)
    # Queries are not split across batches, except where a read boundary (every 25 rows) cut them.
    cut = {keys[i] for i in range(25, rows, 25) if keys[i] == keys[i - 1]}
    where = {}
    for n, b in enumerate(batches):
        for k in set(b[QUERY_KEY].tolist()):
            where.setdefault(k, set()).add(n)
    assert all(len(v) == 1 for k, v in where.items() if k not in cut)
    again, _ = run(0)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, again))
    assert not all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, run(1)[0]))


def test_listwise_needs_the_pair_table(tiny_model_dir):
    with pytest.raises(UserError, match="compact_pairs"):
        config.load_config(overrides=tiny_overrides(tiny_model_dir, "train.objective=listwise",
                                                    "train.compact_pairs=false"))
    with pytest.raises(UserError, match="train.objective"):
        config.load_config(overrides=tiny_overrides(tiny_model_dir, "train.objective=pairwise"))


@pytest.fixture(scope="module")
def weighted(spark, tiny_model_dir, tmp_path_factory) -> str:
    raw = tmp_path_factory.mktemp("raw") / "data"
    write(generate(rows=800, days=2, seed=5, malformed_fraction=0.0), str(raw))
    out = tmp_path_factory.mktemp("w") / "weighted"
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=action_value",
                                                      "scorer.precision=fp32"))
    run_score(spark, f"{raw}/clickstream", str(out), cfg)
    return str(out)


def test_the_pair_table_keeps_each_query_in_one_file(weighted):
    files = sorted((Path(weighted) / PAIRS_DIR).glob("*.parquet"))
    assert len(files) >= 2
    owner = {}
    for n, f in enumerate(files):
        frame = pd.read_parquet(f, columns=["query", QUERY_KEY])
        for q in frame["query"].unique():
            assert owner.setdefault(q, n) == n, f"query {q!r} is in two files"
    pairs = pd.read_parquet(Path(weighted) / PAIRS_DIR, columns=["query", QUERY_KEY])
    assert pairs.groupby("query")[QUERY_KEY].nunique().eq(1).all()
    assert pairs.groupby(QUERY_KEY)["query"].nunique().eq(1).all()


def test_listwise_recipe_two_ranks_trains_and_resumes_to_the_same_model(weighted, tiny_model_dir, tmp_path):
    sets = ("train.launcher=torchrun", "train.objective=listwise", "train.batch_size=16", "train.epochs=2",
            "train.lr=0.002", "train.warmup_ratio=0.0", "train.eval_fraction=0.3", "train.precision=fp32",
            "train.early_stopping_patience=5", "scorer.precision=fp32", "train.shuffle_buffer_rows=64")
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, *sets))
    summary = run_training(weighted, str(tmp_path / "model"), cfg)
    pairs = pd.read_parquet(Path(weighted) / PAIRS_DIR)
    hist = summary["history"]
    assert summary["world_size"] == 2 and len(hist) == 2
    assert all(h["rows_read"] == len(pairs) for h in hist)
    assert summary["global_step"] == 2 * summary["steps_per_epoch"] > 0
    losses = np.array(summary["loss_curve"])
    assert len(losses) == summary["global_step"] and np.all(np.isfinite(losses)) and losses.max() > 0
    print("listwise epochs", [h["train_loss"] for h in hist], summary["selected"])
