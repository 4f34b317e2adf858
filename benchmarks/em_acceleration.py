"""The propensity EM with and without SQUAREM on real score outputs: time, EM steps, and how far the
fits are apart (propensities, pair labels).

Each output's rows are aggregated to (position, pair) cells as the score job does; the EM then runs
as the job runs it (udfs/weighting/cells.py em_propensity, the shipped weighting settings: noise
floor, monotone, regression prior), once plain and once accelerated.

    .venv/bin/python -m benchmarks.em_acceleration runs/quality/dev/seed0_q1000/*_s16/w_naive
    .venv/bin/python -m benchmarks.em_acceleration /tmp/fc/out --json /tmp/em.json
    .venv/bin/python -m benchmarks.em_acceleration --big 10000000 --work /tmp/em_big   # the 10M-row log's cells

--big N: the cells of an N-row benchmarks/big_clickstream.py log (seed 0, the scale benchmark's), with
each pair's true relevance standing in for p_model (no scorer runs; p_model only groups the pairs for
the regression prior).

Prints one line per output; writes benchmarks/results/em_acceleration.json (or --json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs import config
from udfs.weighting import cells as cells_mod
from udfs.weighting import weights
from udfs.weighting.settings import WeightingSettings

ROOT = Path(__file__).resolve().parent.parent


def output_cells(folder: str) -> pd.DataFrame:
    """A score output's rows as the EM's (position, pair) cells: rows n, clicks c, p_model pm."""
    import pyarrow.dataset as ds

    data = ds.dataset(folder, format="parquet", partitioning="hive", ignore_prefixes=["_", "."])
    rows = data.to_table(columns=["query", "title", "position", "clicked", "p_model"]).to_pandas()
    key = rows["query"].str.strip() + "\x1f" + rows["title"].str.strip()
    rows["_bucket"] = pd.util.hash_pandas_object(key, index=False).astype(np.int64)
    return cells_mod.sorted_cells(rows.groupby(["position", "_bucket"])
                                      .agg(n=("clicked", "size"), c=("clicked", "sum"), pm=("p_model", "min"))
                                      .reset_index())


def big_log_cells(rows: int, work: str) -> pd.DataFrame:
    """The EM's cells of an N-row big_clickstream log, aggregated with pyarrow (no Spark)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from benchmarks import big_clickstream

    folder = Path(work) / f"big_{rows}"
    if not (folder / "truth.parquet").exists():
        big_clickstream.generate(str(folder), rows=rows, seed=0, overwrite=True, verbose=False)
    log = ds.dataset(str(folder / "clickstream"), format="parquet").to_table(
        columns=["query", "title", "position", "clicked"])
    key = pc.binary_join_element_wise(pc.utf8_trim_whitespace(log["query"]), pc.utf8_trim_whitespace(log["title"]),
                                      "\x1f")
    cells = (pa.table({"key": key, "position": log["position"], "clicked": log["clicked"]})
               .group_by(["position", "key"]).aggregate([("clicked", "count"), ("clicked", "sum")]).to_pandas())
    truth = pd.read_parquet(folder / "truth.parquet", columns=["query", "title", "true_relevance"])
    rel = pd.Series(truth["true_relevance"].to_numpy(),
                    index=truth["query"].str.strip() + "\x1f" + truth["title"].str.strip())
    cells = pd.DataFrame({"position": cells["position"], "_bucket": pd.util.hash_pandas_object(
        cells["key"], index=False).astype(np.int64), "n": cells["clicked_count"], "c": cells["clicked_sum"],
        "pm": rel.reindex(cells["key"]).to_numpy()})
    return cells_mod.sorted_cells(cells)


def pair_labels(model: dict[str, Any]) -> np.ndarray:
    ev, a = model["evidence"], model["prior_rows"]
    return ((ev["_r"] + a * ev["_m"]) / (ev["_n"] + a)).to_numpy()


def compare(cells: pd.DataFrame, w: WeightingSettings) -> dict[str, Any]:
    runs = {}
    defaults = weights._em_from.__defaults__
    try:
        for name, accelerate in (("plain", False), ("squarem", True)):
            weights._em_from.__defaults__ = (accelerate, *defaults[1:])  # accelerate is the first default
            t0 = time.perf_counter()
            prop, info, model = cells_mod.em_propensity(cells, "query_title_pairs", w)
            runs[name] = {"seconds": round(time.perf_counter() - t0, 3), "em_steps": info["iterations"],
                          "noise_floor": info["noise_floor"], "prop": prop, "labels": pair_labels(model)}
    finally:
        weights._em_from.__defaults__ = defaults
    plain, fast = runs["plain"], runs["squarem"]
    return {"cells": len(cells), "pairs": int(cells["_bucket"].nunique()),
            **{f"{k}_{name}": runs[name][k] for name in runs for k in ("seconds", "em_steps", "noise_floor")},
            "speedup": round(plain["seconds"] / max(fast["seconds"], 1e-9), 2),
            "max_abs_diff_propensity": max(abs(plain["prop"][k] - fast["prop"][k]) for k in plain["prop"]),
            "max_abs_diff_label": float(np.abs(plain["labels"] - fast["labels"]).max()),
            "mean_abs_diff_label": float(np.abs(plain["labels"] - fast["labels"]).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outputs", nargs="*", help="score output folders")
    p.add_argument("--big", type=int, metavar="ROWS", help="also the cells of a ROWS-row big_clickstream log")
    p.add_argument("--work", default="/tmp/em_big", help="where --big's log is generated (kept for reruns)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "em_acceleration.json"))
    args = p.parse_args(argv)
    w = WeightingSettings.from_config(config.load_config())
    results = {}
    logs = [(f, lambda f=f: output_cells(f)) for f in args.outputs]
    if args.big:
        logs.append((f"big_clickstream {args.big} rows", lambda: big_log_cells(args.big, args.work)))
    for folder, cells in logs:
        r = results[folder] = compare(cells(), w)
        print(f"{folder}: {r['pairs']} pairs, {r['cells']} cells | plain {r['seconds_plain']} s, {r['em_steps_plain']} "
              f"steps | SQUAREM {r['seconds_squarem']} s, {r['em_steps_squarem']} steps | {r['speedup']}x | max |d "
              f"propensity| {r['max_abs_diff_propensity']:.1e}, max |d label| {r['max_abs_diff_label']:.1e}",
              flush=True)
    Path(args.json).write_text(json.dumps({"benchmark": "em_acceleration", "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
