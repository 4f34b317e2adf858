"""Does clickweight give a better fine-tuned model than the zero-shot encoder? Real queries, simulated clicks.

Reads ../shared/data/homedepot_relevance_dev.parquet (real queries, product titles, human relevance
1..3), samples train and held-out queries per seed, turns the train queries into a clickstream with
benchmarks/click_simulator.py (position bias, noise clicks, purchases, pairs repeated across
sessions), and per strategy runs the real CLIs: `clickweight score`, `clickweight train`,
`clickweight evaluate` on the held-out queries against their TRUE grades (AUC with grade >= 2.5
positive, NDCG@10). Every seed also evaluates the zero-shot encoder (no training).

    # the matrix (realistic traffic: ~200k impressions per seed)
    .venv/bin/python -m benchmarks.model_quality --seeds 0 1 2 --strategies none,action_value,ipw,denoise \
        --keep-half action_value --tag s16
    # a learning curve over traffic (impressions grow with sessions per query)
    .venv/bin/python -m benchmarks.model_quality --seeds 0 --sessions 2,5 --strategies none,ipw --tag curve
    # another setting on the same seed's scores (its own folders and table label)
    .venv/bin/python -m benchmarks.model_quality --seeds 0 --strategies none --reuse-from none \
        --set model.kind=cross_encoder --tag cross --label " (cross_encoder)"
    # re-tabulate earlier results together
    .venv/bin/python -m benchmarks.model_quality --seeds --include A.json --include B.json --tag all

Writes benchmarks/results/model_quality[_TAG].{json,md}. Run from the repository root.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from benchmarks.bench_data import HOMEDEPOT
from benchmarks.weighting_quality import POSITIVE, run, sample_queries
from udfs.clickstream.simulate import SimulatorSettings, simulate
from udfs.scoring.model_loader import default_model_path

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "clickweight")


def prepare(work: Path, args, seed: int, sessions: float) -> Path:
    """The seed's clickstream (train queries) and held-out pairs with their true grades."""
    train, held = sample_queries(args.data, args.train_queries, args.heldout_queries, seed)
    clicks, _ = simulate(train, SimulatorSettings(noise_share=args.noise_share, sessions_per_query=sessions), seed)
    data = work / f"seed{seed}_s{sessions:g}"
    (data / "clickstream").mkdir(parents=True, exist_ok=True)
    clicks.to_parquet(data / "clickstream" / "part-0.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
    held[["query", "item_id", "title", "relevance"]].to_parquet(data / "heldout.parquet")
    return data


def evaluate(model: str, data: Path, name: str, reuse: bool = False) -> dict:
    """Held-out AUC and NDCG@10 against true grades; `reuse` keeps an earlier evaluation of the same model
    on the same held-out file (the zero-shot encoder, evaluated once per seed, not once per invocation)."""
    out = data / f"eval_{name}.json"
    if reuse and out.exists():
        metrics = json.loads(out.read_text())
        if metrics.get("model") == model and metrics.get("input") == str(data / "heldout.parquet"):
            return {"auc": metrics["auc"], "ndcg@10": metrics["ndcg@10"], "eval_s": 0.0}
    seconds = run([CLI, "evaluate", "--model", model, "--input", str(data / "heldout.parquet"), "--label-col",
                   "relevance", "--positive-threshold", str(POSITIVE), "--output", str(out)])
    metrics = json.loads(out.read_text())
    return {"auc": metrics["auc"], "ndcg@10": metrics["ndcg@10"], "eval_s": round(seconds, 1)}


def folder_name(name: str, args) -> str:
    """A run's folder under the seed's data: tagged runs (other settings) never overwrite untagged ones."""
    return name + (f"_{args.tag}" if args.tag else "")


def train_run(data: Path, name: str, sets: list[str], args) -> dict:
    weighted, model = data / f"w_{folder_name(name, args)}", data / f"m_{folder_name(name, args)}"
    overrides = [a for s in [*args.set, *sets] for a in ("--set", s)]
    score_s = run([CLI, "score", "--input", str(data / "clickstream"), "--output", str(weighted), *overrides])
    train_s = run([CLI, "train", "--input", str(weighted), "--output", str(model), *overrides])
    scored = json.loads((weighted / "_summary.json").read_text())
    trained = json.loads((model / "train_summary.json").read_text())
    start_auc = (trained["start"] or {}).get("eval_auc")
    return {"run": name, **evaluate(str(model), data, folder_name(name, args)), "selected": trained["selected"],
            "steps": trained["global_step"], "pairs": scored["pairs"]["pairs"], "rows": scored["rows_out"],
            "compaction": round(scored["pairs"]["compaction_ratio"], 2), "score_s": round(score_s, 1),
            "train_s": round(train_s, 1), "step_ms": [h["timing_rank0"]["step_ms"] for h in trained["history"]],
            "clicks_auc_start": start_auc, "clicks_auc_epochs": [h.get("eval_auc") for h in trained["history"]]}


def summarise(rows: list[dict]) -> list[dict]:
    # Merged invocations each evaluate the zero-shot encoder: one row per (traffic, seed, run).
    frame = (pd.DataFrame(rows).drop_duplicates(["sessions", "seed", "run"], keep="last")
               .sort_values("seed", kind="stable"))  # per-seed lists in seed order
    none = frame[frame["run"] == "none"].set_index(["sessions", "seed"])["auc"]
    frame["none_auc"] = [none.get((a, b), float("nan")) for a, b in zip(frame["sessions"], frame["seed"])]
    out = []
    for (sessions, name), g in frame.groupby(["sessions", "run"], sort=False):
        out.append({"sessions": sessions, "run": name, "seeds": len(g), "seed_list": g["seed"].tolist(),
                    "impressions": int(g["rows"].mean()),
                    "auc_mean": g["auc"].mean(), "auc_sd": g["auc"].std(ddof=1) if len(g) > 1 else None,
                    "ndcg_mean": g["ndcg@10"].mean(),
                    "ndcg_sd": g["ndcg@10"].std(ddof=1) if len(g) > 1 else None,
                    "auc_minus_zero_shot": (g["auc"].to_numpy() - g["zero_shot_auc"].to_numpy()).tolist(),
                    "auc_minus_none": (g["auc"].to_numpy() - g["none_auc"].to_numpy()).tolist()})
    return out


def markdown(summary: list[dict]) -> str:
    def pm(m, s):
        return f"{m:.4f}" + (f" ± {s:.4f}" if s is not None and s == s else "")

    lines = ["| sessions/query | impressions | run | seeds | held-out AUC | NDCG@10 | AUC − zero-shot per seed "
             "| AUC − none per seed |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        seeds = r.get("seed_list") or [""] * len(r["auc_minus_zero_shot"])
        delta = ", ".join(f"s{k} {d:+.4f}" for k, d in zip(seeds, r["auc_minus_zero_shot"]))
        vs_none = ", ".join(f"s{k} {d:+.4f}" for k, d in zip(seeds, r["auc_minus_none"]) if d == d)
        lines.append(f"| {r['sessions']:g} | {r['impressions']} | {r['run']} | {r['seeds']} | "
                     f"{pm(r['auc_mean'], r['auc_sd'])} | {pm(r['ndcg_mean'], r['ndcg_sd'])} | {delta} | {vs_none} |")
    return "\n".join(lines) + "\n"


def write_results(results: Path, stem: str, args, rows: list[dict]) -> None:
    summary = summarise(rows)
    (results / f"{stem}.json").write_text(json.dumps({"args": vars(args), "runs": rows, "summary": summary},
                                                     indent=2, default=str) + "\n")
    (results / f"{stem}.md").write_text(markdown(summary))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(HOMEDEPOT))
    p.add_argument("--work", default=str(ROOT / "runs" / "model_quality"))
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2],
                   help="data seeds; none with --include only re-tabulates earlier results")
    p.add_argument("--train-queries", type=int, default=2000)
    p.add_argument("--heldout-queries", type=int, default=800)
    p.add_argument("--sessions", default="16", help="mean sessions per query, comma-separated for a curve")
    p.add_argument("--noise-share", type=float, default=0.15)
    p.add_argument("--strategies", default="none,denoise")
    p.add_argument("--keep-half", default="", help="strategies also run with sampling.keep_fraction=0.5")
    p.add_argument("--set", action="append", default=[], help="extra key=value for score and train")
    p.add_argument("--tag", default="", help="names the results file and this invocation's run folders")
    p.add_argument("--label", default="", help="appended to run names in the table, e.g. ' (cross_encoder)'")
    p.add_argument("--reuse-from", default="", help="reuse the BERT scores of this run (e.g. none) from an earlier "
                   "invocation on the same seeds, when its output is there")
    p.add_argument("--include", action="append", default=[],
                   help="an earlier results JSON whose runs join this table (e.g. another seed's run)")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} not found: this benchmark reads the real pairs from ../shared/data")
    work = Path(args.work)
    results = ROOT / "benchmarks" / "results"
    stem = "model_quality" + (f"_{args.tag}" if args.tag else "")
    rows: list[dict] = [r for f in args.include for r in json.loads(Path(f).read_text())["runs"]]
    for sessions in [float(s) for s in args.sessions.split(",")]:
        for seed in args.seeds:
            data = prepare(work, args, seed, sessions)
            zero = evaluate(default_model_path(), data, "zero_shot", reuse=True)
            impressions = len(pd.read_parquet(data / "clickstream", columns=["event_id"]))
            rows.append({"sessions": sessions, "seed": seed, "run": "zero-shot", "rows": impressions,
                         "zero_shot_auc": zero["auc"], **zero})
            runs = [(s, [f"weighting.strategy={s}"]) for s in args.strategies.split(",") if s]
            runs += [(f"{s}+keep0.5", [f"weighting.strategy={s}", "sampling.keep_fraction=0.5"])
                     for s in args.keep_half.split(",") if s]
            for i, (name, sets) in enumerate(runs):
                # BERT scores once per seed: later strategies reuse the first run's pair scores, or
                # (--reuse-from) an earlier invocation's run on the same seed.
                source = data / (f"w_{args.reuse_from}" if args.reuse_from else f"w_{folder_name(runs[0][0], args)}")
                reusable = source.is_dir() and source.name != f"w_{folder_name(name, args)}"
                reuse = [f"scorer.reuse_scores_from={source}"] if (i or args.reuse_from) and reusable else []
                r = train_run(data, name, sets + reuse, args)
                r["run"] += args.label
                rows.append({"sessions": sessions, "seed": seed, "zero_shot_auc": zero["auc"], **r})
                print(json.dumps(rows[-1]), flush=True)
                write_results(results, stem, args, rows)  # after every run: a cut-off matrix keeps what it has
    write_results(results, stem, args, rows)
    print(markdown(summarise(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
