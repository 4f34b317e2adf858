"""The score job's commit: it aborts, committing nothing, when counts do not reconcile; and a commit
interrupted between its two renames (jobs/common.py commit_dir) is restored, not lost.

Real local Spark, real scoring (tiny BERT), Hadoop's FileSystem on local folders.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.common import HadoopFS, commit_dir, sibling
from jobs.generate import generate, write
from jobs.score import extract, load, transform


@pytest.fixture(scope="module")
def job(spark, tiny_model_dir, tmp_path_factory):
    """One scored, weighted frame (persisted) with its quarantine and statistics, as run_score has
    them just before `load`."""
    folder = tmp_path_factory.mktemp("commit_raw") / "data"
    write(generate(rows=200, days=2, seed=5, malformed_fraction=0.05), str(folder))
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=none"))
    df, _ = extract(spark, f"{folder}/clickstream", None)
    rows_in = df.count()
    scored, quarantined, stats = transform(df, cfg, "commit-test", None)
    yield scored, quarantined, cfg, {"rows_in": rows_in, **stats}
    scored.unpersist()


def summary_of(base: dict, run_id: str, rows_in_delta: int = 0) -> dict:
    summary = copy.deepcopy(base)
    summary["run_id"] = run_id
    summary["rows_in"] += rows_in_delta
    return summary


def user_output(folder: Path, text: str) -> dict[str, str]:
    """A stand-in for an earlier committed output: a few files, returned as {relative path: content}."""
    (folder / "event_date=2026-01-01").mkdir(parents=True)
    files = {"_summary.json": f'{{"who": "{text}"}}\n', "event_date=2026-01-01/part-0.parquet": text}
    for rel, content in files.items():
        (folder / rel).write_text(content)
    return files


def contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- counts that do not reconcile

def test_job_aborts_when_counts_do_not_reconcile_and_commits_nothing(job, tmp_path):
    scored, quarantined, cfg, base = job
    # No earlier output: none appears.
    out = tmp_path / "fresh" / "out"
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="counts do not reconcile: in=.* nothing was committed"):
        load(scored, quarantined, str(out), cfg, "run1", summary_of(base, "run1", rows_in_delta=+1))
    assert os.listdir(out.parent) == []  # neither the output nor its staging folder
    # An earlier output: left exactly as it was (one row too few in the input's count this time).
    out = tmp_path / "kept" / "out"
    before = user_output(out, "previous run")
    with pytest.raises(RuntimeError, match="counts do not reconcile"):
        load(scored, quarantined, str(out), cfg, "run2", summary_of(base, "run2", rows_in_delta=-1))
    assert contents(out) == before
    assert os.listdir(out.parent) == ["out"]


# ---------------------------------------------------------------- interrupted commit

def test_commit_interrupted_between_its_renames_is_restored_by_the_next_commit(spark, tmp_path):
    """Run 1 was killed after moving the output aside (out -> out.old-run1) and before putting its
    staging folder in place: no `out`, the user's data in out.old-run1, a stale out.tmp-run1."""
    out = tmp_path / "out"
    fs = HadoopFS(spark, str(out))
    users = user_output(Path(sibling(str(out), "old", "run1")), "committed by run 0")
    user_output(Path(sibling(str(out), "tmp", "run1")), "half of run 1")
    assert not out.exists()
    # Run 2's own commit fails (its staging folder vanished): the user's data is back in place.
    with pytest.raises(Exception, match="tmp-run2"):  # the staging folder is missing
        commit_dir(fs, sibling(str(out), "tmp", "run2"), str(out), "run2")
    assert contents(out) == users
    assert not Path(sibling(str(out), "old", "run1")).exists() and not Path(sibling(str(out), "old", "run2")).exists()
    # Run 3 commits: its output replaces the user's, and no sibling is left behind.
    new = user_output(Path(sibling(str(out), "tmp", "run3")), "committed by run 3")
    commit_dir(fs, sibling(str(out), "tmp", "run3"), str(out), "run3")
    assert contents(out) == new
    assert os.listdir(tmp_path) == ["out"]


def test_a_stale_old_copy_never_replaces_the_current_output(spark, tmp_path):
    """Run 1 was killed after both renames, before deleting out.old-run1: `out` is the newer output
    and must win over the stale copy, on a failed commit as on a successful one."""
    out = tmp_path / "out"
    fs = HadoopFS(spark, str(out))
    current = user_output(out, "committed by run 1")
    user_output(Path(sibling(str(out), "old", "run1")), "committed by run 0")
    with pytest.raises(Exception, match="tmp-run2"):  # the staging folder is missing
        commit_dir(fs, sibling(str(out), "tmp", "run2"), str(out), "run2")
    assert contents(out) == current
    new = user_output(Path(sibling(str(out), "tmp", "run3")), "committed by run 3")
    commit_dir(fs, sibling(str(out), "tmp", "run3"), str(out), "run3")
    assert contents(out) == new and os.listdir(tmp_path) == ["out"]


def test_the_next_score_run_after_an_interrupted_commit(job, spark, tmp_path):
    """The whole `load` after an interrupted commit: a run that fails verification leaves the user's
    data where the interrupted run left it (out.old-<run>, not deleted); the next good run commits its
    verified output and clears every leftover."""
    scored, quarantined, cfg, base = job
    out = tmp_path / "out"
    users = user_output(Path(sibling(str(out), "old", "run1")), "committed by run 0")
    user_output(Path(sibling(str(out), "tmp", "run1")), "half of run 1")
    with pytest.raises(RuntimeError, match="counts do not reconcile"):
        load(scored, quarantined, str(out), cfg, "run2", summary_of(base, "run2", rows_in_delta=+1))
    assert not out.exists() and contents(Path(sibling(str(out), "old", "run1"))) == users
    summary = load(scored, quarantined, str(out), cfg, "run3", summary_of(base, "run3"))
    assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"]
    assert len(pd.read_parquet(out)) == summary["rows_out"] and "_quarantine" in os.listdir(out)
    assert os.listdir(tmp_path) == ["out"]
