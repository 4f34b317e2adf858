"""Would the gate see more if it read its held-out clicks by examination slot?

The gate (`train.select_by=examination_loss`) judges each candidate on the held-out pairs' clicks per
position, each position's logit offset by log theta_k, the position's examination averaged over the
click contexts (`weighting.em_click_context`). Under a cascade, where a row's examination depends on
the clicks above it, that average is not what each click saw. This script replays the gate offline on
a finished `benchmarks/quality.py --candidates` run with the click context, both ways: by position (as
the trainer does) and by slot (position x clicks above, each slot's own theta from the score run's
`propensity_fit.examination_by_click_context`), and prints each epoch's criterion against the start's
with the paired standard error the gate's margin uses. Nothing is retrained: the held-out pairs come
from the run's pair table read as the trainer read it (its shards, its held-out queries), their
per-slot clicks from the run's click log, every candidate's logits from its saved gate data.

    .venv/bin/python -m benchmarks.gate_by_slot --config click_context --tag cascade \\
        --runs runs/quality/dev/seed0_q1000/cascade_s16 runs/quality/dev/seed1_q1000/cascade_s16

Writes benchmarks/results/gate_by_slot_TAG.{json,md}. A diagnostic on dev runs; it chooses nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from training.metrics import criterion_contributions, examination_cells, log_examination, paired_standard_error
from training.reader import is_eval, iter_shard

ROOT = Path(__file__).resolve().parents[1]


def held_out_pairs(table: str, world: int, eval_fraction: float) -> pd.DataFrame:
    """The trainer's held-out pairs in its gathered order (rank 0's, then rank 1's, ...)."""
    parts = []
    for rank in range(world):
        for b in iter_shard(table, rank, world, seed=0, fields=["query", "title", "query_bucket", "impressions",
                                                                 "clicks"]):
            keep = is_eval(b["query_bucket"], eval_fraction)
            parts.append(pd.DataFrame({k: np.asarray(v)[keep] for k, v in b.items()}))
    return pd.concat(parts, ignore_index=True)


def slot_counts(log: pd.DataFrame, held: pd.DataFrame, buckets: int, levels: int,
                by: str = "clicks_above") -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks of each held-out pair per slot (context c, position bucket k at column
    c * buckets + k - 1; positions past `buckets` pooled, contexts past `levels` pooled): a row's click
    context in its (session_id, query) search, ordered by position then event_id, as the score job
    reads it (udfs/weighting/spark.py with_click_context): the clicks above it, or `last_click_distance`,
    the positions below the last click above it (at least 1; 0 with none)."""
    log = log.sort_values(["session_id", "query", "position", "event_id"])
    search = [log["session_id"], log["query"]]
    if by == "clicks_above":
        context = log.groupby(search)["clicked"].cumsum() - log["clicked"]
    else:
        last = log["position"].where(log["clicked"] == 1).groupby(search).transform(lambda x: x.shift().ffill())
        context = np.maximum(log["position"] - last, 1).fillna(0).astype(np.int64)
    slot = np.minimum(context, levels) * buckets + np.minimum(log["position"], buckets) - 1
    key = pd.DataFrame({"query": log["query"].str.strip(), "title": log["title"].str.strip(),
                        "slot": slot.to_numpy(), "clicked": log["clicked"].to_numpy()})
    rows = key.merge(held[["query", "title"]].reset_index(), on=["query", "title"])
    n = np.zeros((len(held), buckets * (levels + 1)))
    c = np.zeros_like(n)
    np.add.at(n, (rows["index"].to_numpy(), rows["slot"].to_numpy()), 1)
    np.add.at(c, (rows["index"].to_numpy(), rows["slot"].to_numpy()), rows["clicked"].to_numpy())
    if not (np.allclose(n.sum(1), held["impressions"]) and np.allclose(c.sum(1), held["clicks"])):
        raise SystemExit("the log's rows do not reconcile with the pair table's impressions and clicks")
    return n, c


def replay(run: Path, config: str, world: int, eval_fraction: float, buckets: int, floor: float) -> list[dict]:
    summary = json.loads((run / f"w_{config}" / "_summary.json").read_text())
    by_context = summary["propensity_fit"].get("examination_by_click_context")
    if not by_context:
        raise SystemExit(f"{run}/w_{config}: no examination_by_click_context (a run without the click context)")
    levels = len(by_context) - 1
    held = held_out_pairs(str(run / f"w_{config}" / "_pairs"), world, eval_fraction)
    log = pd.read_parquet(run / "clickstream", columns=["event_id", "session_id", "query", "title", "position",
                                                       "clicked"])
    n, c = slot_counts(log, held, buckets, levels, summary.get("click_context", {}).get("by", "clicks_above"))
    query = held["query_bucket"].to_numpy()
    readings = {
        "position": (n.reshape(len(n), levels + 1, buckets).sum(1), c.reshape(len(c), levels + 1, buckets).sum(1),
                     log_examination(summary["propensity"], floor, buckets)),
        "slot": (n, c, np.concatenate([log_examination(by_context[str(x)], floor, buckets)
                                       for x in range(levels + 1)])),
    }
    logits = {}
    for candidate in ("start", "epoch_0", "epoch_1"):
        saved = [np.load(run / f"m_{config}" / "candidates" / candidate / f"heldout_rank{r}.npz") for r in range(world)]
        if not np.array_equal(np.concatenate([s["query_bucket"] for s in saved]), query):
            raise SystemExit(f"{run}: {candidate}'s held-out rows are not the pair table's, in the trainer's order")
        logits[candidate] = np.concatenate([s["z"] for s in saved]).astype(np.float64)
    out = []
    for reading, (imp, clk, log_theta) in readings.items():
        def criterion(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cells = examination_cells(z, imp, clk, query, log_theta)  # noqa: B023 (used within the loop)
            return criterion_contributions(cells["z"], cells["label"], cells["weight"],
                                           offset=cells["offset"]), cells["query"]
        start, groups = criterion(logits["start"])
        for candidate in ("epoch_0", "epoch_1"):
            share, _ = criterion(logits[candidate])
            se = paired_standard_error(share, start, groups)
            diff = float(share.sum() - start.sum())
            out.append({"run": str(run), "reading": reading, "candidate": candidate, "start": float(start.sum()),
                        "value": float(share.sum()), "minus_start": diff, "se": se,
                        "z": diff / se if se > 0 else None, "held_out_pairs": len(held),
                        "held_out_queries": int(len(np.unique(query)))})
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["| run | reading | candidate | start | candidate's | − start | SE | (− start) / SE "
             "| held-out pairs / queries |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        z = "-" if r["z"] is None else f"{r['z']:+.2f}"
        lines.append(f"| {Path(r['run']).parent.name}/{Path(r['run']).name} | {r['reading']} | {r['candidate']} | "
                     f"{r['start']:.6f} | {r['value']:.6f} | {r['minus_start']:+.6f} | {r['se']:.6f} | {z} | "
                     f"{r['held_out_pairs']} / {r['held_out_queries']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="click-model folders of benchmarks/quality.py runs")
    p.add_argument("--config", default="click_context", help="the configuration whose candidates to replay")
    p.add_argument("--world", type=int, default=2, help="the training's ranks (its gate data's files)")
    p.add_argument("--eval-fraction", type=float, default=0.1, help="train.eval_fraction of the runs")
    p.add_argument("--buckets", type=int, default=10, help="output.position_buckets of the runs")
    p.add_argument("--floor", type=float, default=0.05, help="weighting.propensity_min of the runs")
    p.add_argument("--tag", required=True)
    args = p.parse_args(argv)
    rows = [r for run in args.runs
            for r in replay(Path(run), args.config, args.world, args.eval_fraction, args.buckets, args.floor)]
    results = ROOT / "benchmarks" / "results"
    (results / f"gate_by_slot_{args.tag}.json").write_text(json.dumps({"args": vars(args), "rows": rows},
                                                                      indent=2) + "\n")
    (results / f"gate_by_slot_{args.tag}.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
