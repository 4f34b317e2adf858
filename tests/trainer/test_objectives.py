"""The training objectives beside the pointwise default: train.objective=listwise (the loss against a
loop written out by hand, batches of whole queries) and train.position_tower (the pair table's
per-position sums, the loss, the tower dropped at export), each through the real recipe on a tiny BERT
over a real score output's pair table (torchrun, 2 ranks, gloo)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import score_generated, tiny_overrides

from jobs import config
from jobs.train import run_training
from training.metrics import floored_logit
from training.model import weighted_bce, weighted_bce_by_position, weighted_listwise, with_noise_floor
from training.reader import QueryBatchBuffer
from udfs.clickstream.schema import (
    PAIRS_DIR,
    POSITION_CLICKS,
    POSITION_IMPRESSIONS,
    POSITION_LABEL,
    POSITION_WEIGHT,
    QUERY_KEY,
)
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


def test_listwise_and_the_tower_need_the_pair_table(tiny_model_dir):
    for bad, message in ((("train.objective=listwise", "train.compact_pairs=false"), "compact_pairs"),
                         (("train.objective=pairwise",), "train.objective"),
                         (("train.position_tower=true", "train.compact_pairs=false"), "position_tower"),
                         (("train.position_tower=true", "train.objective=listwise"), "position_tower"),
                         (("train.tower_noise_floor=true",), "tower_noise_floor")):
        with pytest.raises(UserError, match=message):
            config.load_config(overrides=tiny_overrides(tiny_model_dir, *bad))


def test_position_loss_is_the_pointwise_loss_when_the_tower_is_flat():
    rng = np.random.default_rng(2)
    n, k = 12, 10
    pw = rng.uniform(0, 1, (n, k)) * (rng.random((n, k)) < 0.4)
    pl = np.where(pw > 0, rng.random((n, k)), 0.0)
    w = pw.sum(1)
    label = np.divide((pw * pl).sum(1), w, out=np.zeros(n), where=w > 0)
    z = torch.tensor(rng.normal(0, 2, n))
    flat = weighted_bce_by_position(z[:, None].expand(n, k), torch.tensor(pl), torch.tensor(pw))
    assert float(flat) == pytest.approx(float(weighted_bce(z, torch.tensor(label), torch.tensor(w))), rel=1e-6)
    tower = torch.tensor(np.linspace(0, -2, k))
    moved = weighted_bce_by_position(z[:, None] + tower[None, :], torch.tensor(pl), torch.tensor(pw))
    assert float(moved) != pytest.approx(float(flat), rel=1e-6)


def test_noise_floor_is_the_floored_probability_in_torch_and_numpy():
    logits = torch.tensor([[-40.0, -3.0, 0.0, 2.5, 40.0], [-1.0, -0.5, 0.5, 1.0, 6.0]], dtype=torch.float64)
    floor_logit = torch.tensor(-2.2, requires_grad=True)
    floored = with_noise_floor(logits, floor_logit)
    eps = 1 / (1 + np.exp(2.2))
    p = eps + (1 - eps) / (1 + np.exp(-logits.numpy()))
    finite = p < 1 - 1e-12  # the last column at +40: p rounds to 1, where only the log form stays finite
    np.testing.assert_allclose(floored.detach().numpy()[finite], np.log(p / (1 - p))[finite], rtol=1e-5)
    np.testing.assert_allclose(floored_logit(logits.numpy(), -2.2), floored.detach().numpy(), rtol=1e-5)
    # far below the floor the click probability is eps, whatever the logit; and eps is learnable
    assert float(floored[0, 0]) == pytest.approx(np.log(eps / (1 - eps)), rel=1e-4)
    assert torch.isfinite(floored).all()
    floored.sum().backward()
    assert floor_logit.grad is not None and float(floor_logit.grad) != 0.0


@pytest.fixture(scope="module")
def weighted(spark, tiny_model_dir, tmp_path_factory) -> str:
    return score_generated(spark, tiny_model_dir, tmp_path_factory, seed=5, strategy="action_value")


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


def test_pair_table_per_position_sums_reconcile_with_the_rows(weighted):
    pairs = pd.read_parquet(Path(weighted) / PAIRS_DIR)
    rows = pd.read_parquet(weighted, columns=["query", "title", "position", "clicked", "weight"])
    pw, pl = np.stack(pairs[POSITION_WEIGHT].to_numpy()), np.stack(pairs[POSITION_LABEL].to_numpy())
    pn, pc = np.stack(pairs[POSITION_IMPRESSIONS].to_numpy()), np.stack(pairs[POSITION_CLICKS].to_numpy())
    np.testing.assert_array_equal(pn.sum(1), pairs["impressions"])
    np.testing.assert_array_equal(pc.sum(1), pairs["clicks"])
    assert np.array_equal(pn > 0, pw > 0)
    assert pw.shape == (len(pairs), 10)
    np.testing.assert_allclose(pw.sum(1), pairs["weight"], rtol=1e-9)
    np.testing.assert_allclose((pw * pl).sum(1), pairs["weight"] * pairs["label"], rtol=1e-9, atol=1e-12)
    rows = rows.assign(query=rows["query"].str.strip(), title=rows["title"].str.strip(),
                       bucket=rows["position"].clip(upper=10), wy=rows["weight"] * rows["clicked"])
    sums = rows.groupby(["query", "title", "bucket"])[["weight", "wy"]].sum()
    counts = rows.groupby(["query", "title", "bucket"])["clicked"].agg(["size", "sum"])
    scale = pairs["weight_sum"].sum() / pairs["weight"].sum()
    index = {(q, t): i for i, (q, t) in enumerate(zip(pairs["query"], pairs["title"]))}
    for (q, t, b), (w, wy) in sums.iterrows():
        i = index[(q, t)]
        assert pw[i, b - 1] * scale == pytest.approx(w, rel=1e-9)
        assert pl[i, b - 1] == pytest.approx(wy / w, rel=1e-9)
        assert (pn[i, b - 1], pc[i, b - 1]) == tuple(counts.loc[(q, t, b)])
    assert (pw > 0).sum() == len(sums)  # and nothing at positions the pair was not shown at


def test_position_tower_trains_is_reported_and_is_dropped_at_export(weighted, tiny_model_dir, tmp_path):
    from transformers import AutoModel

    sets = ("train.launcher=torchrun", "train.batch_size=16", "train.epochs=1", "train.lr=0.002",
            "train.warmup_ratio=0.0", "train.eval_fraction=0.3", "train.precision=fp32", "scorer.precision=fp32")
    plain = run_training(weighted, str(tmp_path / "plain"), config.load_config(overrides=tiny_overrides(
        tiny_model_dir, *sets)))
    towered = run_training(weighted, str(tmp_path / "tower"), config.load_config(overrides=tiny_overrides(
        tiny_model_dir, *sets, "train.position_tower=true", "train.head_lr=0.05")))
    floored = run_training(weighted, str(tmp_path / "floor"), config.load_config(overrides=tiny_overrides(
        tiny_model_dir, *sets, "train.position_tower=true", "train.tower_noise_floor=true", "train.head_lr=0.05")))
    assert plain["position_tower"] is None and "noise_floor" not in towered["position_tower"]
    tower = towered["position_tower"]
    assert len(tower["logits"]) == 10 and tower["examination"][0] == 1.0
    # the floor trains with the tower (started at half the deepest bucket's click rate) and is reported
    assert 0 < floored["position_tower"]["noise_floor"] < 0.5
    assert floored["loss_curve"] != pytest.approx(towered["loss_curve"], rel=1e-6)
    # The gate judges the towered run's candidates on the held-out clicks at each position, with
    # their own tower: the same held-out impressions as the plain run, counted per position.
    assert towered["start"]["eval_impressions"] == plain["start"]["eval_impressions"] > 0
    assert towered["start"]["eval_rows"] > plain["start"]["eval_rows"]  # (pair, position) cells > pairs
    # Training moved the loss (the tower is in it) and the export is the relevance tower alone.
    assert towered["loss_curve"] != pytest.approx(plain["loss_curve"], rel=1e-6)
    assert AutoModel.from_pretrained(tmp_path / "tower").config.hidden_size == 32
    from safetensors import safe_open

    for name in ("tower", "floor"):
        with safe_open(str(tmp_path / name / "model.safetensors"), "pt") as saved:
            assert not any(("position" in k and "embeddings" not in k) or "noise_floor" in k for k in saved.keys())


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
