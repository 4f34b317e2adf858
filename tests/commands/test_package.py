"""`clickweight package` on a real standalone cluster whose workers' Python has none of our packages.

The workers' Python is the interpreter the venv was made from (no torch, pyarrow, pandas,
transformers or clickweight). The score job fails there as submitted plainly, and passes with the
archive shipped by `--archives`: its Python workers import clickweight and load the packaged model
from the unpacked archive under the executor's work dir, not from this checkout or this venv.
Then jobs/train.py (train.local_mode=false) with the same archive trains two DDP ranks, one per
executor, each run by the archive's Python (torchrun from the task's interpreter) on the packaged
model of its own unpacked copy; the exported model loads and scores with `evaluate`.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from standalone import BARRIER, BIN, StandaloneCluster

from jobs.generate import generate, write
from training.evaluate import evaluate

pytestmark = pytest.mark.cluster
BARE_PYTHON = str(Path(sys.executable).resolve())  # the venv's link target: the base interpreter


def bare_python_lacks_packages() -> bool:
    probe = subprocess.run([BARE_PYTHON, "-c", "import torch"], capture_output=True)
    return probe.returncode != 0


def rank_lines(work: Path) -> dict[str, tuple[str, str]]:
    """'rank R/W' -> (the executor folder whose logs printed it, the rest of its line)."""
    found = {}
    for log in work.glob("app-*/*/std*"):
        for line in log.read_text(errors="replace").splitlines():
            if "[clickweight train] rank " in line:
                rank, rest = line.split("[clickweight train] ")[1].split(" on ", 1)
                found[rank] = (str(log.parent), rest)
    return found


@pytest.mark.timeout(1200)
def test_archive_ships_the_environment_to_workers_without_it(tmp_path):
    if sys.prefix == sys.base_prefix or not bare_python_lacks_packages():
        pytest.skip("needs a venv whose base interpreter lacks torch")
    archive = tmp_path / "env.tar.gz"
    built = subprocess.run([str(BIN / "clickweight"), "package", "--output", str(archive), "--compress-level", "1"],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    site = next(n.rsplit("/", 3)[0] for n in names if n.endswith("site-packages/udfs/scoring/bert.py"))
    assert {f"{site}/jobs/score.py", f"{site}/conf/defaults.yaml", f"{site}/training/recipe.py"} <= names
    assert not [n for n in names if "__editable__" in n or "/pyspark/jars/" in n]
    # Refuses to replace the archive without --overwrite.
    again = subprocess.run([str(BIN / "clickweight"), "package", "--output", str(archive)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    raw = tmp_path / "raw"
    write(generate(rows=300, days=1, seed=3, malformed_fraction=0.0), str(raw))
    job = ["--input", f"{raw}/clickstream", "--set", "scorer.batch_size=32", "--set", "scorer.max_length=32",
           "--set", "model.max_length=32", "--set", "spark.conf.spark.sql.shuffle.partitions=4"]
    load_log = tmp_path / "loads.jsonl"
    with StandaloneCluster(tmp_path, workers=2, python=BARE_PYTHON) as cluster:
        plain = cluster.submit("plain", "jobs/score.py", [*job, "--output", str(tmp_path / "plain")],
                               "--conf", f"spark.pyspark.python={BARE_PYTHON}")
        assert plain.wait(timeout=300) != 0
        assert "No module named" in cluster.output("plain")  # the workers really lack the packages

        shipped = cluster.submit(
            "shipped", "jobs/score.py", [*job, "--output", str(tmp_path / "shipped")],
            "--archives", f"{archive}#env", "--conf", "spark.pyspark.python=./env/bin/python",
            "--conf", f"spark.pyspark.driver.python={sys.executable}",
            "--conf", f"spark.executorEnv.CLICKWEIGHT_LOAD_LOG={load_log}")
        rc = shipped.wait(timeout=600)
        assert rc == 0, cluster.output("shipped")[-4000:]

        # Training from the shipped environment: the DDP ranks are barrier tasks on the bare executors.
        train_log = tmp_path / "train_loads.jsonl"
        sets = ["train.local_mode=false", "train.num_processes=2", "train.batch_size=8", "train.epochs=1",
                "train.precision=fp32", "train.eval_fraction=0.2", "scorer.batch_size=32", "scorer.max_length=32",
                "model.max_length=32", "spark.conf.spark.sql.shuffle.partitions=4"]
        trained = cluster.submit(
            "train", "jobs/train.py",
            ["--input", str(tmp_path / "shipped"), "--output", str(tmp_path / "model"),
             *[a for o in sets for a in ("--set", o)]],
            *BARRIER, "--archives", f"{archive}#env", "--conf", "spark.pyspark.python=./env/bin/python",
            "--conf", f"spark.pyspark.driver.python={sys.executable}",
            "--conf", f"spark.executorEnv.CLICKWEIGHT_LOAD_LOG={train_log}")
        rc = trained.wait(timeout=600)
        assert rc == 0, cluster.output("train")[-4000:]

    summary = json.loads((tmp_path / "shipped" / "_summary.json").read_text())
    assert summary["rows_out"] == 300
    loads = [json.loads(line) for line in load_log.read_text().splitlines()]
    assert loads, "no executor loaded a model"
    work = str(cluster.work)
    for load in loads:  # every load on an executor: code and weights from the unpacked archive
        assert load["code"].startswith(work) and "/env/lib/" in load["code"], load
        assert load["path"].startswith(work) and "/env/lib/" in load["path"], load

    # Two ranks, one per executor, each run by the archive's Python with the archive's torch.
    train_summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert train_summary["world_size"] == 2 and train_summary["global_step"] > 0
    ranks = rank_lines(cluster.work)
    assert set(ranks) == {"rank 0/2", "rank 1/2"} and ranks["rank 0/2"][0] != ranks["rank 1/2"][0], ranks
    for folder, line in ranks.values():
        python = line.split(" python ")[1].split()[0]
        torch_file = line.split(" torch ")[1].split()[0]
        assert Path(python).parent.parent.resolve() == Path(folder, "env").resolve(), line
        assert torch_file.startswith(folder) and "/env/lib/" in torch_file, line
    # Each rank built its trainee from the packaged model of its own unpacked archive.
    trainee_loads = [json.loads(line) for line in train_log.read_text().splitlines()]
    trainee_loads = [x for x in trainee_loads if x["loader"].startswith("trainee_")]
    assert len(trainee_loads) == 2, trainee_loads
    folders = set()
    for load in trainee_loads:
        assert load["path"].startswith(work) and "/env/lib/" in load["path"], load
        assert load["code"].startswith(work) and "/env/lib/" in load["code"], load
        folders.add(load["path"].split("/env/lib/")[0])
    assert folders == {str(Path(f)) for f, _ in ranks.values()}, (folders, ranks)

    # The exported model loads and scores with the project's evaluate.
    result = evaluate(str(tmp_path / "model"), str(raw / "heldout.parquet"), "relevance", 2.0)
    assert result["rows"] > 0 and math.isfinite(result["auc"]), result
