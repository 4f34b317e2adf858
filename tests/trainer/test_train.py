"""The trainee and the recipe: real multi-process DDP (gloo, CPU) on a tiny BERT, reading Petastorm
shards of a real score output (row table and pair table)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import score_generated, tiny_overrides

from jobs import config
from jobs.train import run_training
from training.metrics import recalibrated_loss
from training.model import build_trainee
from training.reader import is_eval
from udfs.clickstream.schema import PAIRS_DIR
from udfs.weighting.weights import bce, bce_with_logits


@pytest.fixture(scope="module")
def weighted(spark, tiny_model_dir, tmp_path_factory) -> str:
    # A non-uniform strategy: the pair table's summed weights are then not just impression counts.
    return score_generated(spark, tiny_model_dir, tmp_path_factory, seed=3, strategy="information_gain")


def train_cfg(model_dir: str, *extra: str) -> dict:
    return config.load_config(overrides=tiny_overrides(
        model_dir, "train.batch_size=16", "train.epochs=3", "train.lr=0.002", "train.warmup_ratio=0.0",
        "train.eval_fraction=0.3", "train.early_stopping_patience=5", "train.checkpoint_every_steps=10",
        "train.precision=fp32", "scorer.precision=fp32", *extra))


def read_pairs(weighted: str) -> pd.DataFrame:
    return pd.read_parquet(Path(weighted) / PAIRS_DIR)


def trainee_logits(trainee, frame: pd.DataFrame) -> np.ndarray:
    batch = {c: torch.from_numpy(np.stack(frame[c].to_numpy()) if frame[c].dtype == object
                                 else frame[c].to_numpy()) for c in trainee.input_columns}
    with torch.inference_mode():
        return trainee.eval()(batch).double().numpy()


def test_pair_table_reconciles_with_the_row_table(weighted):
    rows = pd.read_parquet(weighted)
    pairs = read_pairs(weighted)
    summary = json.loads((Path(weighted) / "_summary.json").read_text())
    assert pairs["impressions"].sum() == len(rows) == summary["rows_out"]
    assert len(pairs) == rows.groupby([rows["query"].str.strip(), rows["title"].str.strip()]).ngroups
    assert summary["pairs"]["compaction_ratio"] == pytest.approx(len(rows) / len(pairs))
    assert pairs["weight"].mean() == pytest.approx(1.0)
    assert pairs["weight_sum"].sum() == pytest.approx(rows["weight"].sum(), rel=1e-9)


def test_step_zero_trainee_reproduces_the_calibrated_p_model(weighted, tiny_model_dir):
    """At step 0 the bi-encoder's probability is the score job's calibrated p_model, pair by pair."""
    calibration = json.loads((Path(weighted) / "_summary.json").read_text())["calibration"]
    trainee = build_trainee("bi_encoder", tiny_model_dir, calibration)
    pairs = read_pairs(weighted)
    p = 1 / (1 + np.exp(-trainee_logits(trainee, pairs)))
    np.testing.assert_allclose(p, pairs["p_model"].to_numpy(), rtol=0, atol=2e-6)
    # And the cross-encoder, through its zero head plus the prior offset.
    cross = build_trainee("cross_encoder", tiny_model_dir, calibration)
    p_cross = 1 / (1 + np.exp(-trainee_logits(cross, pairs)))
    np.testing.assert_allclose(p_cross, pairs["p_model"].to_numpy(), rtol=0, atol=1e-7)  # float32 offset


def test_pair_loss_equals_row_loss_for_a_fixed_model(weighted, tiny_model_dir):
    """sum_rows w * BCE(p, y) == sum_pairs W * BCE(p, y_bar): compaction changes steps, not the loss."""
    calibration = json.loads((Path(weighted) / "_summary.json").read_text())["calibration"]
    trainee = build_trainee("bi_encoder", tiny_model_dir, calibration)
    pairs = read_pairs(weighted)
    pairs["p"] = 1 / (1 + np.exp(-trainee_logits(trainee, pairs)))
    rows = pd.read_parquet(weighted, columns=["query", "title", "clicked", "weight"])
    rows = rows.assign(query=rows["query"].str.strip(), title=rows["title"].str.strip()).merge(
        pairs[["query", "title", "p"]], on=["query", "title"], how="left", validate="many_to_one")
    assert rows["p"].notna().all()
    row_loss = float(np.sum(rows["weight"] * bce(rows["p"], rows["clicked"])))
    pair_loss = float(np.sum(pairs["weight_sum"] * bce(pairs["p"], pairs["label"])))
    assert pair_loss == pytest.approx(row_loss, rel=1e-6)


def test_torchrun_two_ranks_on_pairs_starts_at_p_model_and_model_loads(weighted, tiny_model_dir, tmp_path):
    from transformers import AutoModel

    out = tmp_path / "model"
    summary = run_training(weighted, str(out), train_cfg(tiny_model_dir, "train.launcher=torchrun",
                                                         "train.select_by=impression_loss"))
    pairs = read_pairs(weighted)
    hist = summary["history"]
    assert summary["world_size"] == 2 and len(hist) == 3 and summary["kind"] == "bi_encoder"
    assert all(h["rows_read"] == len(pairs) for h in hist)  # the guard's count matched the footers every epoch
    assert summary["global_step"] == 3 * summary["steps_per_epoch"]
    # The start is the scorer's cosine through the click head refitted to the training pairs' weighted
    # target: its held-out loss, computed here from the table alone, is what the recipe measured.
    head = summary["start_head"]
    train = pairs[~is_eval(pairs["query_bucket"].to_numpy(), 0.3)]
    for a, b in ((head["a"], head["b"]), (head["a_scorer"], head["b_scorer"])):  # the refit beats the scorer's
        loss = np.sum(train["weight"] * bce_with_logits(a * train["relevance"] + b, train["label"]))
        if (a, b) == (head["a"], head["b"]):
            refit_loss = loss
    assert refit_loss <= loss + 1e-9
    held = pairs[is_eval(pairs["query_bucket"].to_numpy(), 0.3)]
    z_start = head["a"] * held["relevance"] + head["b"]
    expected = np.sum(held["weight"] * bce_with_logits(z_start, held["label"])) / held["weight"].sum()
    assert summary["start"]["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert summary["start"]["eval_impressions"] == held["impressions"].sum()
    assert summary["start"]["eval_loss_recalibrated"] == pytest.approx(
        recalibrated_loss(z_start.to_numpy(), held["label"].to_numpy(), held["weight"].to_numpy()), rel=1e-5)
    # The impression criterion counts every held-out impression once, whatever the weights.
    assert summary["start"]["eval_impression_loss_recalibrated"] == pytest.approx(recalibrated_loss(
        z_start.to_numpy(), (held["clicks"] / held["impressions"]).to_numpy(), held["impressions"].to_numpy()),
        rel=1e-5)
    # The selected model is the best of {start, epochs} by that loss (after affine recalibration).
    key = summary["selected_by"]
    assert key == "eval_impression_loss_recalibrated"
    losses = {"start": summary["start"][key], **{f"epoch {h['epoch']}": h[key] for h in hist}}
    assert summary["selected"] == min(losses, key=losses.get)
    # Sentence-transformers layout, loadable by plain transformers; a and b stored beside it.
    assert AutoModel.from_pretrained(out).config.hidden_size == 32
    assert (out / "modules.json").exists() and (out / "1_Pooling" / "config.json").exists()
    marker = json.loads((out / "clickweight_model.json").read_text())
    assert marker["kind"] == "bi_encoder" and set(marker["click_head"]) == {"a", "b"}

    # A rerun on the finished folder resumes from the checkpoint and trains no further.
    again = run_training(weighted, str(out), train_cfg(tiny_model_dir, "train.launcher=torchrun",
                                                       "train.select_by=impression_loss"))
    assert again["global_step"] == summary["global_step"] and again["selected"] == summary["selected"]
    blob = torch.load(out / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert set(blob) == {"model", "optim", "sched", "torch_rng", "state", "start_contributions"}
    assert blob["start_contributions"].numel() == summary["start"]["eval_rows"]  # the margin's start shares


def test_the_defaults_train_on_the_click_models_label_and_gate_per_position(spark, tiny_model_dir,
                                                                           tmp_path_factory, tmp_path):
    """The shipped defaults end to end (score, then 2-rank training): the pair label is the click model's
    corrected relevance, not the click rate, and `select_by: auto` gates by examination_loss."""
    from training.metrics import SELECT_KEYS

    weighted = score_generated(spark, tiny_model_dir, tmp_path_factory, seed=4, strategy=None, pair_label=None,
                               row_inputs=False)
    cfg = train_cfg(tiny_model_dir, "train.launcher=torchrun")
    assert (cfg["weighting"]["strategy"], cfg["weighting"]["pair_label"], cfg["train"]["select_by"]) == (
        "none", "auto", "auto")
    summary_in = json.loads((Path(weighted) / "_summary.json").read_text())
    assert summary_in["pair_label"] == "click_model" and summary_in["propensity"]
    pairs = read_pairs(weighted)
    rate = (pairs["clicks"] / pairs["impressions"]).to_numpy()
    assert pairs["label"].between(0, 1).all() and np.abs(pairs["label"].to_numpy() - rate).mean() > 0.01
    summary = run_training(weighted, str(tmp_path / "model"), cfg)
    key = summary["selected_by"]
    assert key == SELECT_KEYS["examination_loss"]
    losses = {"start": summary["start"][key], **{f"epoch {h['epoch']}": h[key] for h in summary["history"]}}
    assert summary["selected"] == min(losses, key=losses.get)
    assert (tmp_path / "model" / "clickweight_model.json").exists()


def test_harmful_learning_rate_exports_the_start(weighted, tiny_model_dir, tmp_path):
    """Training that only hurts held-out loss leaves the start as the exported model, weight for weight.
    (The plain best-of gate: this fixture's held-out split is too small for the default margin of 2 SE
    to call the harm; test_a_start_within_the_margin_is_not_kept covers the margin.)"""
    from transformers import AutoModel

    out = tmp_path / "model"
    summary = run_training(weighted, str(out), train_cfg(
        tiny_model_dir, "train.launcher=torchrun", "train.lr=0.5", "train.head_lr=20.0", "train.epochs=2",
        "train.max_grad_norm=1000.0", "train.select_margin_se=0"))
    assert summary["selected"] == "start"
    key = summary["selected_by"]
    assert all(h[key] > summary["start"][key] for h in summary["history"])
    start = AutoModel.from_pretrained(tiny_model_dir).state_dict()
    saved = AutoModel.from_pretrained(out).state_dict()
    assert all(torch.equal(start[k], saved[k]) for k in start)
    head = json.loads((out / "clickweight_model.json").read_text())["click_head"]
    assert head["a"] == pytest.approx(summary["start_head"]["a"], rel=1e-6)
    assert head["b"] == pytest.approx(summary["start_head"]["b"], rel=1e-6)


def test_torch_distributor_two_ranks_on_rows(spark, weighted, tiny_model_dir, tmp_path):
    summary = run_training(weighted, str(tmp_path / "model"), train_cfg(
        tiny_model_dir, "train.launcher=torch_distributor", "train.epochs=1", "train.compact_pairs=false"))
    assert summary["world_size"] == 2 and summary["history"][0]["rows_read"] == 800
    assert summary["global_step"] == summary["steps_per_epoch"] >= 5


def test_cross_encoder_starts_at_the_scorer_and_scores_with_its_prior(weighted, tiny_model_dir, tmp_path):
    from training.evaluate import predict

    out = tmp_path / "cross"
    # Without the start's recalibration both kinds start exactly at the scorer's p_model.
    summary = run_training(weighted, str(out), train_cfg(
        tiny_model_dir, "train.launcher=torchrun", "model.kind=cross_encoder", "train.epochs=1",
        "train.recalibrate_start=false"))
    bi_start = run_training(weighted, str(tmp_path / "bi"), train_cfg(
        tiny_model_dir, "train.launcher=torchrun", "train.epochs=1", "train.max_steps_per_epoch=1",
        "train.recalibrate_start=false"))["start"]
    assert summary["kind"] == "cross_encoder"
    assert summary["start"]["eval_loss"] == pytest.approx(bi_start["eval_loss"], rel=1e-6)
    assert (out / "prior" / "config.json").exists()
    # The exported model predicts head + prior: with the start selected that is p_model itself.
    pairs = read_pairs(weighted).head(50)
    p = predict(str(out), pairs["query"].tolist(), pairs["title"].tolist(), max_length=32)
    if summary["selected"] == "start":
        np.testing.assert_allclose(p, pairs["p_model"], atol=2e-6)
    else:
        assert np.all((p > 0) & (p < 1)) and not np.allclose(p, pairs["p_model"], atol=1e-4)


def test_too_few_row_groups_for_ranks_is_a_clear_error(weighted, tiny_model_dir):
    from training.recipe import WeightedFinetuneRecipe

    recipe = WeightedFinetuneRecipe(weighted, "/nonexistent", train_cfg(tiny_model_dir))
    recipe.rank, recipe.world = 0, 16
    recipe.fields = ("query_bucket",)
    with pytest.raises(ValueError, match="4 row groups for 16 ranks"):
        recipe._held_out_pass()


def test_weighted_bce_by_hand():
    import math

    from training.model import weighted_bce

    logits = torch.tensor([0.0, 2.0])
    loss = weighted_bce(logits, torch.tensor([1.0, 0.25]), torch.tensor([2.0, 0.5]))
    expected = (2.0 * math.log(2) + 0.5 * (0.25 * math.log1p(math.exp(-2.0))
                                           + 0.75 * (2.0 + math.log1p(math.exp(-2.0))))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_pair_targets_shrink_toward_the_prior_and_temper_heads():
    from udfs.clickstream.pairs import pair_targets

    label, weight = pair_targets(np.array([1.0, 0.5]), np.array([1.0, 20.0]), np.array([1, 20]),
                                 np.array([0.2, 0.2]), prior_impressions=4.0, weight_power=0.5)
    assert label == pytest.approx([(1.0 + 4 * 0.2) / 5, (0.5 * 20 + 4 * 0.2) / 24])
    assert weight == pytest.approx([1.0, 20.0 / np.sqrt(20)])
    exact = pair_targets(np.array([0.3]), np.array([2.0]), np.array([7]), np.array([0.9]))
    assert exact[0] == pytest.approx([0.3]) and exact[1] == pytest.approx([2.0])


def test_checkpoint_of_another_config_or_input_is_refused_unless_fresh(weighted, tiny_model_dir, tmp_path):
    from jobs.outputs import OutputRefused

    out = tmp_path / "model"
    first = run_training(weighted, str(out), train_cfg(tiny_model_dir, "train.launcher=torchrun", "train.epochs=1"))
    assert first["global_step"] == first["steps_per_epoch"]
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    other_cfg = train_cfg(tiny_model_dir, "train.launcher=torchrun", "train.epochs=1", "train.seed=1")
    # Same folder, another config: refused before any rank starts, every file left as it was.
    with pytest.raises(OutputRefused, match=r"another run \(the config differ.*--fresh"):
        run_training(weighted, str(out), other_cfg)
    # Same config, the input rescored (another scoring run): refused too.
    rescored = tmp_path / "rescored"
    shutil.copytree(weighted, rescored)
    summary = json.loads((rescored / "_summary.json").read_text())
    (rescored / "_summary.json").write_text(json.dumps({**summary, "run_id": "another-run"}))
    with pytest.raises(OutputRefused, match="the input's scoring run differ"):
        run_training(str(rescored), str(out), train_cfg(tiny_model_dir, "train.launcher=torchrun", "train.epochs=1"))
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # --fresh starts over in the folder.
    again = run_training(weighted, str(out), other_cfg, fresh=True)
    assert again["resumed_from_step"] == 0 and again["global_step"] == again["steps_per_epoch"]


def test_a_model_folder_that_is_not_ours_is_refused(weighted, tiny_model_dir, tmp_path):
    from jobs.outputs import OutputRefused

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me")
    with pytest.raises(OutputRefused, match="not a clickweight output"):
        run_training(weighted, str(folder), train_cfg(tiny_model_dir, "train.launcher=torchrun"))
    with pytest.raises(OutputRefused, match="is or holds the input"):
        run_training(weighted, str(Path(weighted).parent), train_cfg(tiny_model_dir, "train.launcher=torchrun"))
    assert (folder / "todo.txt").read_text() == "keep me" and len(list(folder.iterdir())) == 1


def test_fit_logistic_reaches_the_weighted_soft_label_optimum():
    from udfs.weighting.calibration import fit_logistic, logistic_sums

    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=500), rng.random(500), rng.uniform(0.1, 3.0, 500)
    a, b = fit_logistic(lambda a, b: logistic_sums(x, y, w, a, b), 0.0, 0.0)
    sums = logistic_sums(x, y, w, a, b)
    assert abs(sums["g_a"]) < 1e-8 and abs(sums["g_b"]) < 1e-8  # the gradient of the weighted loss is zero
    # b alone, a fixed at 1: the weighted mean residual is zero.
    _, b1 = fit_logistic(lambda a, b: logistic_sums(x, y, w, a, b), 1.0, 0.0, fit_a=False)
    p = 1 / (1 + np.exp(-(x + b1)))
    assert abs(np.sum(w * (p - y))) < 1e-8


def test_saved_candidates_reproduce_the_gate_offline(weighted, tiny_model_dir, tmp_path):
    """train.save_candidates: the start and every epoch are written as loadable models with their held-out
    logits; the gate's criterion recomputed from those arrays alone is the one the recipe logged, and the
    exported model is the candidate it selected, weight for weight."""
    from transformers import AutoModel

    out = tmp_path / "model"
    summary = run_training(weighted, str(out), train_cfg(
        tiny_model_dir, "train.launcher=torchrun", "train.epochs=2", "train.save_candidates=true",
        "train.select_by=impression_loss"))  # recomputed below from the arrays (examination_loss: its own test)
    folders = sorted(p.name for p in (out / "candidates").iterdir())
    assert folders == ["epoch_0", "epoch_1", "start"]
    held = read_pairs(weighted)
    held = held[is_eval(held["query_bucket"].to_numpy(), 0.3)]
    key = summary["selected_by"]
    logged = {"start": summary["start"][key], **{f"epoch_{h['epoch']}": h[key] for h in summary["history"]}}
    for name in folders:
        parts = [np.load(out / "candidates" / name / f"heldout_rank{r}.npz") for r in (0, 1)]
        arr = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}
        assert len(arr["z"]) == len(held) and arr["impressions"].sum() == held["impressions"].sum()
        assert arr["position_impressions"].sum(axis=1) == pytest.approx(arr["impressions"])
        assert recalibrated_loss(arr["z"], arr["clicks"] / arr["impressions"], arr["impressions"]) == \
            pytest.approx(logged[name], rel=1e-5)
    chosen = summary["selected"].replace(" ", "_")
    exported = AutoModel.from_pretrained(out).state_dict()
    kept = AutoModel.from_pretrained(out / "candidates" / chosen).state_dict()
    assert all(torch.equal(exported[k], kept[k]) for k in exported)


def test_a_start_within_the_margin_is_not_kept(weighted, tiny_model_dir, tmp_path):
    """train.select_margin_se: the start is exported only if it beats the epochs by more than that many
    standard errors of the paired held-out difference (the SE each epoch faced is recorded). The same
    harmful run exports its start with no margin (test_harmful_learning_rate_exports_the_start)."""
    harmful = ("train.lr=0.5", "train.head_lr=20.0", "train.epochs=2", "train.max_grad_norm=1000.0")
    runs = {m: run_training(weighted, str(tmp_path / str(m)), train_cfg(
        tiny_model_dir, "train.launcher=torchrun", *harmful, f"train.select_margin_se={m}",
        "train.save_candidates=true")) for m in (2.0, 1e9)}
    for margin, summary in runs.items():
        key, start = summary["selected_by"], summary["start"][summary["selected_by"]]
        faced = [h for h in summary["history"] if "start_margin_se" in h]  # epochs judged against the start
        assert faced and all(h[key] > start and h["start_margin_se"] > 0 for h in faced)  # worse, SE measured
        within = any(h[key] - start <= margin * h["start_margin_se"] for h in faced)
        assert (summary["selected"] != "start") == within
    assert runs[1e9]["selected"] != "start"
    assert runs[1e9]["history"][0][key] == pytest.approx(runs[2.0]["history"][0][key], rel=1e-6)  # same training
    # benchmarks/gate_study.py replays this rule on saved candidates (and the test matrix's gate with it):
    # its criterion and its paired SE, from the arrays alone, are the trainer's
    from benchmarks import gate_study
    from training.metrics import SELECT_KEYS, log_examination, paired_standard_error

    criterion = {v: k for k, v in SELECT_KEYS.items()}[key]
    theta = json.loads((Path(weighted) / "_summary.json").read_text()).get("propensity")
    folder = tmp_path / "2.0" / "candidates"
    arrays = {name: gate_study.load_candidate(str(folder / name)) for name in ("start", "epoch_0", "epoch_1")}
    log_theta = log_examination(theta, gate_study.PROPENSITY_MIN, arrays["start"]["position_impressions"].shape[1])
    losses = {name: gate_study.per_pair_losses(a, criterion, log_theta) for name, a in arrays.items()}
    total = arrays["start"]["impressions"].sum()
    assert losses["start"].sum() / total == pytest.approx(runs[2.0]["start"][key], rel=1e-5)
    for h in runs[2.0]["history"]:
        name = f"epoch_{h['epoch']}"
        assert losses[name].sum() / total == pytest.approx(h[key], rel=1e-5)
        if "start_margin_se" in h:
            se = paired_standard_error(losses[name], losses["start"], arrays["start"]["query_bucket"]) / total
            assert se == pytest.approx(h["start_margin_se"], rel=1e-4)


def test_examination_loss_gate_judges_clicks_per_position_with_the_score_runs_examination(
        weighted, tiny_model_dir, tmp_path):
    """train.select_by=examination_loss: each held-out pair's clicks at each position, the candidate's
    logit offset by log theta_k of the score run; recomputed here from the saved candidates' arrays
    and the score summary alone, it is the figure the recipe logged and selected by."""
    from training.metrics import criterion_contributions, examination_cells

    out = tmp_path / "model"
    summary = run_training(weighted, str(out), train_cfg(
        tiny_model_dir, "train.launcher=torchrun", "train.epochs=2", "train.save_candidates=true",
        "train.select_by=examination_loss"))
    key = summary["selected_by"]
    assert key == "eval_examination_loss_recalibrated"
    theta = json.loads((Path(weighted) / "_summary.json").read_text())["propensity"]
    log_theta = np.log([max(float(theta.get(str(k), 0.05)), 0.05) for k in range(1, 11)])
    logged = {"start": summary["start"][key], **{f"epoch_{h['epoch']}": h[key] for h in summary["history"]}}
    for name, value in logged.items():
        parts = [np.load(out / "candidates" / name / f"heldout_rank{r}.npz") for r in (0, 1)]
        arr = {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}
        cells = examination_cells(arr["z"], arr["position_impressions"], arr["position_clicks"],
                                  arr["query_bucket"], log_theta)
        assert cells["weight"].sum() == arr["impressions"].sum()
        share = criterion_contributions(cells["z"], cells["label"], cells["weight"], offset=cells["offset"])
        assert share.sum() == pytest.approx(value, rel=1e-5)
    assert summary["selected"].replace(" ", "_") == min(logged, key=logged.get)
    with pytest.raises(ValueError, match="examination_loss"):
        train_cfg(tiny_model_dir, "train.select_by=examination_loss", "train.position_tower=true")
