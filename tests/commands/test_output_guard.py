"""The output guard on qualified paths: what no command may replace, however the path is spelled.

Every case runs the real command line (jobs.cli.main: parsing, config, the job's own checks) in
throw-away folders, with HOME and the working directory pointed into them, never at real ones.
Each refused target holds a KEEP file that must still be there afterwards. The cases are refused
before any Spark session or training starts, so the matrix runs in-process; one subprocess run
(the issue's own example: `file://<working directory>` with --overwrite) shows the same end to end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import cli
from jobs.generate import generate, write
from jobs.outputs import MARKER, Location, forbidden_reason, qualify

KEEP = "KEEP.txt"
SPELLINGS = ("plain", "file_url", "dotdot", "trailing_slash")


def spell(path: Path, how: str) -> str:
    p = str(path)
    if how == "file_url":
        return "file://" + p
    if how == "dotdot":
        return f"{p}/../{path.name}" if p != "/" else "/tmp/.."
    if how == "trailing_slash":
        return p.rstrip("/") + "/"
    return p


@pytest.fixture(scope="module")
def clickstream(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("guard_data") / "data"
    write(generate(rows=60, days=1, seed=2, malformed_fraction=0.0), str(folder))
    (folder / "clickstream" / f"_{KEEP}").write_text("input")  # `_` names are not data to Spark
    return folder / "clickstream"


@pytest.fixture
def sandbox(tmp_path, monkeypatch, clickstream):
    """HOME and the working directory inside tmp_path, a score output to train from, a plain file."""
    home, cwd = tmp_path / "h" / "home", tmp_path / "c" / "cwd"
    scored = tmp_path / "s" / "scored"
    for folder in (home, cwd, scored / "_pairs"):
        folder.mkdir(parents=True)
    for folder in (home, cwd, tmp_path / "h", tmp_path / "c"):
        (folder / KEEP).write_text("mine")
    (scored / MARKER).write_text(json.dumps({"kind": "score"}))
    (scored / KEEP).write_text("scored")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return {"tmp": tmp_path, "home": home, "cwd": cwd, "scored": scored, "clickstream": clickstream}


def command(name: str, output: str, box: dict) -> list[str]:
    if name == "generate":
        return ["generate", "--output", output, "--rows", "50", "--overwrite"]
    if name == "score":
        return ["score", "--input", str(box["clickstream"]), "--output", output, "--overwrite"]
    if name == "train":
        return ["train", "--input", str(box["scored"]), "--output", output, "--overwrite"]
    return ["pipeline", "--overwrite", "--set", f"pipeline.workdir={output}"]


# (rule, the refused target, the file that must survive, the words the message must hold)
RULES = {
    "root": (lambda b: Path("/"), None, "filesystem root"),
    "home": (lambda b: b["home"], lambda b: b["home"] / KEEP, "your home directory"),
    "above_home": (lambda b: b["home"].parent, lambda b: b["home"].parent / KEEP, "your home directory or holds it"),
    "cwd": (lambda b: b["cwd"], lambda b: b["cwd"] / KEEP, "the working directory"),
    "above_cwd": (lambda b: b["cwd"].parent, lambda b: b["cwd"].parent / KEEP, "the working directory or holds it"),
    "file": (lambda b: b["tmp"] / "notes.txt", lambda b: b["tmp"] / "notes.txt", "an existing file"),
}
INPUT_RULES = {
    "input": (lambda i: i, "is or holds the input"),
    "above_input": (lambda i: i.parent, "is or holds the input"),
    "inside_input": (lambda i: i / "sub", "inside the input"),
}


def refused(argv: list[str], capsys) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    return err


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("job", ["generate", "score", "train", "pipeline"])
def test_protected_targets_are_refused_even_with_overwrite(sandbox, capsys, job, rule, how):
    target, keep, words = RULES[rule]
    notes = sandbox["tmp"] / "notes.txt"
    before = {p: p.read_text() for p in sandbox["tmp"].rglob(KEEP)} | {notes: notes.read_text()}
    err = refused(command(job, spell(target(sandbox), how), sandbox), capsys)
    assert words in err and "refusing" in err and err.count("\n") == 1, err
    if keep:
        assert keep(sandbox).exists()
    assert {p: p.read_text() for p in before} == before  # every KEEP file (and the plain file) untouched
    assert not list(sandbox["tmp"].rglob("*.clickweight-staging"))


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("rule", INPUT_RULES)
@pytest.mark.parametrize("job", ["score", "train"])
def test_the_input_its_folders_and_its_inside_are_refused(sandbox, capsys, job, rule, how):
    target, words = INPUT_RULES[rule]
    source = sandbox["clickstream"] if job == "score" else sandbox["scored"]
    keep = source / (f"_{KEEP}" if job == "score" else KEEP)
    before = keep.read_text()
    err = refused(command(job, spell(target(source), how), sandbox), capsys)
    assert words in err, err
    assert keep.read_text() == before and len(list(source.iterdir())) >= 2


def test_train_refuses_a_url_it_cannot_write_and_makes_no_scheme_folder(sandbox, capsys):
    err = refused(command("train", "hdfs://nn:8020/models/r1", sandbox), capsys)
    assert "cannot write hdfs:// URLs" in err
    assert not (sandbox["cwd"] / "hdfs:").exists() and not list(sandbox["tmp"].rglob("hdfs:*"))


def test_a_non_clickweight_folder_still_needs_overwrite(sandbox, capsys):
    photos = sandbox["tmp"] / "photos"
    photos.mkdir()
    (photos / KEEP).write_text("cat")
    for job in ("generate", "train", "pipeline"):
        argv = [a for a in command(job, str(photos), sandbox) if a != "--overwrite"]
        assert "pass --overwrite" in refused(argv, capsys)
    assert (photos / KEEP).read_text() == "cat"


@pytest.mark.parametrize("path, default_fs, expected", [
    ("hdfs://nn/a/b/", "file:///", Location("hdfs", "nn:8020", Path("/a/b"))),
    ("hdfs://NN:8020/a/./c/../b", "file:///", Location("hdfs", "nn:8020", Path("/a/b"))),
    ("s3a://bucket//x/y/", "file:///", Location("s3a", "bucket", Path("/x/y"))),
    ("/lake/x", "hdfs://nn", Location("hdfs", "nn:8020", Path("/lake/x"))),
    ("file://localhost/tmp/../tmp/", "hdfs://nn", Location("file", "", Path(os.path.realpath("/tmp")))),
])
def test_qualify_spells_a_location_the_way_its_filesystem_does(path, default_fs, expected):
    assert qualify(path, default_fs) == expected


@pytest.mark.parametrize("output, source, words", [
    ("hdfs://nn:8020/a/b", "hdfs://nn/a", "inside the input"),     # default port
    ("s3a://lake/in/x", "s3://lake/in", "inside the input"),       # another connector, the same bucket
    ("s3://lake/", "s3a://lake/in", "filesystem root"),
    ("hdfs://nn/lake", "hdfs://nn:8020/lake/in/", "is or holds the input"),
])
def test_urls_are_compared_on_their_store(output, source, words):
    assert words in forbidden_reason(output, [source])


def test_other_stores_and_folders_beside_are_allowed(sandbox):
    assert forbidden_reason("hdfs://other/a/b", ["hdfs://nn/a"]) is None
    assert forbidden_reason(str(sandbox["tmp"] / "out"), [str(sandbox["clickstream"])]) is None
    assert forbidden_reason(str(sandbox["cwd"] / "runs" / "demo")) is None  # inside the working directory is fine


def test_the_issue_example_end_to_end(sandbox, clickstream):
    """`clickweight score --output file://<working directory> --overwrite`, a real process."""
    env = {**os.environ, "HOME": str(sandbox["home"])}
    run = subprocess.run([str(Path(sys.executable).parent / "clickweight"), "score", "--input", str(clickstream),
                          "--output", f"file://{sandbox['cwd']}/", "--overwrite"], cwd=sandbox["cwd"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "the working directory" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert (sandbox["cwd"] / KEEP).read_text() == "mine"
