"""The weighting benchmark's model half on one GPU: fine-tune the cross-encoder on each weighted table.

benchmarks/weighting_quality.py runs the real `clickweight score` per strategy and measures what the
weighted loss asks for; training a model to that target needs a GPU-sized step budget (on 2 CPU
cores a 400-step run stays near chance level). The lent GPU machines have PyTorch and transformers
but no Java, Spark or Petastorm, so this script does the `clickweight train` + `evaluate` half there,
with the recipe's own pieces (training.model: the cross-encoder, forward_logits, weighted_bce, the
warm-up/decay schedule; training.evaluate.evaluate_frame: the metrics `clickweight evaluate` prints)
and the recipe's defaults (AdamW lr 5e-5, weight decay 0.01, 10% warm-up, grad-norm clip 1.0,
batch 32, 2 epochs, seed = the data seed). What differs from `clickweight train`: rows come from
pandas, not Petastorm; one process, no DDP; no in-training query split or early stopping (every
row trains, both epochs run); bf16 autocast on CUDA.

    # here, after weighting_quality.py has filled runs/bench: pack what the GPU needs (< 64 MiB)
    .venv/bin/python benchmarks/gpu_finetune.py pack --workdir runs/bench --bundle .gpu_bundle
    # on the GPU machine (python3 with torch + transformers; `run` tool, carry .gpu_bundle)
    python3 benchmarks/gpu_finetune.py train --bundle .gpu_bundle --out $OUT/gpu_finetune.jsonl --budget-s 500
    # back here: merge into benchmarks/results/weighting_quality_model.{md,json}
    .venv/bin/python benchmarks/gpu_finetune.py report --results <jsonl> --device "..."

Runs train in the manifest's priority order (the key comparison on every seed first) and stop
before --budget-s, so a short lease still yields whole results.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POSITIVE = 2.5
# Every seed: the key comparison. First seed only: the rest of the strategies.
KEY_RUNS = ("none", "{best}", "denoise", "{best}_keep0.5", "ipw", "none_unbiased_clicks")
MORE_RUNS = ("relevance", "confidence", "information_gain", "loss", "el2n", "combined", "combined_best",
             "none_random_ranker", "ipw_random_ranker")


def event_index(event_id: pd.Series) -> np.ndarray:
    """The simulator's event ids are e<row number>: the row of the data folder's clickstream."""
    return event_id.str.slice(1).astype(np.int64).to_numpy()


def pack(workdir: Path, bundle: Path, results: Path) -> None:
    """Texts once per data folder, weights once per run, the held-out pairs, the model in fp16."""
    from safetensors.torch import load_file, save_file

    from udfs.model_loader import default_model_path

    summary = json.loads(results.read_text())
    best = summary["best_strategy"]
    order = [r.format(best=best) for r in KEY_RUNS] + list(MORE_RUNS)
    by_run = {(r["seed"], r["run"]): r for r in summary["rows"] if "weighted" in r}
    seeds = sorted({r["seed"] for r in summary["rows"]})
    bundle.mkdir(parents=True, exist_ok=True)
    manifest, folders = [], set()
    for pass_seeds, names in ((seeds, order[:len(KEY_RUNS)]), (seeds[:1], order[len(KEY_RUNS):])):
        for seed in pass_seeds:
            for name in names:
                r = by_run.get((seed, name))
                if r is None:
                    continue
                weighted = Path(r["weighted"])
                data = weighted.parent
                if data.name not in folders:
                    clicks = pd.read_parquet(data / "clickstream", columns=["event_id", "query", "title", "clicked"])
                    clicks["row"] = event_index(clicks["event_id"])
                    clicks.drop(columns="event_id").to_parquet(bundle / f"rows_{data.name}.parquet", index=False)
                    folders.add(data.name)
                w = pd.read_parquet(weighted, columns=["event_id", "weight"])
                pd.DataFrame({"row": event_index(w["event_id"]).astype(np.int32),
                              "weight": w["weight"].to_numpy(np.float32)}).to_parquet(
                    bundle / f"w_{data.name}_{name}.parquet", index=False)
                manifest.append({"seed": seed, "run": name, "rows": f"rows_{data.name}.parquet",
                                 "weights": f"w_{data.name}_{name}.parquet", "heldout": f"heldout_seed{seed}.parquet"})
        for seed in pass_seeds:
            held = workdir / f"seed{seed}" / "heldout.parquet"
            pd.read_parquet(held, columns=["query", "title", "relevance"]).to_parquet(
                bundle / f"heldout_seed{seed}.parquet", index=False)
    src, model = Path(default_model_path()), bundle / "model"
    model.mkdir(exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.stat().st_size < 5_000_000:
            (model / f.name).write_bytes(f.read_bytes())
    # fp16 halves the transfer; the trainer casts back to fp32 before training.
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(src / "model.safetensors").items()}
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    (bundle / "manifest.json").write_text(json.dumps({"best": best, "runs": manifest}, indent=1))
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    print(f"packed {len(manifest)} runs, {len(folders)} data folders, {size / 2**20:.1f} MiB in {bundle}")


def tokenize(tokenizer, queries: list[str], titles: list[str], max_length: int) -> dict[str, np.ndarray]:
    """The score job's training input: stripped texts (as PairScorer.score strips them), its tokenisation."""
    from udfs.scoring import pair_training_input

    enc = pair_training_input(tokenizer, [q.strip() for q in queries], [t.strip() for t in titles], max_length)
    return {k: v.astype(np.int64) for k, v in enc.items()}


def train_one(folder: str, tokens: dict[str, np.ndarray], labels: np.ndarray, weights: np.ndarray, seed: int,
              args, device) -> tuple[object, dict]:
    import torch

    from training.model import adamw, build_cross_encoder, forward_logits, linear_warmup_decay, weighted_bce

    torch.manual_seed(seed)
    model = build_cross_encoder(folder).float().to(device)
    model.train()
    optim = adamw(model, args.lr, args.weight_decay)
    n = len(labels)
    steps = n // args.batch_size
    total = steps * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(optim, linear_warmup_decay(int(0.1 * total), total))
    t = {k: torch.from_numpy(v).to(device) for k, v in tokens.items()}
    y = torch.from_numpy(labels.astype(np.float32)).to(device)
    w = torch.from_numpy(weights.astype(np.float32)).to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    started = time.time()
    for _ in range(args.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for s in range(steps):
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = forward_logits(model, t["input_ids"][idx], t["token_type_ids"][idx], t["input_len"][idx])
            loss = weighted_bce(logits.float(), y[idx], w[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            losses.append(loss.detach())
    curve = torch.stack(losses).float().cpu().numpy()
    window = max(1, min(50, len(curve) // 4))  # mean of the first / last quarter, at most 50 steps
    return model, {"steps": int(total), "train_rows": int(n * args.epochs), "train_s": round(time.time() - started, 1),
                   "first_loss": float(curve[:window].mean()), "last_loss": float(curve[-window:].mean())}


def predict(model, tokens: dict[str, np.ndarray], device, batch_size: int = 512) -> np.ndarray:
    import torch

    from training.model import forward_logits

    model.eval()
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for s in range(0, len(tokens["input_len"]), batch_size):
            b = {k: torch.from_numpy(v[s:s + batch_size]).to(device) for k, v in tokens.items()}
            out.append(torch.sigmoid(forward_logits(model, b["input_ids"], b["token_type_ids"],
                                                    b["input_len"]).float()).cpu().numpy())
    return np.concatenate(out)


def fp32_model(packed: Path, folder: Path) -> str:
    """The packed fp16 weights back in fp32, so every loader sees the checkpoint the package ships."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    for f in packed.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in load_file(packed / "model.safetensors").items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return str(folder.resolve())


def train(bundle: Path, out: Path, args) -> None:
    import torch

    from training.evaluate import evaluate_frame
    from training.evaluate import predict as zero_shot_predict
    from udfs.model_loader import load_tokenizer

    deadline = time.time() + args.budget_s
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    folder = fp32_model(bundle / "model", Path(args.scratch) / "model_fp32")
    tokenizer = load_tokenizer(folder)
    manifest = json.loads((bundle / "manifest.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    rows_cache: dict[str, tuple[pd.DataFrame, dict]] = {}
    held_cache: dict[str, tuple[pd.DataFrame, dict]] = {}
    per_run_s = None
    with out.open("a") as sink:
        sink.write(json.dumps({"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                               "torch": torch.__version__, "epochs": args.epochs, "batch_size": args.batch_size,
                               "lr": args.lr, "best": manifest["best"]}) + "\n")
        for entry in manifest["runs"][args.skip:args.skip + args.limit if args.limit else None]:
            if per_run_s is not None and time.time() + 1.2 * per_run_s > deadline:
                print(f"budget: stopping before {entry['seed']}/{entry['run']}", flush=True)
                break
            tick = time.time()
            if entry["rows"] not in rows_cache:
                frame = pd.read_parquet(bundle / entry["rows"]).set_index("row")
                rows_cache[entry["rows"]] = (frame, tokenize(tokenizer, frame["query"].tolist(),
                                                             frame["title"].tolist(), args.max_length))
            if entry["heldout"] not in held_cache:
                held = pd.read_parquet(bundle / entry["heldout"])
                held_cache[entry["heldout"]] = (held, tokenize(tokenizer, held["query"].tolist(),
                                                               held["title"].tolist(), args.max_length))
                try:  # the reference line: a failure here must not cost the lease's training runs
                    cos = zero_shot_predict(folder, held["query"].tolist(), held["title"].tolist(), batch_size=256,
                                            max_length=args.max_length, device=str(device))
                    zs = evaluate_frame(held, cos, "relevance", POSITIVE, is_probability=False)
                    sink.write(json.dumps({"seed": entry["seed"], "run": "zero_shot", "model_auc": zs["auc"],
                                           "model_ndcg@10": zs["ndcg@10"], "heldout_pairs": zs["rows"]}) + "\n")
                except Exception as exc:  # noqa: BLE001
                    print(f"zero-shot evaluation failed: {exc!r}", flush=True)
            frame, tokens = rows_cache[entry["rows"]]
            held, held_tokens = held_cache[entry["heldout"]]
            w = pd.read_parquet(bundle / entry["weights"])
            pos = frame.index.get_indexer(w["row"].to_numpy())
            run_tokens = {k: v[pos] for k, v in tokens.items()}
            model, info = train_one(folder, run_tokens, frame["clicked"].to_numpy()[pos], w["weight"].to_numpy(),
                                    entry["seed"], args, device)
            ev = evaluate_frame(held, predict(model, held_tokens, device), "relevance", POSITIVE, is_probability=True)
            rec = {"seed": entry["seed"], "run": entry["run"], "model_auc": ev["auc"], "model_ndcg@10": ev["ndcg@10"],
                   "heldout_pairs": ev["rows"], **info}
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
            per_run_s = time.time() - tick
            print(json.dumps(rec), flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


def report(results: Path, md_out: Path, device_note: str) -> None:
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    head, recs = lines[0], pd.DataFrame(lines[1:])
    best = head["best"]
    spread = recs.groupby("run", sort=False)[["model_auc", "model_ndcg@10"]].agg(["mean", "std", "count"]).round(4)
    findings = {}
    piv = recs.pivot_table(index="seed", columns="run", values=["model_auc", "model_ndcg@10"])
    for col in ("model_auc", "model_ndcg@10"):
        p = piv[col]
        for run in (best, "denoise", "ipw", "none_unbiased_clicks", f"{best}_keep0.5"):
            base = "none" if not run.endswith("_keep0.5") else best
            if run in p and base in p:
                d = (p[run] - p[base]).dropna()
                if len(d):
                    findings[f"{run} - {base}, {col}"] = (f"{d.mean():+.4f} (per seed {[round(x, 4) for x in d]}); "
                                                          f"sd of none over seeds {p['none'].std():.4f}")
    md = [f"# Weighting quality: fine-tuned models ({time.strftime('%Y-%m-%d')})", "",
          f"Device: {device_note} ({head['device']}, torch {head['torch']}); {head['epochs']} epochs, batch "
          f"{head['batch_size']}, lr {head['lr']}; trained on the weighted tables of "
          "benchmarks/results/weighting_quality.md, evaluated on its held-out queries (true grades, >= 2.5 positive).",
          "", "| seed | run | model_auc | model_ndcg@10 | train_rows | steps | train_s | first_loss | last_loss |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in lines[1:]:
        md.append("| " + " | ".join(f"{r.get(c):.4f}" if isinstance(r.get(c), float) and c not in ("train_s",)
                                     else str(r.get(c, "-")) for c in
                                     ("seed", "run", "model_auc", "model_ndcg@10", "train_rows", "steps", "train_s",
                                      "first_loss", "last_loss")) + " |")
    md += ["", "Mean / std / n over seeds:", "", "```", spread.to_string(), "```", "", "Findings:", "",
           *[f"- {k}: {v}" for k, v in findings.items()]]
    md_out.write_text("\n".join(md) + "\n")
    md_out.with_suffix(".json").write_text(json.dumps({"header": head, "rows": lines[1:], "findings": findings},
                                                      indent=1) + "\n")
    print("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    a.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "weighting_quality.json"))
    a.add_argument("--bundle", default=str(ROOT / ".gpu_bundle"))
    t = sub.add_parser("train")
    t.add_argument("--bundle", default=str(ROOT / ".gpu_bundle"))
    t.add_argument("--out", required=True)
    t.add_argument("--budget-s", type=float, default=500)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--max-length", type=int, default=64)
    t.add_argument("--scratch", default="/tmp/clickweight_gpu_finetune", help="where the fp32 model is unpacked")
    t.add_argument("--skip", type=int, default=0, help="start after the first N manifest runs (a second lease)")
    t.add_argument("--limit", type=int, default=0, help="train only the first N manifest runs (0 = all)")
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--md", default=str(ROOT / "benchmarks" / "results" / "weighting_quality_model.md"))
    r.add_argument("--device", default="one lent GPU")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(Path(args.workdir), Path(args.bundle), Path(args.results))
    elif args.cmd == "train":
        train(Path(args.bundle), Path(args.out), args)
    else:
        report(Path(args.results), Path(args.md), args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
