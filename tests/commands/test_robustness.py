"""Petastorm read guard, and the security rules: no remote code, no pickles, no row data in logs."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import tiny_overrides, write_row_table

from jobs import config
from training.reader import ReaderGuardError, check_rows_read, data_files, dataset_rows, iter_shard

ROOT = Path(__file__).resolve().parents[2]


def write_table(root: Path, files: int = 3, rows: int = 100) -> str:
    """files x rows rows, one event_date per file, row groups of 25."""
    return write_row_table(root, files=files, rows=rows, row_group_size=25, days=files, seed=1)


def table_weights(table: str) -> Counter:
    """Every row's `weight` (distinct floats, so a multiset of them identifies the rows)."""
    return Counter(x for f in data_files(table) for x in pq.read_table(f, columns=["weight"])["weight"].to_pylist())


def read_weights(table: str, seed: int, pool: str = "dummy", rank: int = 0, world: int = 1) -> list[list[float]]:
    """One pass: the weights of each batch (petastorm's batch reader yields one row group per batch)."""
    return [[float(x) for x in b["weight"]]
            for b in iter_shard(table, rank, world, seed=seed, fields=("weight",), pool=pool)]


@pytest.mark.timeout(300)
def test_fifty_reads_return_the_exact_row_count(tmp_path):
    """The dummy pool returns every row exactly once on every pass. The thread pool has petastorm
    0.13.1's early-end race: a pass may come back short; then the training guard (check_rows_read,
    what the recipe calls after each epoch and held-out pass) must refuse it, and a full pass must be
    exactly the table's rows: never a duplicated or invented row."""
    table = write_table(tmp_path / "w")
    expected = dataset_rows(table)
    truth = table_weights(table)
    assert expected == 300 == sum(truth.values()) and len(truth) == 300
    for i in range(50):
        rows = Counter(x for batch in read_weights(table, seed=i) for x in batch)
        assert rows == truth, i
    short = 0
    for i in range(50):
        rows = Counter(x for batch in read_weights(table, seed=i, pool="thread") for x in batch)
        n = sum(rows.values())
        assert rows <= truth, f"pass {i}: rows that are not in the table, or read twice"
        if n == expected:
            assert rows == truth and check_rows_read(n, table, "pass") == expected
        else:
            short += 1
            with pytest.raises(ReaderGuardError, match=f"ranks read {n} rows but .* hold {expected}"):
                check_rows_read(n, table, "pass")
    print(f"reader_pool=thread: {short}/50 short passes, each refused by the guard")


def test_guard_refuses_a_short_read_of_one_row_group_less(tmp_path):
    """A pass that loses one row group (what petastorm's early end does) fails the guard; the full
    pass and the union of both ranks' shards pass it."""
    table = write_table(tmp_path / "w")  # 3 files x 4 row groups of 25 rows
    expected = dataset_rows(table)
    batches = read_weights(table, seed=3)
    assert len(batches) == 12 and {len(b) for b in batches} == {25}
    assert check_rows_read(sum(map(len, batches)), table, "epoch 0") == expected == 300
    for skipped in (0, 5, 11):  # the first, a middle and the last row group of the pass
        n = sum(len(b) for i, b in enumerate(batches) if i != skipped)
        with pytest.raises(ReaderGuardError, match="epoch 0: ranks read 275 rows but the Parquet footers .* hold 300"):
            check_rows_read(n, table, "epoch 0")
    # Two ranks: each shard alone is short, together they are the table.
    shards = [sum(map(len, read_weights(table, seed=3, rank=r, world=2))) for r in (0, 1)]
    assert 0 < shards[0] < expected and check_rows_read(sum(shards), table, "epoch 0") == expected
    with pytest.raises(ReaderGuardError):
        check_rows_read(shards[0], table, "epoch 0")
    # One row more than the footers (a read that duplicated a row group) is refused too.
    with pytest.raises(ReaderGuardError, match="ranks read 325 rows"):
        check_rows_read(expected + 25, table, "epoch 0")


def test_guard_fails_the_run_loudly_when_rows_read_do_not_match_the_footers(tmp_path, tiny_model_dir, monkeypatch):
    """A file the footer count does not know about (as when a read and the metadata disagree) stops training."""
    from training.recipe import train_worker

    table = write_table(tmp_path / "w", files=2)
    # An extension-less data file: petastorm reads it, the footer count (event_date=*/*.parquet) does not.
    pq.write_table(pq.read_table(Path(table) / "event_date=2026-01-01" / "part-0.parquet"),
                   Path(table) / "event_date=2026-01-01" / "part-extra")
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "train.batch_size=16", "train.epochs=1",
                                                      "train.max_steps_per_epoch=2", "train.eval_fraction=0.2",
                                                      "model.kind=cross_encoder", "train.compact_pairs=false"))
    # The first pass (held-out rows and the start's calibration) already refuses the partial read.
    with pytest.raises(ReaderGuardError, match="ranks read 300 rows but the Parquet footers .* hold 200"):
        train_worker(table, str(tmp_path / "model"), cfg)
    assert not (tmp_path / "model" / "train_summary.json").exists()


def test_trust_remote_code_is_never_enabled():
    sources = [p for d in ("jobs", "udfs", "training") for p in (ROOT / d).rglob("*.py")]
    assert sources
    text = "\n".join(p.read_text() for p in sources)
    assert not re.search(r"trust_remote_code\s*=\s*(?!False\b)", text)
    # Every from_pretrained call states trust_remote_code=False explicitly.
    for p in sources:
        for call in re.findall(r"from_pretrained\((.*?)\)", p.read_text(), flags=re.S):
            if "local_files_only" in call:
                assert "trust_remote_code=False" in call, (p, call)
    for m in re.finditer(r"torch\.load\((.*?)\)", text, flags=re.S):
        assert "weights_only=True" in m.group(1), m.group(0)


def test_reads_are_reproducible_for_every_seed_including_zero(tmp_path):
    """petastorm treats seed 0 as unseeded; the reader maps seeds so a resumed epoch replays the same order."""
    table = write_table(tmp_path / "w")

    def order(seed: int) -> list[float]:
        return [float(x) for b in iter_shard(table, 0, 1, seed=seed, fields=("weight",)) for x in b["weight"]]

    for seed in (0, 1, 7):
        assert order(seed) == order(seed), seed
    assert order(0) != order(1)  # still shuffled by seed
