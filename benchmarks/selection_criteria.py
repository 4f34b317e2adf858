"""Which held-out click criterion picks the model that ranks true relevance better? (train.select_by)

For finished `benchmarks/model_quality.py` runs, scores the two candidates the gate chose between,
the start (the zero-shot encoder with the score job's Platt head) and the exported model, on the
run's held-out split of the training queries (`train.eval_fraction` of query buckets, the rows the
recipe evaluates) under each criterion; their true-relevance AUCs on the benchmark's graded
held-out queries come from the run's `evaluate` outputs:

  own_weighted  log loss weighted by the strategy's own weights, recalibrated (select_by: recalibrated_loss)
  impression    click log loss, every impression once, recalibrated          (select_by: impression_loss)
  ipw           click rate debiased by the score job's position propensities (clicked / propensity,
                clipped to [0, 1] per pair), every impression once, recalibrated
  click_auc     held-out click AUC

A criterion is right on a run when it prefers the candidate whose true-relevance AUC is higher.

    .venv/bin/python -m benchmarks.selection_criteria --runs 0:el2n_s16_seed0_el2n 0:none 2:ipw_s16_seed2b
    .venv/bin/python -m benchmarks.selection_criteria --pipeline runs/demo   # a pipeline output, round 0

Writes benchmarks/results/selection_criteria.json. Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch
import yaml

from training.metrics import SELECT_KEYS, held_out_metrics, recalibrated_loss
from training.model import build_trainee
from training.reader import is_eval
from udfs.scoring import model_loader

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["query", "title", "query_bucket", "clicked", "propensity", "weight",
           "query_ids", "query_len", "title_ids", "title_len"]


def held_out_pairs(weighted: Path, eval_fraction: float) -> pd.DataFrame:
    """The recipe's held-out split of a score output's rows, one row per pair with its click counts."""
    rows = ds.dataset(str(weighted), format="parquet", partitioning="hive",
                      exclude_invalid_files=True).to_table(columns=COLUMNS).to_pandas()
    rows = rows[is_eval(rows["query_bucket"].to_numpy(), eval_fraction)]
    rows = rows.assign(ipw=rows["clicked"] / rows["propensity"], wy=rows["weight"] * rows["clicked"])
    return rows.groupby(["query", "title"], sort=False).agg(
        n=("clicked", "size"), clicks=("clicked", "sum"), ipw=("ipw", "sum"), w=("weight", "sum"),
        wy=("wy", "sum"), query_ids=("query_ids", "first"), query_len=("query_len", "first"),
        title_ids=("title_ids", "first"), title_len=("title_len", "first")).reset_index()


def logits(model: torch.nn.Module, q: np.ndarray, ql: np.ndarray, t: np.ndarray, tl: np.ndarray) -> np.ndarray:
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(q), 256):
            batch = {"query_ids": q[i:i + 256], "query_len": ql[i:i + 256],
                     "title_ids": t[i:i + 256], "title_len": tl[i:i + 256]}
            out.append(model({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64))
                              for k, v in batch.items()}).float().numpy())
    return np.concatenate(out)


def criteria(z: np.ndarray, pairs: pd.DataFrame) -> dict[str, float]:
    """The recipe's own held-out metrics (training.metrics.held_out_metrics), plus debiased clicks."""
    n, c, w = (pairs[k].to_numpy(np.float64) for k in ("n", "clicks", "w"))
    m = held_out_metrics(z, {"label": pairs["wy"].to_numpy(np.float64) / np.maximum(w, 1e-12), "weight": w,
                             "impressions": n, "clicks": c})
    return {"own_weighted": m[SELECT_KEYS["recalibrated_loss"]], "impression": m[SELECT_KEYS["impression_loss"]],
            "ipw": recalibrated_loss(z, np.clip(pairs["ipw"].to_numpy(np.float64) / n, 0, 1), n),
            "click_auc": m["eval_auc"]}


def auc_from(path: Path) -> float | None:
    return json.loads(path.read_text())["auc"] if path.exists() else None


def study_run(scored: Path, model_dir: Path, true_auc: dict[str, float | None], label: dict) -> list[dict]:
    """The start and the exported model of one training run under every criterion. true_auc: each
    candidate's AUC on graded held-out queries (the start ranks as the zero-shot encoder: a > 0)."""
    trained = json.loads((model_dir / "train_summary.json").read_text())
    cfg = yaml.safe_load((model_dir / "train_config.yaml").read_text())
    calibration = json.loads((scored / "_summary.json").read_text())["calibration"]
    pairs = held_out_pairs(scored, cfg["train"]["eval_fraction"])
    q, t = (np.stack(pairs[k].to_numpy()) for k in ("query_ids", "title_ids"))
    out = []
    for name, weights in (("start", None), ("exported", model_dir / "checkpoints" / "best.pt")):
        model = build_trainee("bi_encoder", model_loader.default_model_path(), calibration)
        if weights is not None:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.eval()
        z = logits(model, q, pairs["query_len"].to_numpy(), t, pairs["title_len"].to_numpy())
        row = {**label, "candidate": name, "selected": trained["selected"], "held_out_pairs": len(pairs),
               **criteria(z, pairs), "true_auc": true_auc[name]}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def benchmark_run(seed_dir: Path, run: str) -> list[dict]:
    """A benchmarks/model_quality.py run: w_RUN, m_RUN and their evaluations in the seed's folder."""
    truth = {"start": auc_from(seed_dir / "eval_zero_shot.json"), "exported": auc_from(seed_dir / f"eval_{run}.json")}
    return study_run(seed_dir / f"w_{run}", seed_dir / f"m_{run}", truth, {"seed_dir": seed_dir.name, "run": run})


def pipeline_runs(folder: Path) -> list[dict]:
    """Every strategy of a `clickweight pipeline` output's round 0."""
    table = json.loads((folder / "pipeline_results.json").read_text())
    rows = table["results"]
    zero = next(r["auc"] for r in rows if str(r["strategy"]).startswith("zero-shot"))
    out = []
    for model_dir in sorted((folder / "round_0").glob("model_*")):
        strategy = model_dir.name[len("model_"):]
        truth = {"start": zero, "exported": auc_from(folder / "round_0" / f"eval_{strategy}.json")}
        out += study_run(folder / "round_0" / f"weighted_{strategy}", model_dir, truth,
                         {"seed_dir": folder.name, "run": strategy})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "runs" / "model_quality"))
    p.add_argument("--sessions", default="16")
    p.add_argument("--runs", nargs="*", default=[], help="SEED:RUN_FOLDER_SUFFIX, e.g. 0:none 2:ipw_s16_seed2b")
    p.add_argument("--pipeline", action="append", default=[], help="a `clickweight pipeline` output folder")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "selection_criteria.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for spec in args.runs:
        seed, run = spec.split(":", 1)
        rows += benchmark_run(Path(args.work) / f"seed{seed}_s{args.sessions}", run)
    for folder in args.pipeline:
        rows += pipeline_runs(Path(folder))
    frame = pd.DataFrame(rows)
    verdicts = []
    for (seed_dir, run), g in frame.groupby(["seed_dir", "run"], sort=False):
        start, exported = g.set_index("candidate").loc["start"], g.set_index("candidate").loc["exported"]
        v = {"seed_dir": seed_dir, "run": run, "selected": start["selected"]}
        for k in ("own_weighted", "impression", "ipw"):
            v[f"{k}_prefers"] = "exported" if exported[k] < start[k] else "start"
        v["click_auc_prefers"] = "exported" if exported["click_auc"] > start["click_auc"] else "start"
        if start["true_auc"] is not None and exported["true_auc"] is not None:
            v["true_auc_prefers"] = "exported" if exported["true_auc"] > start["true_auc"] else "start"
        verdicts.append(v)
    print("| " + " | ".join(verdicts[0]) + " |")
    for v in verdicts:
        print("| " + " | ".join(str(x) for x in v.values()) + " |")
    Path(args.json).write_text(json.dumps({"command": "python -m benchmarks.selection_criteria "
                                           + " ".join(argv if argv is not None else sys.argv[1:]),
                                           "candidates": rows, "verdicts": verdicts}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
