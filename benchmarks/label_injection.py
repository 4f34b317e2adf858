"""A pair label tried before it is built: computed offline, injected into a finished naive score output, trained.

A candidate pair label costs an in-product build (the driver's EM, the Spark path, tests) before the
quality benchmarks can train it. This screen asks first whether it trains better at all: each label is
computed offline by the click model's own EM (udfs/weighting/weights.propensity_em_with_prior, position-
based examination, the noise floor and monotone theta as the default has them, no click context) from the
naive run's pair table (its per-position impressions and clicks and its p_model), written into a copy of
that score output (benchmarks.quality.set_pair_labels), trained under the naive run's own trainee, budget
and gate, and scored on the log's held-out queries. Every label here comes from the same offline EM, so
their differences are the labels' alone.

Labels:
- `default_offline`: the default's regression prior (20 p_model bins, one pseudo-row).
- `pos_eb`: the prior's groups p_model_position with the strength estimated from the log (the demo's
  option, docs/quality_screens.md "Screen 5").
- `hybrid`: pos_eb's label within each query (its deviations from the query's impression-weighted mean)
  around default_offline's query mean: the order inside a query from the prior that keeps the logging
  ranker's evidence, the level across queries from the default's (benchmarks/results/label_accuracy_dev.md).

Logs: a demo_seeds folder (`demo:<folder>`, e.g. runs/demo_seeds/g1: its round_0/weighted_naive,
model_naive and data/heldout.parquet), or a homedepot dev log (`homedepot:<seed>:<click model>`: the log
benchmarks.quality simulates for that seed, 1000 train and 1200 held-out dev queries, 16 sessions a query,
scored here under the naive baseline).

    python -m benchmarks.label_injection --logs demo:runs/demo_seeds/g1 homedepot:0:graded \\
        --labels default_offline,hybrid --tag dev

Writes benchmarks/results/label_injection_TAG.{json,md}: per log each label's held-out AUC and its paired
difference against the first label (bootstrap over held-out queries), combined over logs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_data import HOMEDEPOT, write_results
from benchmarks.protocol import (
    bootstrap_auc_differences,
    click_model_settings,
    combine_seeds,
    percentile_interval,
    sample_split,
)
from benchmarks.quality import set_pair_labels, write_clickstream
from jobs.config import NAIVE_BASELINE
from training.metrics import auc
from udfs.clickstream.schema import PAIRS_DIR
from udfs.clickstream.simulate import SimulatorSettings, simulate
from udfs.weighting import weights
from udfs.weighting.cells import prior_groups

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "clickweight")
POSITIVE = {"demo": 2.0, "homedepot": 2.5}  # relevance counted positive: benchmarks.demo_seeds', benchmarks.quality's
LABELS = ("default_offline", "pos_eb", "hybrid")


class _Groups:
    """The two settings udfs/weighting/cells.prior_groups reads."""

    def __init__(self, kind: str, buckets: int = 20) -> None:
        self.em_prior_groups, self.em_buckets = kind, buckets


def pair_cells(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """The pair table's (position bucket, pair) cells: position index, pair index, impressions, clicks;
    the number of position buckets and each pair's mean logged position."""
    shown = np.stack(pairs["position_impressions"].to_numpy()).astype(np.float64)
    clicked = np.stack(pairs["position_clicks"].to_numpy()).astype(np.float64)
    j, k = np.nonzero(shown)
    mean_position = (shown * np.arange(1, shown.shape[1] + 1)).sum(1) / shown.sum(1)
    return k, j, shown[j, k], clicked[j, k], shown.shape[1], mean_position


def query_mean(x: np.ndarray, query: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each pair's query's (or any group's) w-weighted mean of x."""
    f = pd.DataFrame({"x": x * w, "w": w, "q": query}).groupby("q")[["x", "w"]].transform("sum")
    return (f["x"] / f["w"]).to_numpy()


def homedepot_dev_log(seed: int, click_model: str) -> tuple[pd.DataFrame, pd.DataFrame, SimulatorSettings]:
    """A homedepot dev log's train and held-out pairs and its click model, as benchmarks.quality draws them
    (1000 train and 1200 held-out dev queries, 16 sessions a query)."""
    train, held = sample_split(pd.read_parquet(HOMEDEPOT), "dev", 1000, 1200, seed)
    settings = SimulatorSettings(**{**click_model_settings(click_model).__dict__, "sessions_per_query": 16.0})
    return train, held, settings


def offline_labels(pairs: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The named labels for the pair table `pairs` (query, title, p_model, position_impressions,
    position_clicks), one value per row of it."""
    k, j, n, c, n_positions, mean_position = pair_cells(pairs)
    p_model, mean_position = pairs["p_model"].reset_index(drop=True), pd.Series(mean_position)

    def em(groups: str, prior_fit: str) -> np.ndarray:
        group = prior_groups(p_model, mean_position, _Groups(groups))
        _, gamma, _, _, _ = weights.propensity_em_with_prior(k, j, n, c, n_positions, len(pairs), group, 1.0,
                                                             prior_fit, noise_floor=True, monotone=True)
        return gamma

    out: dict[str, np.ndarray] = {}
    need = set(names) | ({"default_offline", "pos_eb"} if "hybrid" in names else set())
    if "default_offline" in need:
        out["default_offline"] = em("p_model", "fixed")
    if "pos_eb" in need:
        out["pos_eb"] = em("p_model_position", "empirical_bayes")
    if "hybrid" in need:
        query = pd.factorize(pairs["query"])[0]
        w = pairs["impressions"].to_numpy(np.float64)
        within = out["pos_eb"] - query_mean(out["pos_eb"], query, w)
        out["hybrid"] = np.clip(within + query_mean(out["default_offline"], query, w), weights.EPS, 1 - weights.EPS)
    return {name: out[name] for name in names}


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")


def prepare_log(spec: str, work: Path) -> tuple[Path, list[str], Path, Path, float]:
    """(naive score output, the arguments that train as naive was trained, held-out pairs, the folder for
    this log's runs, the relevance counted positive)."""
    kind, _, rest = spec.partition(":")
    if kind == "demo":
        folder = Path(rest).resolve()
        rnd = folder / "round_0"
        return (rnd / "weighted_naive", ["--conf", str(rnd / "model_naive" / "train_config.yaml")],
                folder / "data" / "heldout.parquet", folder / "label_injection", POSITIVE["demo"])
    if kind != "homedepot":
        raise SystemExit(f"{spec}: a log is demo:<folder> or homedepot:<seed>:<click model>")
    seed_text, _, click_model = rest.partition(":")
    seed = int(seed_text)
    folder = work / f"homedepot_s{seed}_{click_model}"
    folder.mkdir(parents=True, exist_ok=True)
    train, held, settings = homedepot_dev_log(seed, click_model)
    held_path = folder / "heldout.parquet"
    if not held_path.exists():
        held[["query", "item_id", "title", "relevance"]].to_parquet(held_path)
    weighted = folder / "w_naive"
    if not (weighted / "_clickweight.json").exists():
        log = write_clickstream(simulate(train, settings, seed)[0], folder)
        run([CLI, "score", "--input", str(log), "--output", str(weighted), "--overwrite",
             *[a for s in NAIVE_BASELINE for a in ("--set", s)]])
    # the naive baseline's trainee as benchmarks.quality trains it
    return weighted, [a for s in NAIVE_BASELINE for a in ("--set", s)], held_path, folder, POSITIVE["homedepot"]


def train_label(name: str, labels: pd.Series, naive: Path, train_args: list[str], held: Path, folder: Path,
                positive: float) -> Path:
    """Train on naive's score output with `labels` as the pair labels; returns the held-out predictions."""
    weighted, model, predictions = folder / f"w_{name}", folder / f"m_{name}", folder / f"heldout_{name}.parquet"
    if not (weighted / "_labels_injected").exists():
        shutil.rmtree(weighted, ignore_errors=True)
        shutil.copytree(naive, weighted)
        set_pair_labels(weighted, labels)
        (weighted / "_labels_injected").write_text(f"pair labels: {name} (benchmarks/label_injection.py)\n")
    if not (model / "train_summary.json").exists():
        run([CLI, "train", *train_args, "--input", str(weighted), "--output", str(model), "--fresh", "--overwrite"])
    if not predictions.exists():
        run([CLI, "evaluate", "--model", str(model), "--input", str(held), "--label-col", "relevance",
             "--positive-threshold", str(positive), "--output", str(predictions.with_suffix(".json")),
             "--predictions", str(predictions)])
    return predictions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--logs", nargs="+", required=True)
    p.add_argument("--labels", default="default_offline,hybrid", help="the first is the one others are paired with")
    p.add_argument("--tag", required=True)
    p.add_argument("--work", default=str(ROOT / "runs" / "label_injection"))
    p.add_argument("--replicates", type=int, default=1000)
    args = p.parse_args(argv)
    names = args.labels.split(",")
    unknown = set(names) - set(LABELS)
    if unknown:
        raise SystemExit(f"unknown labels {sorted(unknown)}: known {list(LABELS)}")
    per_log, draws = [], {n: [] for n in names[1:]}
    for i, spec in enumerate(args.logs):
        started = time.time()
        naive, train_args, held, folder, threshold = prepare_log(spec, Path(args.work))
        pairs = pd.concat([pd.read_parquet(f, columns=["query", "title", "p_model", "impressions",
                                                       "position_impressions", "position_clicks"])
                           for f in sorted((naive / PAIRS_DIR).rglob("*.parquet"))], ignore_index=True)
        labels = offline_labels(pairs, names)
        index = pd.MultiIndex.from_frame(pairs[["query", "title"]])
        frame = None
        for name in names:
            scores = pd.read_parquet(train_label(name, pd.Series(labels[name], index=index), naive, train_args, held,
                                                 folder, threshold), columns=["query", "relevance", "score"])
            frame = scores[["query", "relevance"]].copy() if frame is None else frame
            frame[name] = scores["score"].to_numpy()
        positive = frame["relevance"].to_numpy() >= threshold
        scores = {n: frame[n].to_numpy() for n in names}
        boot = bootstrap_auc_differences(frame["query"].to_numpy(), positive, scores, names[0], args.replicates, i)
        aucs = {n: auc(positive, scores[n]) for n in names}
        row = {"log": spec, "pairs": len(pairs), "impressions": int(pairs["impressions"].sum()), "auc": aucs,
               "label_mean": {n: float(np.average(labels[n], weights=pairs["impressions"])) for n in names},
               "minus_first": {}, "wall_s": round(time.time() - started, 1)}
        for n, d in boot.items():
            point = aucs[n] - aucs[names[0]]
            draws[n].append((point, d))
            row["minus_first"][n] = percentile_interval(point, d)
        per_log.append(row)
        print(json.dumps(row), flush=True)
    combined = {n: combine_seeds([pt for pt, _ in v], [d for _, d in v]) for n, v in draws.items()}
    result = {"labels": names, "per_log": per_log, "combined": combined,
              "command": "python -m benchmarks.label_injection " + " ".join(argv or sys.argv[1:])}
    lines = ["| log | pairs | impressions | " + " | ".join(names) + " | "
             + " | ".join(f"{n} − {names[0]} [95 % CI]" for n in names[1:]) + " |",
             "|---|---|---|" + "---|" * (2 * len(names) - 1)]
    for r in per_log:
        d = r["minus_first"]
        lines.append(f"| {r['log']} | {r['pairs']} | {r['impressions']} | "
                     + " | ".join(f"{r['auc'][n]:.4f}" for n in names) + " | "
                     + " | ".join(f"{d[n]['mean']:+.4f} [{d[n]['lo']:+.4f}, {d[n]['hi']:+.4f}]"
                                  for n in names[1:]) + " |")
    lines.append(f"| combined ({len(per_log)} logs) | | |" + " |" * len(names) + " "
                 + " | ".join(f"{c['mean']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}], {c['wins']} of {c['seeds']} above"
                              for c in combined.values()) + " |")
    write_results(f"label_injection_{args.tag}", result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
