"""The score job's commit: it aborts, committing nothing, when counts do not reconcile; a commit
interrupted between its two renames (jobs/outputs.py commit_dir) is restored, not lost; it replaces
only clickweight outputs and never touches a user's folder beside the output.

Real local Spark, real scoring (tiny BERT), Hadoop's FileSystem on local folders.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.common import HadoopFS
from jobs.generate import generate, write
from jobs.outputs import (
    MARKER,
    STAGING_MARKER,
    LocalFS,
    OutputRefused,
    check_output,
    commit_dir,
    forbidden_reason,
    prepare_staging,
    staged_path,
    staging_area,
)
from jobs.score import extract, load, release, transform


@pytest.fixture(scope="module")
def job(spark, tiny_model_dir, tmp_path_factory):
    """One scored, weighted frame (persisted) with its quarantine and statistics, as run_score has
    them just before `load`."""
    folder = tmp_path_factory.mktemp("commit_raw") / "data"
    write(generate(rows=200, days=2, seed=5, malformed_fraction=0.05), str(folder))
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=none"))
    df, _ = extract(spark, f"{folder}/clickstream", None)
    rows_in = df.count()
    # (the token ids per pair, transform's last value, are left out: these tests judge the commit, not the
    # pair table's columns)
    scored, quarantined, stats, cached, _ = transform(df, cfg, "commit-test", None)
    yield scored, quarantined, cfg, {"rows_in": rows_in, **stats}
    release(cached)


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

def staged(out: Path, name: str) -> Path:
    """A folder in the output's clickweight-owned staging area (created and marked as the job does)."""
    area = Path(staging_area(str(out)))
    area.mkdir(exist_ok=True)
    (area / STAGING_MARKER).write_text("{}\n")
    return area / name


def test_commit_interrupted_between_its_renames_is_restored_by_the_next_run(spark, tmp_path):
    """Run 1 was killed after moving the output aside (into its staging area as old-run1) and before
    putting its staging folder in place: no `out`, the user's data in old-run1, a half tmp-run1."""
    out = tmp_path / "out"
    fs = HadoopFS(spark, str(out))
    users = user_output(staged(out, "old-run1"), "committed by run 0")
    user_output(staged(out, "tmp-run1"), "half of run 1")
    assert not out.exists()
    # Run 2 prepares its staging folder: the user's data is back in place, run 1's half output gone.
    assert prepare_staging(fs, str(out), "run2") == staged_path(str(out), "run2")
    assert contents(out) == users
    assert fs.list_names(staging_area(str(out))) == [STAGING_MARKER]
    # Run 2's own commit fails (its staging folder vanished): the output stays as it is.
    with pytest.raises(Exception, match="tmp-run2"):
        commit_dir(fs, staged_path(str(out), "run2"), str(out), "run2")
    assert contents(out) == users
    # Run 3 commits: its output replaces the user's, and its staging area is gone.
    staging = prepare_staging(fs, str(out), "run3")
    new = user_output(Path(staging), "committed by run 3")
    commit_dir(fs, staging, str(out), "run3")
    assert contents(out) == new
    assert os.listdir(tmp_path) == ["out"]


def test_a_stale_backup_never_replaces_the_current_output(spark, tmp_path):
    """Run 1 was killed after both renames, before deleting its backup: `out` is the newer output
    and wins over the stale copy."""
    out = tmp_path / "out"
    fs = HadoopFS(spark, str(out))
    current = user_output(out, "committed by run 1")
    user_output(staged(out, "old-run1"), "committed by run 0")
    staging = prepare_staging(fs, str(out), "run2")
    assert contents(out) == current
    new = user_output(Path(staging), "committed by run 2")
    commit_dir(fs, staging, str(out), "run2")
    assert contents(out) == new and os.listdir(tmp_path) == ["out"]


def test_the_next_score_run_after_an_interrupted_commit(job, spark, tmp_path):
    """The whole `load` after an interrupted commit: a run that fails verification leaves the user's
    data restored in place; the next good run commits its verified output and clears every leftover."""
    scored, quarantined, cfg, base = job
    out = tmp_path / "out"
    users = user_output(staged(out, "old-run1"), "committed by run 0")
    user_output(staged(out, "tmp-run1"), "half of run 1")
    with pytest.raises(RuntimeError, match="counts do not reconcile"):
        load(scored, quarantined, str(out), cfg, "run2", summary_of(base, "run2", rows_in_delta=+1))
    assert contents(out) == users and os.listdir(tmp_path) == ["out"]
    summary = load(scored, quarantined, str(out), cfg, "run3", summary_of(base, "run3"))
    assert summary["rows_in"] == summary["rows_out"] + summary["rows_quarantined"]
    assert len(pd.read_parquet(out)) == summary["rows_out"] and "_quarantine" in os.listdir(out)
    assert json.loads((out / MARKER).read_text())["kind"] == "score"
    assert os.listdir(tmp_path) == ["out"]


# ---------------------------------------------------------------- what a commit may touch

def test_user_folders_beside_the_output_are_never_touched(job, tmp_path):
    """Folders named like the old scheme's staging and backup names, or matching them as globs, are
    the user's: a commit and a failed run leave them byte for byte."""
    scored, quarantined, cfg, base = job
    out = tmp_path / "w"
    mine = {name: user_output(tmp_path / name, name) for name in
            ("w.old-backup", "w.tmp-mine", "w.old-run1", "w.tmp-run3", "w[1].old-x", "w*")}
    load(scored, quarantined, str(out), cfg, "run1", summary_of(base, "run1"))
    with pytest.raises(RuntimeError, match="counts do not reconcile"):
        load(scored, quarantined, str(out), cfg, "run2", summary_of(base, "run2", rows_in_delta=+1))
    load(scored, quarantined, str(out), cfg, "run3", summary_of(base, "run3"))
    for name, files in mine.items():
        assert contents(tmp_path / name) == files, name
    assert sorted(os.listdir(tmp_path)) == sorted([*mine, "w"])


def test_a_folder_that_is_not_a_score_output_is_refused_unless_overwrite(spark, tmp_path):
    fs = HadoopFS(spark, str(tmp_path))
    users = tmp_path / "photos"
    users.mkdir()
    (users / "cat.jpg").write_text("meow")
    with pytest.raises(OutputRefused, match="not a clickweight output .*--overwrite"):
        check_output(fs, str(users), "score")
    check_output(fs, str(users), "score", overwrite=True)  # the user said so
    scored_out = tmp_path / "scored"
    scored_out.mkdir()
    (scored_out / MARKER).write_text(json.dumps({"kind": "score"}))
    check_output(fs, str(scored_out), "score")  # our own output: replaced without asking
    with pytest.raises(OutputRefused, match="it is a clickweight score output"):
        check_output(fs, str(scored_out), "generate")
    (tmp_path / "empty").mkdir()
    check_output(fs, str(tmp_path / "empty"), "score")


@pytest.mark.parametrize("target, reason", [
    ("/", "filesystem root"), ("~", "home directory"), (".", "working directory"), ("..", "working directory"),
    ("INPUT", "is or holds the input"), ("INPUT/..", "is or holds the input"), ("INPUT/sub", "inside the input"),
    ("hdfs://nn:8020/", "filesystem root"), ("OUT/w[1]", "glob"), ("OUT/w*", "glob"),
])
def test_outputs_that_are_never_replaced_even_with_overwrite(tmp_path, target, reason):
    source = tmp_path / "in" / "clickstream"
    target = os.path.expanduser(target.replace("INPUT", str(source)).replace("OUT", str(tmp_path)))
    assert reason in forbidden_reason(target, [str(source)])
    with pytest.raises(OutputRefused, match=reason):
        check_output(LocalFS(), target, "score", [str(source)], overwrite=True)
    assert forbidden_reason(str(tmp_path / "out"), [str(source)]) is None
