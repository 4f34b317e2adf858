"""`clickweight report` on a real score output and a real model folder: every image decodes, the
numbers in its tables are the run's own (_summary.json, train_summary.json)."""
from __future__ import annotations

import json

from conftest import tiny_overrides
from report_check import read_report

from jobs import config
from jobs.cli import main as cli
from jobs.generate import generate, write
from jobs.report import fmt
from jobs.score import run_score
from jobs.train import run_training


def test_report_of_a_score_output_and_its_model(spark, tiny_model_dir, tmp_path, capsys):
    raw = tmp_path / "raw"
    write(generate(rows=400, days=2, seed=6, malformed_fraction=0.03), str(raw))
    cfg = config.load_config(overrides=tiny_overrides(
        tiny_model_dir, "weighting.strategy=denoise", "train.launcher=torchrun", "train.num_processes=1",
        "train.epochs=2", "train.batch_size=8", "train.eval_fraction=0.3", "train.precision=fp32",
        "scorer.precision=fp32"))
    out, model = tmp_path / "w", tmp_path / "m"
    summary = run_score(spark, f"{raw}/clickstream", str(out), cfg)
    assert cli(["report", str(out)]) == 0
    cells, images = read_report(out / "_report.html")
    assert len(images) == 4  # weights, propensity, calibration, suspects per position
    for value in (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"],
                  summary["weights"]["effective_sample_size"], summary["weights"]["mean"],
                  *summary["weights"]["quantiles"].values()):
        assert fmt(value) in cells, value
    for reason, n in summary["quarantine_reasons"].items():
        assert reason in cells and str(n) in cells
    md = (out / "_report.md").read_text()
    assert md.count("](_report_figures/") == 4 == len(list((out / "_report_figures").glob("*.png")))

    trained = run_training(str(out), str(model), cfg)
    assert cli(["report", str(model)]) == 0
    cells, images = read_report(model / "_report.html")
    assert len(images) == 1  # the loss curve
    stored = json.loads((model / "train_summary.json").read_text())
    assert stored["global_step"] == trained["global_step"]
    for h in stored["history"]:
        assert fmt(h["train_loss"]) in cells and fmt(h["eval_auc"]) in cells
    assert fmt(stored["start"]["eval_auc"]) in cells
    assert cli(["report", str(raw)]) == 2  # not a run folder: one line, no traceback
    assert "is not a score output" in capsys.readouterr().err


def test_the_background_warm_up_is_joined_before_any_figure_and_never_fails_the_report(monkeypatch):
    from jobs import report

    calls = []

    def broken() -> None:
        calls.append("warm")
        raise RuntimeError("no fonts here")

    monkeypatch.setattr(report, "_warming", None)
    monkeypatch.setattr(report, "_render_once", broken)
    report.warm_up_in_background()
    thread = report._warming
    report.warm_up_in_background()                 # once per process
    assert report._warming is thread
    fig, ax = report.figure()                      # waits for the warm-up, which failed quietly
    assert not thread.is_alive() and calls == ["warm"]
    assert report.png(fig)[:8] == b"\x89PNG\r\n\x1a\n"
