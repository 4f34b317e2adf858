"""A typo gets one line, not a stack trace: every subcommand checks its inputs before any work.

Real `clickweight` processes, as a new user runs them: exit code 2 and at most 3 lines on stderr,
naming the path and what is wrong with it. CLICKWEIGHT_LOG=DEBUG brings the trace back.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from jobs.outputs import MARKER

CLICKWEIGHT = str(Path(sys.executable).parent / "clickweight")


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model_dir) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "clicks.csv").write_text("query,title\nsofa,red sofa\n")
    (root / "csv_folder").mkdir()
    (root / "csv_folder" / "part-0.csv").write_text("query,title\n")
    (root / "empty").mkdir()
    (root / "not_a_model").mkdir()
    pd.DataFrame({"query": ["sofa"], "title": ["red sofa"]}).to_parquet(root / "pairs.parquet")
    old = root / "old_score"
    old.mkdir()
    (old / MARKER).write_text(json.dumps({"kind": "score"}))
    gen = root / "generated"
    gen.mkdir()
    (gen / MARKER).write_text(json.dumps({"kind": "generate"}))
    return {"root": str(root), "model": tiny_model_dir, **{p.name.replace(".", "_"): str(p) for p in root.iterdir()}}


CASES = {
    "score_missing": (["score", "--input", "{root}/nope", "--output", "{root}/o"], "{root}/nope", "no such file"),
    "score_csv_file": (["score", "--input", "{clicks_csv}", "--output", "{root}/o"], "{clicks_csv}", "not Parquet"),
    "score_csv_folder": (["score", "--input", "{csv_folder}", "--output", "{root}/o"], "{csv_folder}",
                         "not Parquet"),
    "score_empty_folder": (["score", "--input", "{empty}", "--output", "{root}/o"], "{empty}", "no data files"),
    "score_unknown_table": (["score", "--input", "lake.no_such_table", "--output", "{root}/o"],
                            "lake.no_such_table", "no such table"),
    "train_missing": (["train", "--input", "{root}/nope", "--output", "{root}/m"], "{root}/nope", "no such file"),
    "train_not_score_output": (["train", "--input", "{csv_folder}", "--output", "{root}/m"], "{csv_folder}",
                               "not a clickweight score output"),
    "train_generate_output": (["train", "--input", "{generated}", "--output", "{root}/m"], "{generated}",
                              "a clickweight generate output, not a score output"),
    "train_no_pair_table": (["train", "--input", "{old_score}", "--output", "{root}/m"], "{old_score}",
                            "without the _pairs/ pair table"),
    "evaluate_missing_model": (["evaluate", "--model", "{root}/nope", "--input", "{pairs_parquet}", "--label-col",
                                "relevance", "--output", "{root}/e.json"], "{root}/nope", "no such file"),
    "evaluate_not_a_model": (["evaluate", "--model", "{not_a_model}", "--input", "{pairs_parquet}", "--label-col",
                              "relevance", "--output", "{root}/e.json"], "{not_a_model}", "not a model folder"),
    "evaluate_csv": (["evaluate", "--model", "{model}", "--input", "{clicks_csv}", "--label-col", "relevance",
                      "--output", "{root}/e.json"], "{clicks_csv}", "not Parquet"),
    "evaluate_no_label": (["evaluate", "--model", "{model}", "--input", "{pairs_parquet}", "--label-col",
                           "relevance", "--output", "{root}/e.json"], "{pairs_parquet}", "no column(s) relevance"),
    "explain_missing": (["explain", "--output", "{root}/nope", "--event-id", "e1"], "{root}/nope", "no such file"),
    "explain_not_score": (["explain", "--output", "{generated}", "--event-id", "e1"], "{generated}",
                          "not a score output"),
    "report_missing": (["report", "{root}/nope"], "{root}/nope", "no such file"),
    "report_a_file": (["report", "{clicks_csv}"], "{clicks_csv}", "a file, not a folder"),
}


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLICKWEIGHT, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CLICKWEIGHT_LOG": "INFO", **env})


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_is_one_line_naming_the_path(bad, case):
    argv, path, words = CASES[case]
    result = run([a.format(**bad) for a in argv])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) <= 3, result.stderr[-2000:]
    assert path.format(**bad) in lines[-1] and words in lines[-1], lines
    assert "Traceback" not in result.stderr and not result.stdout.strip()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: no permission to take away")
def test_an_unreadable_input_says_so(bad, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "part-0.parquet").write_bytes(Path(bad["pairs_parquet"]).read_bytes())
    locked.chmod(0)
    try:
        result = run(["score", "--input", str(locked), "--output", str(tmp_path / "o")])
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2 and "no read permission" in result.stderr and str(locked) in result.stderr


def test_debug_logging_keeps_the_trace(bad):
    result = run(["train", "--input", f"{bad['root']}/nope", "--output", f"{bad['root']}/m"], CLICKWEIGHT_LOG="DEBUG")
    assert result.returncode == 2 and "Traceback" in result.stderr and "no such file" in result.stderr
