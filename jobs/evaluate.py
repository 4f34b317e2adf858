"""clickweight evaluate: AUC / NDCG@10 / log loss of a model on labelled (query, title) pairs.

    clickweight evaluate --model runs/demo/model_none --input runs/demo/data/heldout.parquet \
        --label-col relevance --positive-threshold 2.0 --output runs/demo/eval_none.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from jobs import inputs
from jobs.common import print_json, setup_logging, write_json
from udfs.errors import UserError


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="clickweight evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder (clickweight model or any BERT folder)")
    p.add_argument("--input", required=True, help="Parquet with query, title and the label column")
    p.add_argument("--label-col", required=True, help="graded or 0/1 label column")
    p.add_argument("--positive-threshold", type=float, default=None,
                   help="label >= X counts as positive for AUC (default: 1 for 0/1 labels, else the median)")
    p.add_argument("--output", required=True, help="JSON file for the metrics")
    p.add_argument("--predictions", default=None,
                   help="also write each pair's score here (Parquet: query, title, label, score)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64)
    return p


def main(argv: list[str] | None = None) -> int:
    from training.evaluate import evaluate

    setup_logging()
    args = build_parser().parse_args(argv)
    inputs.check_model_folder(args.model)
    inputs.check_parquet(args.input)
    inputs.check_columns(args.input, ["query", "title", args.label_col])
    if args.predictions and Path(args.predictions).resolve() == Path(args.input).resolve():
        raise UserError("--predictions must not be the --input file")
    result = evaluate(args.model, args.input, args.label_col, args.positive_threshold,
                      args.batch_size, args.max_length, predictions_path=args.predictions)
    write_json(args.output, result)
    print_json(result)
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("evaluate", main))
