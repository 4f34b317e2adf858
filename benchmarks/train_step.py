"""Bi-encoder training step time, fp32 against bf16 autocast, on real (query, title) pairs.

The recipe's own pieces (build_trainee, weighted_bce, adamw, udfs.scoring.device.autocast) on one process;
fp32 and bf16 steps alternate, so machine load drifts hit both alike. Batches of real Home Depot
pairs (../shared/data), tokenised as the score job does.

    .venv/bin/python -m benchmarks.train_step                    # batch 32, 20 steps each, 1 thread
    .venv/bin/python -m benchmarks.train_step --threads 2 --batch-size 64

Writes benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.bench_data import real_pairs
from training.model import adamw, build_trainee, optimiser_step
from udfs.scoring import model_loader
from udfs.scoring.device import cpu_has_bf16
from udfs.scoring.token_inputs import text_training_input

ROOT = Path(__file__).resolve().parent.parent


def batches(batch_size: int, n: int, max_length: int, seed: int = 0, pairs: pd.DataFrame | None = None,
            model: str | None = None, device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    """`n` training batches of real pairs (`pairs`, default all of them), tokenised by `model`'s
    tokenizer (default the packaged MiniLM) as the score job does, on `device`."""
    pairs = real_pairs() if pairs is None else pairs
    pairs = pairs.sample(batch_size * n, replace=len(pairs) < batch_size * n, random_state=seed)
    tok = model_loader.load_tokenizer(model or model_loader.default_model_path())
    q_ids, q_len = text_training_input(tok, pairs["query"].str.strip().tolist(), max_length)
    t_ids, t_len = text_training_input(tok, pairs["title"].str.strip().tolist(), max_length)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = slice(i * batch_size, (i + 1) * batch_size)
        batch = {"query_ids": torch.from_numpy(q_ids[s]), "query_len": torch.from_numpy(q_len[s]),
                 "title_ids": torch.from_numpy(t_ids[s]), "title_len": torch.from_numpy(t_len[s]),
                 "label": torch.from_numpy(rng.random(batch_size)),
                 "weight": torch.ones(batch_size, dtype=torch.float64)}
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = batches(args.batch_size, args.steps + 2, args.max_length)
    models = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_trainee("bi_encoder", None, {"a": 10.0, "b": -5.0})
        models[precision] = (model.train(), adamw(model, 2e-5, 0.01, 1e-3))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i, batch in enumerate(data):
        for precision, (model, optim) in models.items():
            tick = time.perf_counter()
            optimiser_step(model, model, optim, batch, precision, "cpu", max_grad_norm=1.0)  # the recipe's step
            if i >= 2:  # the first steps warm up allocators and oneDNN kernels
                times[precision].append(time.perf_counter() - tick)
    ms = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    result = {"batch_size": args.batch_size, "threads": args.threads, "steps": args.steps,
              "cpu_bf16": cpu_has_bf16(), "median_step_ms": ms, "bf16_speedup": ms["fp32"] / ms["bf16"],
              "command": "python -m benchmarks.train_step " + " ".join(argv or [])}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
