"""The demo (`clickweight pipeline`) on several generator seeds: is `default` above `naive` above zero-shot?

The demo's own data is one draw (`generate.seed: 7`, conf/defaults.yaml); its figures are a check, not a
place to choose anything. Other generator seeds give the same kind of log (20,000 rows, about 5,000
pairs, 4 impressions a pair) with other catalogues, queries and clicks: the place to ask whether a
result on the demo is the rule or the draw. Per seed: the pipeline as a user runs it (its own work
folder); the `truth` oracle beside it (the naive run's score output with each pair's true click
probability as its label, from the generator's hidden relevance, trained under the naive run's own
config: how much a perfect label could win at this size); then every model (zero-shot, naive, default,
truth) scored on the seed's held-out queries, and the paired AUC difference against naive with a 95 %
bootstrap interval over held-out queries, combined over seeds as in docs/quality.md (benchmarks.protocol).

    .venv/bin/python -m benchmarks.demo_seeds --seeds 1 2 3 --tag dev    # dev seeds: choose here
    .venv/bin/python -m benchmarks.demo_seeds --seeds 7 --tag demo       # the demo itself: a check
    # a candidate default beside them: the pipeline's `default` run under these settings, in its own folder
    .venv/bin/python -m benchmarks.demo_seeds --seeds 1 2 3 --tag dev \
        --variant "pos=weighting.em_prior_groups=p_model_position"
    # ... and each variant's paired difference from the default too (finished runs are reused)
    .venv/bin/python -m benchmarks.demo_seeds --seeds 1 2 3 --tag dev_pos --against default \
        --variant "pos=weighting.em_prior_groups=p_model_position"
    # the whole demo under other settings (every run: zero-shot, naive, default): a longer log of the
    # same world: ~11 impressions a pair instead of ~4
    .venv/bin/python -m benchmarks.demo_seeds --seeds 1 2 3 --tag dev_x4 \
        --set generate.rows=80000 --set generate.queries=500 --set generate.items=1000

Writes benchmarks/results/demo_seeds_TAG.{json,md}. Run folders: runs/demo_seeds/g<seed>, or
g<seed>_<hash of the --set list> with --set (reused when their pipeline finished).
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks.bench_data import write_results
from benchmarks.protocol import bootstrap_auc_differences, combine_seeds, percentile_interval
from benchmarks.quality import set_pair_labels
from jobs.generate import DEMO_CLICKS
from training.metrics import auc
from udfs.clickstream.simulate import click_probability
from udfs.scoring.model_loader import default_model_path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "clickweight")
POSITIVE = 2.0  # conf/defaults.yaml pipeline.eval_positive_threshold
MODELS = ("zero-shot", "naive", "default", "truth")


def run_pipeline(workdir: Path, seed: int, sets: list[str] = (), base_sets: list[str] = ()) -> float:
    """`clickweight pipeline` on generator seed `seed` under `base_sets` (with `sets`: only its `default`
    run, under them too) unless its results are there; returns its wall (s)."""
    if (workdir / "pipeline_results.json").exists():
        return 0.0
    extra = [a for s in (*base_sets, *sets) for a in ("--set", s)]
    if sets:
        extra += ["--set", "pipeline.strategies=[default]"]
    started = time.time()
    proc = subprocess.run([CLI, "pipeline", "--set", f"generate.seed={seed}", "--set", f"pipeline.workdir={workdir}",
                           *extra], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pipeline in {workdir} failed:\n{proc.stderr[-3000:]}")
    return time.time() - started


def truth_labels(weighted: Path, data: Path) -> int:
    """The `truth` oracle's labels (as benchmarks/quality.py's): every pair of the naive run's pair table
    gets its true click probability given examination under the demo's click model, from the generator's
    hidden per-row relevance (data/truth.parquet). Rewrites the pair table in place; returns its pairs."""
    rows = pd.read_parquet(data / "clickstream", columns=["event_id", "query", "title"])
    truth = pd.read_parquet(data / "truth.parquet", columns=["event_id", "true_relevance"])
    rows = rows.merge(truth, on="event_id", how="inner").dropna(subset=["query", "title", "true_relevance"])
    rows = rows.assign(query=rows["query"].str.strip(), title=rows["title"].str.strip(),
                       p=click_probability(rows["true_relevance"].to_numpy(), DEMO_CLICKS))
    return set_pair_labels(weighted, rows.groupby(["query", "title"])["p"].mean())


def run_truth(workdir: Path) -> float:
    """The `truth` oracle beside a finished pipeline: the naive run's score output with truth_labels,
    trained under the naive run's own config (same trainee, budget and gate); returns its wall (s)."""
    rnd = workdir / "round_0"
    model = rnd / "model_truth"
    if (model / "train_summary.json").exists():
        return 0.0
    started, weighted = time.time(), rnd / "weighted_truth"
    if not (weighted / "_truth_labels").exists():
        shutil.rmtree(weighted, ignore_errors=True)
        shutil.copytree(rnd / "weighted_naive", weighted)
        truth_labels(weighted, workdir / "data")
        (weighted / "_truth_labels").write_text("the pair table's labels are the true click probabilities\n")
    proc = subprocess.run([CLI, "train", "--conf", str(rnd / "model_naive" / "train_config.yaml"),
                           "--input", str(weighted), "--output", str(model), "--fresh", "--overwrite"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"truth training in {model} failed:\n{proc.stderr[-3000:]}")
    return time.time() - started


def sets_digest(sets: list[str]) -> str:
    """A short name for a list of settings (their order does not matter)."""
    return hashlib.sha256("\n".join(sorted(sets)).encode()).hexdigest()[:8]


def predictions(workdir: Path, variants: dict[str, Path] | None = None) -> pd.DataFrame:
    """query / relevance and one score column per model, on the seed's held-out pairs; `variants`: name ->
    a variant's pipeline folder (its `default` model)."""
    held = workdir / "data" / "heldout.parquet"
    paths = {"zero-shot": Path(default_model_path()), "naive": workdir / "round_0" / "model_naive",
             "default": workdir / "round_0" / "model_default", "truth": workdir / "round_0" / "model_truth",
             **{name: folder / "round_0" / "model_default" for name, folder in (variants or {}).items()}}
    frame = None
    for name, model in paths.items():
        out = workdir / f"heldout_scores_{name}.parquet" if name in MODELS else \
            paths[name].parent.parent / "heldout_scores_default.parquet"
        if not out.exists():
            subprocess.run([CLI, "evaluate", "--model", str(model), "--input", str(held), "--label-col", "relevance",
                            "--positive-threshold", str(POSITIVE), "--output", str(out.with_suffix(".json")),
                            "--predictions", str(out)], check=True, capture_output=True, text=True)
        scores = pd.read_parquet(out, columns=["query", "relevance", "score"])
        if frame is None:
            frame = scores[["query", "relevance"]].copy()
        elif not frame["query"].equals(scores["query"]):
            raise RuntimeError(f"{out}: other held-out rows than the other models'")
        frame[name] = scores["score"].to_numpy()
    return frame


def paired(frames: dict[int, pd.DataFrame], replicates: int = 1000, against: str | None = None) -> dict:
    """Per seed and combined: each model's AUC and its paired difference against naive; with `against`
    (a model's name, e.g. `default` for a screen that compares a variant with today's default), also each
    other model's paired difference against it, from the same resamples of held-out queries."""
    models = [c for c in next(iter(frames.values())).columns if c not in ("query", "relevance")]
    if against is not None and (against not in models or against == "naive"):
        raise ValueError(f"--against {against}: not one of the models {models} other than naive "
                         "(every model is already paired with naive)")
    others = [m for m in models if against is not None and m not in (against, "naive", "zero-shot")]
    per_seed, draws = [], {m: [] for m in models if m != "naive"}
    draws_against: dict[str, list] = {m: [] for m in others}
    for seed, f in frames.items():
        positive = f["relevance"].to_numpy() >= POSITIVE
        scores = {m: f[m].to_numpy() for m in models}
        boot = bootstrap_auc_differences(f["query"].to_numpy(), positive, scores, "naive", replicates, seed)
        aucs = {m: auc(positive, scores[m]) for m in models}
        row = {"seed": seed, "auc": aucs, "minus_naive": {}}
        for m, d in boot.items():
            point = aucs[m] - aucs["naive"]
            draws[m].append((point, d))
            row["minus_naive"][m] = percentile_interval(point, d)
        if others:
            # the same resamples: (m - naive) - (against - naive) is m - against on each draw
            row["minus_against"] = {}
            for m in others:
                point, d = aucs[m] - aucs[against], boot[m] - boot[against]
                draws_against[m].append((point, d))
                row["minus_against"][m] = percentile_interval(point, d)
        per_seed.append(row)
    combined = {m: combine_seeds([p for p, _ in v], [d for _, d in v]) for m, v in draws.items()}
    out = {"per_seed": per_seed, "combined": combined}
    if others:
        out["against"] = against
        out["combined_against"] = {m: combine_seeds([p for p, _ in v], [d for _, d in v])
                                   for m, v in draws_against.items()}
    return out


def _cell(c: dict) -> str:
    return f"{c['mean']:+.4f} [{c['lo']:+.4f}, {c['hi']:+.4f}]"


def markdown(result: dict) -> str:
    models = list(result["per_seed"][0]["auc"])
    others = [m for m in models if m not in ("zero-shot", "naive")]
    against = result.get("against")
    vs = list(result.get("combined_against", {}))
    lines = ["| generator seed | " + " | ".join(models) + " | "
             + " | ".join(f"{m} − naive [95 % CI]" for m in others)
             + "".join(f" | {m} − {against} [95 % CI]" for m in vs) + " |",
             "|---|" + "---|" * (len(models) + len(others) + len(vs))]
    for r in result["per_seed"]:
        d = r["minus_naive"]
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r['auc'][m]:.4f}" for m in models) + " | "
                     + " | ".join(_cell(d[m]) for m in others)
                     + "".join(f" | {_cell(r['minus_against'][m])}" for m in vs) + " |")
    combined = [result["combined"][m] for m in others] + [result["combined_against"][m] for m in vs]
    cells = [f"{_cell(c)}, {c['wins']} of {c['seeds']} above" for c in combined]
    lines.append(f"| combined ({len(result['per_seed'])} seeds) |" + " |" * len(models) + " "
                 + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="generator seeds (the demo's is 7)")
    p.add_argument("--tag", required=True)
    p.add_argument("--work", default=str(ROOT / "runs" / "demo_seeds"))
    p.add_argument("--replicates", type=int, default=1000)
    p.add_argument("--variant", action="append", default=[],
                   help="NAME=key=value;key=value: the default run under these settings, beside the others")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every pipeline run (the generator's size, ...); repeatable")
    p.add_argument("--against", default=None, metavar="MODEL",
                   help="also each variant's (and truth's) paired difference from this model, e.g. default")
    args = p.parse_args(argv)
    variants = {}
    for item in args.variant:
        name, _, sets = item.partition("=")
        variants[name] = [x for x in sets.split(";") if x]
    frames, walls = {}, {}
    for seed in args.seeds:
        workdir = Path(args.work) / (f"g{seed}" + (f"_{sets_digest(args.sets)}" if args.sets else ""))
        walls[seed] = {"pipeline": round(run_pipeline(workdir, seed, base_sets=args.sets), 1),
                       "truth": round(run_truth(workdir), 1)}
        folders = {}
        for name, sets in variants.items():
            folders[name] = workdir / f"variant_{name}"
            walls[seed][name] = round(run_pipeline(folders[name], seed, sets, args.sets), 1)
        frames[seed] = predictions(workdir, folders)
        print(f"generator seed {seed}: wall {walls[seed]} s (0: reused)", flush=True)
    result = {**paired(frames, args.replicates, args.against), "pipeline_wall_s": walls, "variants": variants,
              "settings": args.sets}
    write_results(f"demo_seeds_{args.tag}", result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
