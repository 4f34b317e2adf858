"""The iterative loop (seeds 000/001): `pipeline --set rounds=2` on tiny data in real local Spark."""
from __future__ import annotations

import json

import pytest
from conftest import tiny_overrides
from report_check import read_report

from jobs import config
from jobs.pipeline import run_pipeline
from jobs.report import fmt, write_report
from udfs.scoring.model_loader import click_head, resolve_model_path


@pytest.mark.timeout(1200)
def test_two_rounds_rescore_with_the_previous_round_model_only_if_it_won(spark, tiny_model_dir, tmp_path, caplog):
    cfg = config.load_config(overrides=tiny_overrides(
        tiny_model_dir, f"pipeline.workdir={tmp_path / 'work'}", "rounds=2",
        "pipeline.strategies=information_gain", "pipeline.max_steps_per_epoch=2", "generate.rows=300",
        "generate.days=1", "generate.malformed_fraction=0.0", "train.epochs=1", "train.batch_size=8",
        "train.launcher=torchrun", "train.eval_fraction=0.2", "weighting.em_max_pairs=0",
        "tracking.mlflow=true", f"tracking.uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"))
    (tmp_path / "mlruns").mkdir()
    result = run_pipeline(cfg)
    work = tmp_path / "work"
    rows = [r for r in result["results"] if r.get("round") is not None]
    assert [(r["strategy"], r["round"]) for r in rows] == [("information_gain", 0), ("information_gain", 1)]
    r0, r1 = rows
    round0_model = str(work / "round_0" / "model_information_gain")
    # The gate: round 1 scores (and starts) with round 0's model only if round 0's training beat its start.
    if r0["selected"] == "start":
        assert r0["next_scorer"] is None and r1["scorer_path"] == resolve_model_path(tiny_model_dir)
    else:
        assert r0["next_scorer"] == round0_model and r1["scorer_path"] == round0_model
        assert r1["init_from"] == round0_model
    assert r0["scorer_kind"] == r1["scorer_kind"] == "sentence_encoder"  # bi-encoders score by cosine
    assert click_head(r1["model"]) is not None
    for k in (0, 1):
        d = work / f"round_{k}"
        summary = json.loads((d / "weighted_information_gain" / "_summary.json").read_text())
        assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"] + summary["rows_sampled_out"]
        assert summary["propensity_fit"]["buckets"] == "p_model_quantiles"  # em_max_pairs=0: scorer bins
        assert summary["pair_label"] == "clicks"   # ... so the default label falls back to the click rate
        metrics = json.loads((d / "eval_information_gain.json").read_text())
        assert 0 <= metrics["auc"] <= 1 and (d / "model_information_gain" / "model.safetensors").exists()
        assert rows[k]["steps"] == 2
    table = (work / "pipeline_results.md").read_text()
    assert "| selected |" in table.splitlines()[0] and len(table.splitlines()) == 2 + 3  # header + zero-shot + 2
    assert json.loads((work / "pipeline_results.json").read_text())["rounds"] == 2
    # The pipeline's report: the comparison as a bar chart, the round's weights; the table's AUCs.
    cells, images = read_report(write_report(work))
    assert len(images) == 2
    assert all(fmt(r["auc"]) in cells for r in result["results"])

    # MLflow: one parent run, a child per (strategy, round) with its held-out metrics, params and model.
    from mlflow import MlflowClient

    assert "tracking:" not in caplog.text  # nothing failed to log
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("clickweight").experiment_id])
    parent = [r for r in runs if r.info.run_name == "pipeline"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert len(parent) == 1 and set(children) == {"information_gain round 0", "information_gain round 1"}
    assert parent[0].data.metrics["zero_shot_auc"] == pytest.approx(result["results"][0]["auc"])
    for k, row in enumerate(rows):
        child = children[f"information_gain round {k}"]
        assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert child.data.metrics["heldout_auc"] == pytest.approx(row["auc"])
        assert child.data.metrics["heldout_ndcg_at_10"] == pytest.approx(row["ndcg@10"])
        assert child.data.params["weighting.strategy"] == "information_gain"
        assert "weight_ess_fraction" in child.data.metrics and child.data.tags["input_run_id"]
        history = client.get_metric_history(child.info.run_id, "eval_loss")
        assert [m.step for m in history] == [0]  # one epoch
        model_files = {a.path for a in client.list_artifacts(child.info.run_id, "model")}
        assert "model/model.safetensors" in model_files and "model/checkpoints" not in model_files
