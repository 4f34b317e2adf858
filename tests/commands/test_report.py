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


def test_file_shares_are_equal_and_pass_on_what_a_small_file_cannot_fill():
    from jobs.report import file_shares

    assert file_shares([100, 100, 100], 90) == [30, 30, 30]
    assert file_shares([5, 100, 100], 90) == [5, 43, 42]       # the small file's 25 go to the others
    assert file_shares([5, 100, 7], 1000) == [5, 100, 7]       # fewer rows than asked: every row
    assert sum(file_shares([3, 9, 1, 40, 2], 31)) == 31
    assert file_shares([], 10) == []


def test_the_report_sample_takes_rows_from_every_file_and_keeps_strings_in_arrow(tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import report

    sizes = {("2026-01-01", 0): 50, ("2026-01-01", 1): 400, ("2026-01-02", 0): 300}
    for (day, part), n in sizes.items():
        folder = tmp_path / f"event_date={day}"
        folder.mkdir(exist_ok=True)
        pq.write_table(pa.table({
            "event_id": [f"{day}/{part}/{i}" for i in range(n)], "query": [f"q{i % 4}" for i in range(n)],
            "title": [f"t{i}" for i in range(n)], "position": [1 + i % 5 for i in range(n)],
            "clicked": [i % 3 == 0 for i in range(n)], "weight": [float(i) for i in range(n)]}),
            folder / f"part-{part}.parquet", row_group_size=128)  # several row groups a file
    (tmp_path / "_summary.json").write_text("{}")                  # metadata is not rows
    monkeypatch.setattr(report, "READ_BATCH_ROWS", 16)              # a share spans several batches
    rows = report.read_rows(tmp_path, max_rows=300)
    assert len(rows) == 300 and rows["event_id"].is_unique
    taken = rows["event_id"].map(lambda e: e.rsplit("/", 1)[0]).value_counts().to_dict()
    assert taken == {"2026-01-01/0": 50, "2026-01-01/1": 125, "2026-01-02/0": 125}
    for file, n in taken.items():                                   # each file's first rows
        assert set(rows["event_id"][rows["event_id"].str.startswith(file + "/")]) == {f"{file}/{i}" for i in range(n)}
    assert isinstance(rows["title"].dtype, pd.ArrowDtype)
    assert len(report.read_rows(tmp_path, max_rows=10_000)) == 750
    assert list(report.read_rows(tmp_path, columns=("weight", "not_there")).columns) == ["weight"]
    # what the report does with the sample works on Arrow-backed strings
    section = report.extremes_section(rows, "")
    assert [t.split("**")[1] for t in section.text[1:]] == list(rows["query"].value_counts().index[:3])
    assert report.propensity_plot(rows, {"1": 1.0, "2": 0.5})[:4] == b"\x89PNG"
