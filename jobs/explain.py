"""`clickweight explain --output DIR --event-id ID`: why one row got its weight.

Reads the row from a score output (pyarrow, no Spark), prints its signals, the strategy's formula
with the row's numbers put in, the raw weight recomputed by the same registry function the job used
(udfs/weighting/strategies.py) and checked against the stored one, then the scale, the importance-sampling
correction and the clip to [w_min, w_max] that give the stored final weight. A quarantined row
prints its reasons instead.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import yaml

from jobs import inputs
from jobs.report import output_dataset
from udfs.errors import UserError
from udfs.weighting import strategies
from udfs.weighting import weights as W

ROW_FIELDS = ("event_id", "event_ts", "query", "title", "position", "clicked", "added_to_cart", "purchased",
              "dwell_ms")
SIGNALS = ("relevance", "p_model", "propensity", "loss", "info_gain", "noise_score", "suspect", "mlm_pll",
           "p_click", "p_scorer_click", "keep_prob", "raw_weight", "weight")   # each shown where the row has it


def find_row(folder: str, event_id: str) -> dict[str, Any] | None:
    table = output_dataset(folder).to_table(filter=pc.field("event_id") == event_id)
    return table.slice(0, 1).to_pylist()[0] if table.num_rows else None


f = strategies.fmt


def formula(name: str, row: dict[str, Any], params: dict[str, Any]) -> str:
    """The strategy's raw weight with this row's numbers put in (the registry's own text)."""
    try:
        return strategies.explain_row(name, row, params)
    except ValueError as e:
        raise UserError(f"the output's config names a strategy this version does not know: {e}") from None


def explain(folder: str, event_id: str) -> str:
    out = Path(folder)
    if not (out / "_summary.json").is_file():
        raise UserError(f"{folder} is not a clickweight score output (no _summary.json)")
    summary = json.loads((out / "_summary.json").read_text())
    cfg = yaml.safe_load((out / "_config.yaml").read_text())
    row = find_row(str(out), event_id)
    if row is None:
        bad = find_row(str(out / "_quarantine"), event_id) if (out / "_quarantine").is_dir() else None
        if bad is not None:
            return f"event_id {event_id} was quarantined: {bad.get('reason')}"
        raise UserError(f"event_id {event_id!r} is in neither the output rows nor _quarantine of {folder}")
    w = cfg["weighting"]
    params = {**w, "base_rate": summary.get("base_rate"), "loss_shift": summary.get("loss_max", W.BCE_MAX)}
    lines = [f"event_id {event_id} in {folder} (run {summary.get('run_id')})"]
    lines += [f"  {k:<14}{f(row.get(k))}" for k in ROW_FIELDS if k in row and k != "event_id"]
    lines.append("signals (from the score job):")
    lines += [f"  {k:<14}{f(row.get(k))}" for k in SIGNALS if k in row]
    cols = {k: np.array([row.get(k)], dtype=object if k == "suspect" else np.float64) for k in row
            if k in SIGNALS or k in ROW_FIELDS[4:]}
    cols["suspect"] = np.array([bool(row.get("suspect"))])
    raw = float(strategies.raw_weights(w["strategy"], cols, params)[0])
    stored_raw = row.get("raw_weight")
    agree = stored_raw is not None and math.isclose(raw, stored_raw, rel_tol=1e-9, abs_tol=1e-12)
    lines.append(f"strategy {w['strategy']}: raw weight = {formula(w['strategy'], row, params)}")
    lines.append(f"  = {f(raw)}  (stored raw_weight {f(stored_raw)}: {'same' if agree else 'DIFFERS'})")
    scale, keep = float(summary.get("scale", 1.0)), float(row.get("keep_prob") or 1.0)
    unclipped = scale * float(stored_raw) / keep
    final = min(max(unclipped, w["w_min"]), w["w_max"])
    clip = "inside the bounds" if final == unclipped else f"clipped to {f(final)}"
    lines.append(f"final weight = clip(scale {f(scale)} * raw {f(stored_raw)} / keep_prob {f(keep)}, "
                 f"w_min {f(w['w_min'])}, w_max {f(w['w_max'])})")
    lines.append(f"  = clip({f(unclipped)}) -> {clip}  (stored weight {f(row.get('weight'))})")
    lines.append("scale: the factor that makes the table's mean weight 1 after clipping (udfs/weights.normalise_scale)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clickweight explain", description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="a `clickweight score` output folder")
    p.add_argument("--event-id", required=True)
    args = p.parse_args(argv)
    inputs.check_clickweight_output(args.output, "score", what="--output")
    print(explain(args.output, args.event_id))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("explain", main))
