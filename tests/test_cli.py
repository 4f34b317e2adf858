"""The command-line contract, including a real spark-submit of the score job."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides

from jobs.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_every_subcommand(capsys):
    assert cli(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("generate", "score", "train", "evaluate", "pipeline"):
        assert name in text
    assert cli(["frobnicate"]) == 2


def test_bad_set_is_reported_without_traceback(capsys):
    assert cli(["score", "--input", "x", "--output", "y", "--set", "weighting.strategy=magic"]) == 2
    assert "weighting.strategy must be one of" in capsys.readouterr().err


def test_an_internal_value_error_keeps_its_traceback(monkeypatch):
    # Only user errors become one-line messages; a bug's ValueError must reach the user with its trace.
    import jobs.evaluate

    def buggy(argv):
        raise ValueError("internal bug")

    monkeypatch.setattr(jobs.evaluate, "main", buggy)
    with pytest.raises(ValueError, match="internal bug"):
        cli(["evaluate"])


def test_generate_cli(tmp_path):
    assert cli(["generate", "--output", str(tmp_path / "g"), "--rows", "300", "--days", "2", "--seed", "1"]) == 0
    assert len(pd.read_parquet(tmp_path / "g" / "clickstream")) == 300


@pytest.mark.timeout(600)
def test_spark_submit_score_job(tmp_path, tiny_model_dir):
    assert cli(["generate", "--output", str(tmp_path / "g"), "--rows", "300", "--days", "2"]) == 0
    spark_submit = Path(sys.executable).parent / "spark-submit"
    sets = [a for o in tiny_overrides(tiny_model_dir, "weighting.strategy=ipw") for a in ("--set", o)]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--conf", "spark.driver.host=127.0.0.1",
         str(ROOT / "jobs" / "score.py"), "--input", str(tmp_path / "g" / "clickstream"),
         "--output", str(tmp_path / "w"), *sets],
        capture_output=True, text=True, env=env, timeout=560)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "w" / "_summary.json").read_text())
    assert summary["rows_in"] == 300 == summary["rows_out"] + summary["rows_quarantined"]
    assert summary["strategy"] == "ipw" and summary["weights"]["mean"] == pytest.approx(1.0, abs=1e-6)
    # The job reads its own `_quarantine` by naming its files: no misleading "All paths were ignored".
    assert "All paths were ignored" not in proc.stderr
