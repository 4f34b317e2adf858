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
           "keep_prob", "raw_weight", "weight")


def find_row(folder: str, event_id: str) -> dict[str, Any] | None:
    table = output_dataset(folder).to_table(filter=pc.field("event_id") == event_id)
    return table.slice(0, 1).to_pylist()[0] if table.num_rows else None


def f(x: Any) -> str:
    return "null" if x is None else f"{x:.6g}" if isinstance(x, float) else str(x)


def formula(name: str, row: dict[str, Any], params: dict[str, Any]) -> str:
    """The strategy's raw weight with this row's numbers put in."""
    p, y = row.get("p_model"), row.get("clicked")
    if name == "none":
        return "1 (uniform)"
    if name == "relevance":
        return f"max(cos(query, title), 0) = max({f(row['relevance'])}, 0)"
    if name == "confidence":
        return f"p_model = {f(p)}"
    if name == "information_gain":
        h_base, h_p = W.binary_entropy(np.array([params["base_rate"]]))[0], W.binary_entropy(np.array([p]))[0]
        return (f"max(H(base rate {f(params['base_rate'])}) - H(p_model {f(p)}), 0) "
                f"= max({f(float(h_base))} - {f(float(h_p))}, 0)")
    if name == "loss":
        shift, t = f(params["loss_shift"]), f(params["temperature"])
        return (f"exp((BCE(p_model {f(p)}, clicked {y}) - max BCE {shift}) / T {t})"
                f" = exp(({f(row['loss'])} - {shift}) / {t})")
    if name == "el2n":
        return f"|p_model - clicked| = |{f(p)} - {y}|"
    if name == "ipw":
        return (f"clicked at position {row['position']}: 1 / propensity = 1 / {f(row['propensity'])}" if y
                else "not clicked: 1")
    if name == "action_value":
        v = params["action_values"]
        action = ("purchase" if row.get("purchased") else "cart" if row.get("added_to_cart")
                  else "long_dwell" if y and (row.get("dwell_ms") or 0) >= params["long_dwell_ms"]
                  else "click" if y else "skip")
        table = ", ".join(f"{k} {f(float(v[k]))}" for k in ("purchase", "cart", "long_dwell", "click", "skip"))
        return f"the row's strongest action is {action} -> {f(float(v[action]))}  (values: {table})"
    if name == "denoise":
        if params["denoise_mode"] == "hard":
            return (f"suspect={row['suspect']} (confident learning): "
                    f"{f(params['denoise_weight']) if row['suspect'] else '1'}")
        return (f"1 - (1 - {f(params['denoise_weight'])}) * noise_score {f(row['noise_score'])}")
    if name == "mlm_quality":
        return f"exp(mean token PLL of the title) = exp({f(row.get('mlm_pll'))})"
    if name == strategies.COMBINED:
        parts = [f"({formula(n, row, params)}) ** {e}" for n, e in params["combined"].items() if float(e) != 0.0]
        return " * ".join(parts)
    raise UserError(f"unknown strategy {name!r} in the output's config")


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
