"""Petastorm over a real score output: shards are disjoint and complete; the guard counts rows."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from training.reader import ShuffleBuffer, dataset_rows, iter_shard, shard_train_rows


@pytest.fixture(scope="module")
def weighted(spark, tiny_model_dir, tmp_path_factory) -> str:
    raw = tmp_path_factory.mktemp("raw") / "data"
    write(generate(rows=500, days=2, seed=5, malformed_fraction=0.0), str(raw))
    out = tmp_path_factory.mktemp("w") / "weighted"
    run_score(spark, f"{raw}/clickstream", str(out), config.load_config(overrides=tiny_overrides(
        tiny_model_dir, "train.compact_pairs=false")))   # a row trainer's score run: token ids on rows (auto)
    return str(out)


def test_two_shards_are_disjoint_and_complete(weighted):
    ids = [[], []]
    for rank in (0, 1):
        for batch in iter_shard(weighted, rank, 2, seed=rank, fields=("event_id", "weight", "input_ids")):
            ids[rank].extend(batch["event_id"].tolist())
            assert batch["input_ids"].ndim == 2 and batch["input_ids"].dtype == np.int32
    assert ids[0] and ids[1]
    assert not set(ids[0]) & set(ids[1])
    assert len(ids[0]) + len(ids[1]) == len(set(ids[0]) | set(ids[1])) == dataset_rows(weighted) == 500


def test_shard_train_rows_counts_all_rows(weighted):
    totals = [shard_train_rows(weighted, r, 2, eval_fraction=0.2) for r in (0, 1)]
    assert sum(t for _, t in totals) == 500
    assert all(0 < train < total for train, total in totals)


def test_repeated_reads_return_every_row(weighted):
    counts = {sum(len(b["weight"]) for b in iter_shard(weighted, 0, 1, seed=i, fields=("weight",)))
              for i in range(10)}
    assert counts == {500}


def test_shuffle_buffer_is_seeded_and_loses_nothing():
    def run(seed):
        buf = ShuffleBuffer(capacity=20, rng=np.random.default_rng(seed))
        out = []
        for start in range(0, 100, 15):
            buf.add({"x": np.arange(start, min(start + 15, 100))})
            out += [b["x"] for b in buf.take(8)]
        out += [b["x"] for b in buf.take(8, final=True)]
        return np.concatenate(out), buf.size
    a, left = run(0)
    b, _ = run(0)
    assert np.array_equal(a, b) and not np.array_equal(a, run(1)[0])
    assert len(a) + left == 100 and len(set(a.tolist())) == len(a) and left < 8


def test_the_reader_takes_urls_as_well_as_paths(weighted):
    """file: URLs (and any fsspec scheme: hdfs://, s3a:// on a cluster) name the same dataset as the path."""

    from training.reader import data_files, dataset_url, file_sizes, training_table

    url = "file://" + weighted
    assert dataset_url(weighted) == url and dataset_url(url) == url and dataset_url(f"file:{weighted}") == url
    assert dataset_rows(url) == dataset_rows(weighted) == 500
    assert len(data_files(url)) == len(data_files(weighted)) >= 2
    assert file_sizes(url) == file_sizes(weighted) and all(size > 0 for _, size in file_sizes(url))
    pairs = training_table(url, compact_pairs=True)
    rows = sum(len(b["query_bucket"]) for b in iter_shard(pairs, 0, 1, seed=0, fields=("query_bucket",)))
    assert rows == dataset_rows(pairs) > 0


def test_paths_with_plus_and_space_are_read(weighted, tmp_path):
    """A '+' (as in a run named `action_value+keep0.5`) or a space must not be percent-encoded away."""
    import shutil

    from training.reader import training_table

    odd = tmp_path / "w action+keep0.5"
    shutil.copytree(weighted, odd)
    pairs = training_table(str(odd), compact_pairs=True)
    assert dataset_rows(pairs) == dataset_rows(training_table(weighted, compact_pairs=True)) > 0
    rows = sum(len(b["query_bucket"]) for b in iter_shard(pairs, 0, 1, seed=0, fields=("query_bucket",)))
    assert rows == dataset_rows(pairs)
