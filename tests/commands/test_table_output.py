"""`score --output-table` and `train --input-table` against Spark's embedded Hive metastore (Derby).

Every command is its own process (the real CLI, its own JVM), sharing one Derby metastore and
warehouse under tmp_path, as scheduled runs on one metastore do. Each score run writes a new
version folder and switches the table to it in one metastore update; readers in another process
see the new version; the version before stays on disk, older ones go; a table clickweight did not
create is never altered; train streams the table's current version.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import tiny_overrides

from jobs.generate import generate, write

CLI = str(Path(sys.executable).parent / "clickweight")
TABLE = "default.clicks_weighted"


def metastore(tmp: Path) -> list[str]:
    return [f"spark.conf.spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName={tmp}/metastore_db;"
            "create=true", f"spark.conf.spark.sql.warehouse.dir={tmp}/warehouse",
            "spark.conf.spark.sql.catalogImplementation=hive"]


def cli(tmp: Path, *args: str, sets: list[str]) -> subprocess.CompletedProcess:
    cmd = [CLI, *args, *[a for s in sets for a in ("--set", s)]]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)


def spark_sql(tmp: Path, code: str) -> str:
    """Runs `code` (with `spark` bound, Hive catalog on the shared metastore) in a fresh process; its stdout."""
    (sets := metastore(tmp))
    conf = "".join(f".config({s.split('=', 1)[0][len('spark.conf.'):]!r}, {s.split('=', 1)[1]!r})" for s in sets)
    script = textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1"){conf}.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    """) + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(1500)
def test_table_versions_switch_atomically_and_train_streams_the_current_one(tmp_path, tiny_model_dir):
    raw, root = tmp_path / "raw", tmp_path / "versions"
    write(generate(rows=300, days=2, seed=5, malformed_fraction=0.02), str(raw))
    sets = tiny_overrides(tiny_model_dir, *metastore(tmp_path))
    (root / "v-notours").mkdir(parents=True)  # a user's folder in the versions root: never touched
    (root / "v-notours" / "keep.txt").write_text("mine")

    def score(run_id: str, *extra: str) -> dict:
        done = cli(tmp_path, "score", "--input", f"{raw}/clickstream", "--output", str(root), "--output-table", TABLE,
                   sets=[*sets, f"run_id={run_id}", *extra])
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout[done.stdout.index("{"):])

    # The root holds a folder that is not ours and no marker: refused unless --overwrite says it may be used.
    refused = cli(tmp_path, "score", "--input", f"{raw}/clickstream", "--output", str(root), "--output-table", TABLE,
                  sets=[*sets, "run_id=r0"])
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    (root / "v-notours").rename(tmp_path / "v-notours")

    first = score("r1")
    assert first["table"]["action"] == "created" and first["rows_out"] > 250
    second = score("r2")
    assert second["table"]["action"] == "switched" and second["table"]["versions_removed"] == []
    seen = json.loads(spark_sql(tmp_path, f"""
        import json
        t = spark.table("{TABLE}")
        print(json.dumps({{"runs": sorted(r[0] for r in t.select("run_id").distinct().collect()), "rows": t.count(),
                          "dates": t.select("event_date").distinct().count()}}))
    """).strip().splitlines()[-1])
    assert seen == {"runs": ["r2"], "rows": second["rows_out"], "dates": 2}
    assert Path(first["table"]["location"]).is_dir()  # kept for readers still scanning it

    third = score("r3")
    assert third["table"]["versions_removed"] == [first["table"]["location"]]
    assert not Path(first["table"]["location"]).exists() and Path(second["table"]["location"]).is_dir()

    # A catalog table as input: its storage location is protected like an input folder, --overwrite or not.
    into_input = cli(tmp_path, "score", "--input", TABLE, "--output", f"file://{root}/", "--overwrite",
                     sets=[*sets, "run_id=r5"])
    assert into_input.returncode == 2 and "is or holds the input" in into_input.stderr, into_input.stderr[-3000:]
    assert Path(third["table"]["location"]).is_dir() and Path(second["table"]["location"]).is_dir()

    # A table clickweight did not create is never altered.
    spark_sql(tmp_path, "spark.sql('CREATE TABLE default.users_own (a INT) USING parquet')")
    foreign = cli(tmp_path, "score", "--input", f"{raw}/clickstream", "--output", str(tmp_path / "other"),
                  "--output-table", "default.users_own", sets=[*sets, "run_id=r4"])
    assert foreign.returncode == 2 and "not created by clickweight" in foreign.stderr
    assert not (tmp_path / "other").exists()

    trained = cli(tmp_path, "train", "--input-table", TABLE, "--output", str(tmp_path / "model"),
                  sets=[*sets, "train.launcher=torchrun", "train.num_processes=1", "train.epochs=1",
                        "train.batch_size=16", "train.precision=fp32", "scorer.precision=fp32"])
    assert trained.returncode == 0, trained.stderr[-4000:]
    marker = json.loads((tmp_path / "model" / "_clickweight.json").read_text())
    assert marker["input"] == third["table"]["location"]


def test_names_that_would_break_the_metastore_statements_are_refused():
    from jobs.outputs import OutputRefused
    from jobs.table_output import check_table

    for root in ("/data/it's", "/data/a;drop", "/data/back`tick", "/data/back\\slash"):
        with pytest.raises(OutputRefused, match="may not contain"):
            check_table(None, None, "default.t", root, [], overwrite=True)  # before any Spark call
    with pytest.raises(OutputRefused, match="expected name or db.name"):
        check_table(None, None, "default.t; DROP TABLE x", "/data/ok", [], overwrite=True)
