"""`clickweight explain`: one row's weight, recomputed from its signals, equals what the job stored."""
from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.cli import main as cli
from jobs.generate import generate, write
from jobs.score import run_score


@pytest.mark.parametrize("strategy,extra,rows", [
    ("combined", ["weighting.w_max=3.0"], 300),
    ("loss", ["weighting.temperature=0.5", "sampling.keep_fraction=0.7"], 300),
    # reads the click model's p_click and p_scorer_click: a log the EM can fit
    ("loss_reducible", ["weighting.temperature=0.5"], 2000),
])
def test_explain_recomputes_the_stored_weight(spark, tiny_model_dir, tmp_path, capsys, strategy, extra, rows):
    raw = tmp_path / "raw"
    write(generate(rows=rows, days=1, seed=4, malformed_fraction=0.03), str(raw))
    out = tmp_path / "w"
    run_score(spark, f"{raw}/clickstream", str(out), config.load_config(
        overrides=tiny_overrides(tiny_model_dir, f"weighting.strategy={strategy}", *extra)))
    rows = pd.read_parquet(out)
    picks = [rows["weight"].idxmax(), rows["weight"].idxmin(), rows.index[len(rows) // 2]]
    for i in picks:
        row = rows.loc[i]
        assert cli(["explain", "--output", str(out), "--event-id", row["event_id"]]) == 0
        text = capsys.readouterr().out
        assert f"strategy {strategy}: raw weight =" in text and "same)" in text, text
        stored = float(re.search(r"stored weight ([0-9.e+-]+)\)", text).group(1))
        assert stored == pytest.approx(row["weight"], rel=1e-5)
        final = re.search(r"clip\(([0-9.e+-]+)\) -> (inside the bounds|clipped to ([0-9.e+-]+))", text)
        shown = float(final.group(3) or final.group(1))
        assert shown == pytest.approx(row["weight"], rel=1e-5)  # the arithmetic shown gives the stored weight

    quarantined = pd.read_parquet(out / "_quarantine")
    if len(quarantined):
        assert cli(["explain", "--output", str(out), "--event-id", quarantined["event_id"].iloc[0]]) == 0
        assert "was quarantined: " + quarantined["reason"].iloc[0] in capsys.readouterr().out
    assert cli(["explain", "--output", str(out), "--event-id", "no-such-event"]) == 2
    assert "neither the output rows nor _quarantine" in capsys.readouterr().err
