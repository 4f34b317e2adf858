"""clickweight pipeline: generate -> score (each run) -> train -> evaluate, with a comparison table.

    clickweight pipeline                                   # the demo: naive baseline against the defaults
    clickweight pipeline --set generate.rows=5000 --set pipeline.strategies=naive,default,ipw
    clickweight pipeline --set rounds=2                    # the iterative loop (seeds 000/001)

Each entry of pipeline.strategies is one run: `naive` (the naive baseline, jobs/config.py NAIVE_BASELINE),
`default` (the config as it is) or a strategy name (weighting.strategy set to it).

Round 0 scores with the configured scorer (the sentence encoder by default); round k >= 1 re-scores
the same clickstream with the scorer of round k-1 for the same strategy, reweights and fine-tunes
again from it (loop.init_from_previous; else from model.path). Round k's model becomes the next
scorer only if its training selected it over its start on held-out data (`selected` != start);
otherwise the previous scorer is kept and the table says so. Every round keeps its outputs in
<workdir>/round_<k>/ (weighted_<s>/, model_<s>/, eval_<s>.json).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from jobs import config as config_mod
from jobs import tracking
from jobs.common import add_common_args, get_spark, log, parse_job_args, write_json
from jobs.outputs import MARKER, LocalFS, check_output, local_path, marker, output_kind
from jobs.report import write_report_quietly

COLUMNS = ("strategy", "round", "train_rows", "steps", "selected", "auc", "ndcg@10", "ess_fraction", "score_s",
           "train_s")


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def round_config(cfg: dict[str, Any], strategy: str, previous_model: str | None) -> dict[str, Any]:
    """One (run, round) config: the run's overrides (naive, default or a strategy name); round k >= 1
    scores with round k-1's fine-tuned model."""
    run_cfg = config_mod.with_overrides(cfg, config_mod.pipeline_run_overrides(strategy))
    run_cfg["train"]["max_steps_per_epoch"] = cfg["pipeline"]["max_steps_per_epoch"]
    if previous_model is not None:
        run_cfg["scorer"]["path"] = previous_model  # a clickweight model folder: cross-encoder scorer
        if cfg["loop"]["init_from_previous"]:
            run_cfg["model"]["path"] = previous_model
    config_mod.validate(run_cfg)
    return run_cfg


def strategy_round(spark, cfg: dict[str, Any], strategy: str, rnd: int, round_dir: Path, data_dir: Path,
                   heldout: tuple[str, float], previous: dict[str, str], scored_by: dict[str | None, str]
                   ) -> dict[str, Any]:
    """Score, train and evaluate one strategy in one round (an MLflow child run when tracking is on)."""
    from jobs.score import run_score
    from jobs.train import run_training
    from training.evaluate import evaluate

    heldout_path, threshold = heldout
    run_cfg = round_config(cfg, strategy, previous.get(strategy))
    weighted, model = round_dir / f"weighted_{strategy}", round_dir / f"model_{strategy}"
    # BERT is the expensive part: strategies sharing a scorer score once per round.
    scorer = run_cfg["scorer"]["path"] or run_cfg["model"]["path"]
    run_cfg["scorer"]["reuse_scores_from"] = scored_by.get(scorer)
    with tracking.run(cfg, f"{strategy} round {rnd}", strategy=strategy, round=rnd) as ml:
        t0 = time.time()
        scored = run_score(spark, str(data_dir / "clickstream"), str(weighted), run_cfg)
        scored_by.setdefault(scorer, str(weighted))
        t1 = time.time()
        # fresh: this run's model is trained on this run's data, never resumed from an older run's
        trained = run_training(str(weighted), str(model), run_cfg, fresh=True)
        t2 = time.time()
        metrics = evaluate(str(model), heldout_path, "relevance", threshold)
        write_json(round_dir / f"eval_{strategy}.json", metrics)
        tracking.log_score(ml, scored)
        tracking.log_train(ml, trained, run_cfg, str(model))
        tracking.log_eval(ml, metrics)
    if trained["selected"] != "start":
        previous[strategy] = str(model)
    else:  # the exported model is the start itself: the next round keeps this round's scorer
        log.info("round %d, %s: training did not beat its start on held-out clicks; the next round keeps "
                 "scoring with %s", rnd, strategy, run_cfg["scorer"]["path"] or run_cfg["model"]["path"]
                 or "the packaged encoder")
    return {"strategy": strategy, "round": rnd, "auc": metrics["auc"], "ndcg@10": metrics["ndcg@10"],
            "train_rows": trained["train_rows_per_epoch"] * len(trained["history"]),
            "steps": trained["global_step"], "score_s": round(t1 - t0, 1),
            "selected": trained["selected"], "next_scorer": previous.get(strategy),
            "train_s": round(t2 - t1, 1), "rows_in": scored["rows_in"],
            "rows_out": scored["rows_out"], "rows_quarantined": scored["rows_quarantined"],
            "rows_sampled_out": scored.get("rows_sampled_out", 0),
            "reused_scores": scored.get("reused_scores", {}).get("used", False),
            "ess_fraction": scored["weights"]["ess_fraction"], "scorer_kind": scored["scorer_kind"],
            "scorer_path": scored["scorer_path"], "init_from": run_cfg["model"]["path"],
            "weighted": str(weighted), "model": str(model)}


def prepare_workdir(workdir: str, overwrite: bool = False) -> Path:
    """The pipeline's work folder, refused by the output guard (jobs/outputs.py) like any --output, then
    marked as a pipeline folder so that a rerun (or a run cut off half way) may use it again."""
    work = Path(local_path(workdir, "pipeline.workdir")).resolve()
    check_output(LocalFS(), str(work), "pipeline", (), overwrite)
    work.mkdir(parents=True, exist_ok=True)
    if output_kind(LocalFS(), str(work)) != "pipeline":
        (work / MARKER).write_text(marker("pipeline", "pipeline", str(work)))
    return work


def run_pipeline(cfg: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    from jobs.generate import generate, write
    from training.evaluate import evaluate
    from udfs.scoring.model_loader import resolve_model_path

    started = time.time()
    work = prepare_workdir(cfg["pipeline"]["workdir"], overwrite)
    g = cfg["generate"]
    data_dir = work / "data"
    gen = write(generate(g["rows"], g["days"], g["seed"], g["heldout_query_fraction"],
                         g["noise_click_rate"], g["malformed_fraction"], queries=g["queries"],
                         items=g["items"]), str(data_dir))
    log.info("generated %s rows -> %s", g["rows"], data_dir)
    heldout = str(data_dir / "heldout.parquet")
    threshold = cfg["pipeline"]["eval_positive_threshold"]
    spark = get_spark(cfg)

    rows = []
    with tracking.run(cfg, "pipeline", workdir=str(work), rounds=cfg["rounds"]) as ml:
        baseline = evaluate(resolve_model_path(cfg["model"]["path"]), heldout, "relevance", threshold)
        tracking.log_eval(ml, baseline, prefix="zero_shot_")
        rows.append({"strategy": "zero-shot encoder (no training)", "auc": baseline["auc"],
                     "ndcg@10": baseline["ndcg@10"], "train_rows": 0, "steps": 0})
        previous: dict[str, str] = {}  # strategy -> the model folder its last round produced
        for rnd in range(cfg["rounds"]):
            round_dir = work / f"round_{rnd}"
            round_dir.mkdir(parents=True, exist_ok=True)
            scored_by: dict[str | None, str] = {}  # scorer -> this round's first output scored with it
            strategies = cfg["pipeline"]["strategies"]
            for i, strategy in enumerate(strategies):
                log.info("pipeline: round %d/%d, strategy %d/%d (%s): score, train, evaluate", rnd + 1,
                         cfg["rounds"], i + 1, len(strategies), strategy)
                rows.append(strategy_round(spark, cfg, strategy, rnd, round_dir, data_dir, (heldout, threshold),
                                           previous, scored_by))
    result = {"workdir": str(work), "generate": gen, "heldout": heldout, "positive_threshold": threshold,
              "rounds": cfg["rounds"], "results": rows, "seconds": round(time.time() - started, 1)}
    write_json(work / "pipeline_results.json", result)
    (work / "pipeline_results.md").write_text(format_table(rows) + "\n")
    return result


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="clickweight pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--overwrite", action="store_true",
                   help="use pipeline.workdir even if it is a non-empty folder that is not a pipeline's")
    add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_job_args(build_parser(), argv)
    result = run_pipeline(cfg, args.overwrite)
    write_report_quietly(result["workdir"])
    print(f"\nclickweight pipeline: results in {result['workdir']} ({result['seconds']} s)")
    print(f"held-out queries: {result['heldout']} (true relevance, positive >= {result['positive_threshold']})\n")
    print(format_table(result["results"]))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("pipeline", main))
