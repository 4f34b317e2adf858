"""Clickstreams for the throughput benchmarks, built from real (query, title) pairs.

`duplication` = rows per distinct (query, title) pair: 1 makes every pair unique, 4 shows each pair
about four times (as in real logs, where the same product is shown for the same query in many
sessions). Beyond the 51k real pairs, real queries are paired with other rows' real
titles. Rows follow the clickweight input contract; clicks are random (throughput only).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

HOMEDEPOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "homedepot_relevance_dev.parquet"


def real_pairs() -> pd.DataFrame:
    path = Path(os.environ.get("CLICKWEIGHT_PAIRS", HOMEDEPOT))
    if not path.exists():
        raise SystemExit(f"{path} not found: the benchmarks read the real pairs from ../shared/data "
                         "(or set CLICKWEIGHT_PAIRS to a Parquet file with query, item_id, title)")
    pairs = pd.read_parquet(path, columns=["query", "item_id", "title"])
    pairs["item_id"] = pairs["item_id"].astype(str)
    return pairs.drop_duplicates(["query", "title"]).reset_index(drop=True)


def more_pairs(pairs: pd.DataFrame, n_pairs: int, seed: int) -> pd.DataFrame:
    """At least n_pairs distinct (query, title): the real pairs, then real queries with real titles of
    other rows (the same texts and lengths, not relevant pairs: fine for throughput)."""
    rng = np.random.default_rng(seed)
    out = pairs
    while len(out) < n_pairs:
        titles = pairs.iloc[rng.permutation(len(pairs))].reset_index(drop=True)
        mixed = pairs[["query"]].reset_index(drop=True).assign(item_id=titles["item_id"], title=titles["title"])
        out = pd.concat([out, mixed]).drop_duplicates(["query", "title"]).reset_index(drop=True)
    return out


def clickstream(pairs: pd.DataFrame, rows: int, duplication: int, seed: int = 0) -> pd.DataFrame:
    n_pairs = rows // duplication
    if n_pairs > len(pairs):  # beyond the real pairs: real queries with other rows' real titles
        pairs = more_pairs(pairs, n_pairs, seed)
    rng = np.random.default_rng(seed)
    chosen = pairs.iloc[rng.choice(len(pairs), size=n_pairs, replace=False)].reset_index(drop=True)
    idx = rng.permutation(np.repeat(np.arange(n_pairs), duplication))[:rows]
    base = chosen.iloc[idx].reset_index(drop=True)
    n = len(base)
    start = pd.Timestamp("2026-03-01", tz="UTC")
    clicked = (rng.random(n) < 0.15).astype("int32")
    return pd.DataFrame({
        "event_id": [f"e{seed}-{i:09d}" for i in range(n)],
        # Microseconds: Spark reads nanosecond Parquet timestamps as an error.
        "event_ts": (start + pd.to_timedelta(rng.integers(0, 3 * 86_400, n), unit="s")).astype("datetime64[us, UTC]"),
        "user_id": [f"u{u}" for u in rng.integers(0, max(1, n // 20), n)],
        "session_id": [f"s{s}" for s in rng.integers(0, max(1, n // 8), n)],
        "query": base["query"], "item_id": base["item_id"], "title": base["title"],
        "position": rng.integers(1, 11, n).astype("int32"),
        "clicked": clicked,
        "added_to_cart": (clicked & (rng.random(n) < 0.3)).astype("int32"),
        "purchased": (clicked & (rng.random(n) < 0.1)).astype("int32"),
        "dwell_ms": np.where(clicked == 1, rng.integers(1_000, 120_000, n), 0).astype("int64"),
    })


def write_clickstream(frame: pd.DataFrame, folder: Path, files: int = 4) -> str:
    """A Parquet folder of `files` files (so Spark reads it in parallel)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), files)):
        frame.iloc[part].to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return str(folder)


def write_results(stem: str, result: object, table: str) -> Path:
    """benchmarks/results/<stem>.json (the figures) and .md (their table), the table also printed."""
    out = Path(__file__).resolve().parent / "results" / stem
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table)
    print(table)
    return out
