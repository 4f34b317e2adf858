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

ROOT = Path(__file__).resolve().parents[2]


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
def test_spark_submit_score_job_as_the_readme_writes_it(tmp_path, tiny_model_dir):
    """README: `source .venv/bin/activate`, then `spark-submit --driver-java-options … jobs/score.py …`,
    from the repository root, with nothing else in the environment (no PYSPARK_*, no SPARK_HOME)."""
    assert cli(["generate", "--output", str(tmp_path / "g"), "--rows", "300", "--days", "2"]) == 0
    sets = " ".join(f"--set {o}" for o in tiny_overrides(tiny_model_dir, "weighting.strategy=ipw"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    command = (f"source {sys.prefix}/bin/activate && SPARK_LOCAL_IP=127.0.0.1 spark-submit --master 'local[2]' "
               "--driver-java-options -Dlog4j2.configurationFile=conf/log4j2.properties "
               f"jobs/score.py --input {tmp_path}/g/clickstream --output {tmp_path}/w {sets}")
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, env=env, timeout=560)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "w" / "_summary.json").read_text())
    assert summary["rows_in"] == 300 == summary["rows_out"] + summary["rows_quarantined"]
    assert summary["strategy"] == "ipw" and summary["weights"]["mean"] == pytest.approx(1.0, abs=1e-6)
    # The job reads its own `_quarantine` by naming its files: no misleading "All paths were ignored".
    assert "All paths were ignored" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if " WARN " in line] == []


@pytest.mark.timeout(600)
def test_console_is_quiet_and_says_each_phase_unless_debug(tmp_path, tiny_model_dir):
    assert cli(["generate", "--output", str(tmp_path / "g"), "--rows", "200", "--days", "1"]) == 0
    sets = [a for o in tiny_overrides(tiny_model_dir) for a in ("--set", o)]
    clickweight = str(Path(sys.executable).parent / "clickweight")

    def score(out: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([clickweight, "score", "--input", str(tmp_path / "g" / "clickstream"), "--output",
                               str(tmp_path / out), *sets], capture_output=True, text=True, timeout=280,
                              env={**os.environ, **env})

    quiet = score("w", CLICKWEIGHT_LOG="INFO")  # the default (tests run with WARNING)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    lines = quiet.stderr.splitlines()
    assert [line for line in lines if " WARN " in line or "log4j" in line] == []
    assert not [line for line in lines if "py4j" in line]
    for said in ("rows in; validating", "validate and score pairs done", "weights done", "writing rows",
                 "reading back to reconcile", "score: in=200"):
        assert any(said in line for line in lines), said
    loud = score("w2", CLICKWEIGHT_LOG="DEBUG")
    assert loud.returncode == 0
    loud_lines = loud.stderr.splitlines()
    assert any(" INFO DAGScheduler" in line for line in loud_lines)  # Spark's own INFO lines are back
    assert not [line for line in loud_lines if "DEBUG py4j" in line]  # but not py4j's per-call DEBUG lines
