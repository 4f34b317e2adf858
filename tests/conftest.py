"""Shared fixtures: one SparkSession for the whole run, a tiny BERT built from a config."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CLICKWEIGHT_LOG", "WARNING")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cluster: starts a real Spark standalone master + workers on 127.0.0.1")


@pytest.fixture(scope="session")
def spark():
    from jobs import config
    from jobs.common import get_spark

    # local[2,3]: two cores, and up to 3 attempts per task (local[N] alone never retries a task),
    # so a Python worker that dies once is retried like on a cluster (tests/commands/test_faults.py).
    cfg = config.load_config(overrides=["spark.master=local[2,3]", "spark.conf.spark.sql.shuffle.partitions=4",
                                        "spark.conf.spark.driver.memory=2g"])
    session = get_spark(cfg)
    yield session
    session.stop()


def save_tiny_bert(folder: Path, model_cls_name: str = "BertModel") -> str:
    """A 2-layer, 32-wide BERT (random weights, seeded) with the packaged MiniLM tokenizer files."""
    import torch
    import transformers
    from transformers import BertConfig

    from udfs.scoring.model_loader import default_model_path

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    getattr(transformers, model_cls_name)(cfg).save_pretrained(folder)
    src = Path(default_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny sentence-encoder-style BertModel saved like any checkpoint."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def tiny_overrides(model_dir: str, *extra: str) -> list[str]:
    return [f"model.path={model_dir}", "spark.master=local[2]", "scorer.batch_size=32",
            "model.max_length=32", "scorer.max_length=32", *extra]


def score_generated(spark, model_dir: str, tmp_path_factory, seed: int, strategy: str | None,
                    pair_label: str | None = "clicks", row_inputs: bool = True) -> str:
    """A real score output (`run_score` on Spark) of an 800-row generated clickstream, for the training tests.
    pair_label "clicks" by default: most training tests check identities against the row table's clicks
    (pair loss = row loss); None (with strategy None) keeps the shipped defaults. row_inputs: token ids on
    the rows too (output.row_model_inputs=true), so one output trains both ways (pairs and rows)."""
    from jobs import config
    from jobs.generate import generate, write
    from jobs.score import run_score

    raw = tmp_path_factory.mktemp("raw") / "data"
    write(generate(rows=800, days=2, seed=seed, malformed_fraction=0.0), str(raw))
    out = tmp_path_factory.mktemp("w") / "weighted"
    sets = [f"weighting.strategy={strategy}"] if strategy else []
    sets += [f"weighting.pair_label={pair_label}"] if pair_label else []
    sets += ["output.row_model_inputs=true"] if row_inputs else []
    cfg = config.load_config(overrides=tiny_overrides(model_dir, *sets, "scorer.precision=fp32"))
    run_score(spark, f"{raw}/clickstream", str(out), cfg)
    return str(out)


def graded_pairs(n_queries: int, per_query: int = 8, seed: int = 0, query: str = "q{}"):
    """Graded (query, item, title, relevance) candidates, as the benchmarks read them from ../shared/data."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = [{"query": query.format(q), "item_id": f"i{q}_{k}", "title": f"title {q} {k}",
             "relevance": float(rng.choice([1.0, 1.67, 2.33, 3.0]))}
            for q in range(n_queries) for k in range(per_query)]
    return pd.DataFrame(rows)


def write_row_table(root: Path, files: int, rows: int, row_group_size: int, days: int, seed: int,
                    max_len: int = 32) -> str:
    """A training row table in the score output's layout (event_date=*/part-N.parquet), written with
    pyarrow (no Spark): random query/title token pairs, p_model, prior_logit, clicks and weights."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    for f in range(files):
        lens = rng.integers(6, max_len + 1, rows)
        ids = [[101, *rng.integers(1000, 5000, k - 2).tolist(), 102] + [0] * (max_len - k) for k in lens]
        types = [[0] * (k // 2) + [1] * (k - k // 2) + [0] * (max_len - k) for k in lens]
        tbl = pa.table({
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "token_type_ids": pa.array(types, pa.list_(pa.int32())),
            "input_len": pa.array(lens, pa.int32()),
            "prior_logit": pa.array(rng.normal(-1.0, 0.5, rows)),
            "p_model": pa.array(rng.uniform(0.1, 0.5, rows)),
            "clicked": pa.array((rng.random(rows) < 0.3).astype(np.int32)),
            "weight": pa.array(rng.uniform(0.5, 2.0, rows)),
            "query_bucket": pa.array(rng.integers(0, 1000, rows).astype(np.int32)),
        })
        folder = root / f"event_date=2026-01-0{f % days + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(tbl, folder / f"part-{f}.parquet", row_group_size=row_group_size)
    return str(root)


FAULTS = str(Path(__file__).resolve().parent / "faults")  # tests/faults/sitecustomize.py


def fault_pythonpath(existing: str | None = None) -> str:
    """PYTHONPATH that makes a child Python load the test-only fault injection (tests/faults)."""
    return os.pathsep.join(p for p in (FAULTS, existing or "") if p)
