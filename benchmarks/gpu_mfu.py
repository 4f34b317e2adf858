"""The scorer and the bi-encoder trainee on a GPU: tokens/s and MFU against the card's dense bf16 peak.

No Spark (a GPU box may have no JVM): the score job's own per-worker code, `PairScorer` (tokenise,
sort by token count, pad, bf16 autocast, pinned copies), over real (query, title) pairs, and the
recipe's `optimiser_step` for the bi-encoder trainee. For each it reports:

- end to end: what a Spark worker's UDF does per Arrow batch (`score`) and the scorer's cosine alone;
- forward only: the same micro-batches already padded on the GPU, so the gap between the two is the
  host side (tokenising, padding, copies, one sync per micro-batch);
- MFU = useful FLOPs (each text at its own token count, padding not counted) / time / peak, against
  the card's datasheet dense bf16 peak and against a measured 8192^3 bf16 matmul.

    python -m benchmarks.gpu_mfu --model DIR --json benchmarks/results/gpu_mfu.json
    python -m benchmarks.gpu_mfu --device cpu --pairs 512 --batch-sizes 32 --train-batch-sizes 8  # smoke

DIR may hold bf16 weights (to travel light): they are upcast to an fp32 copy first.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.score_peers import spearman

ROOT = Path(__file__).resolve().parent.parent
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, matched on torch's device name.
DATASHEET_BF16_PEAK = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989.4e12), ("H200", 989.4e12),
                       ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12))


def encoder_forward_flops(tokens_per_row: np.ndarray, layers: int, hidden: int, intermediate: int) -> float:
    """Forward FLOPs of a BERT encoder, each row run at `tokens_per_row` tokens: per layer and token
    2 * (4 d^2 + 2 d f) for the Q, K, V, output and two feed-forward matmuls, and 4 n d for the
    attention scores and their weighted sum (n = the row's tokens). Embeddings, norms, softmax and
    the pooling are left out (under 1 % here)."""
    n = np.asarray(tokens_per_row, dtype=np.float64)
    per_token = 2.0 * (4 * hidden * hidden + 2 * hidden * intermediate)
    return float(layers * (per_token * n.sum() + 4.0 * hidden * (n * n).sum()))


def model_flops(config, tokens_per_row: np.ndarray) -> float:
    """encoder_forward_flops for a transformers BertConfig."""
    return encoder_forward_flops(tokens_per_row, config.num_hidden_layers, config.hidden_size,
                                 config.intermediate_size)


def datasheet_peak(device_name: str) -> float | None:
    for key, peak in DATASHEET_BF16_PEAK:
        if key in device_name:
            return peak
    return None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measured_matmul_peak(device: str, n: int = 8192, reps: int = 10) -> float | None:
    """bf16 n^3 matmul FLOP/s on random data (median of `reps` after 3 warm-ups); None on a CPU."""
    import torch

    if not device.startswith("cuda"):
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(reps + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1000)
    return 2 * n ** 3 / float(np.median(times))


def fp32_model_folder(src: str, work: str) -> str:
    """`src` if its weights are fp32, else an fp32 copy of it under `work` (the loader keeps dtypes)."""
    import shutil

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(Path(src) / "model.safetensors"))
    if all(not t.is_floating_point() or t.dtype.itemsize == 4 for t in tensors.values()):
        return src
    dst = Path(work) / "model_fp32"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


def _scorer(model: str, device: str, precision: str, batch_size: int, max_length: int):
    from udfs.scoring.bert import PairScorer, ScoringSettings

    return PairScorer(ScoringSettings(scorer_path=model, trainee_path=model, batch_size=batch_size,
                                      scorer_max_length=max_length, train_max_length=max_length,
                                      torch_threads=0, device=device, precision=precision), device)


def _forward_only(scorer, texts: list[str], device: str) -> tuple[float, np.ndarray, list[int]]:
    """Seconds for the encoder + pooling over pre-padded micro-batches on the device (one sync at
    the end), the texts' token counts, and the padded width each text ran at."""
    import torch

    from udfs.scoring.bert import _mean_pool

    ids = scorer.token_ids(texts)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    batches = [scorer._padded(ids, idx, lengths) for idx in scorer._chunks(lengths)]
    widths = [b["input_ids"].shape[1] for b in batches for _ in range(b["input_ids"].shape[0])]

    def run() -> None:
        with torch.inference_mode(), scorer._autocast():
            for enc in batches:
                hidden = scorer.encoder(**enc).last_hidden_state
                torch.nn.functional.normalize(_mean_pool(hidden, enc["attention_mask"]).float(), dim=-1)
        _sync(device)

    run()  # warm-up: kernels chosen, allocator grown
    tick = time.perf_counter()
    run()
    return time.perf_counter() - tick, lengths, widths


def _timed(fn, device: str, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        _sync(device)
        tick = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - tick)
    return float(np.median(times))


def scorer_row(model: str, pairs: pd.DataFrame, device: str, precision: str, micro_batch: int,
               arrow_batch: int, reps: int) -> dict:
    """Forward-only, the scorer's cosine and the UDF's `score` for one (precision, micro-batch size)."""
    q, t = pairs["query"].str.strip().tolist(), pairs["title"].str.strip().tolist()
    texts = list(dict.fromkeys(q)) + list(dict.fromkeys(t))  # what cosine() embeds: each text once
    sc = _scorer(model, device, precision, micro_batch, 64)
    fwd_s, lengths, widths = _forward_only(sc, texts, device)
    cos_s = _timed(lambda: sc.cosine(q, t), device, reps)
    score_s = _timed(lambda: [sc.score(pd.Series(q[i:i + arrow_batch]), pd.Series(t[i:i + arrow_batch]))
                              for i in range(0, len(q), arrow_batch)], device, reps)
    return {"precision": sc.precision, "micro_batch": micro_batch, "pairs": len(q), "texts": len(texts),
            "tokens": int(lengths.sum()), "padded_tokens": int(sum(widths)),
            "useful_flops": model_flops(sc.encoder.config, lengths),
            "executed_flops": model_flops(sc.encoder.config, np.asarray(widths)),
            "forward_only_s": fwd_s, "cosine_s": cos_s, "score_udf_s": score_s,
            "forward_tokens_per_s": lengths.sum() / fwd_s, "cosine_tokens_per_s": lengths.sum() / cos_s,
            "score_pairs_per_s": len(q) / score_s}


def precision_agreement(model: str, pairs: pd.DataFrame, device: str) -> dict:
    """Spearman of the bf16 cosine against fp32's on the same device."""
    q, t = pairs["query"].str.strip().tolist(), pairs["title"].str.strip().tolist()
    cos = {p: _scorer(model, device, p, 512, 64).cosine(q, t) for p in ("fp32", "bf16")}
    rho = spearman(pd.Series(cos["fp32"]), pd.Series(cos["bf16"]))
    return {"pairs": len(q), "spearman_bf16_vs_fp32": float(rho),
            "max_abs_cosine_diff": float(np.abs(cos["fp32"] - cos["bf16"]).max())}


def train_row(model: str, pairs: pd.DataFrame, device: str, precision: str, batch: int, steps: int) -> dict:
    """The recipe's bi-encoder step (forward under autocast, weighted BCE, backward, clipping, AdamW)
    at one (precision, batch size). Training FLOPs = 3 x forward (backward: two matmuls per forward one)."""
    import torch

    from benchmarks.train_step import batches
    from training.model import adamw, build_trainee, optimiser_step, trimmed_width

    data = batches(batch, steps + 3, 64, pairs=pairs, model=model, device=device)
    torch.manual_seed(0)
    trainee = build_trainee("bi_encoder", model, {"a": 10.0, "b": -5.0}).to(device).train()
    optim = adamw(trainee, 2e-5, 0.01, 1e-3)
    cfg = trainee.encoder.config
    times, warm, useful, executed, widths = [], [], 0.0, 0.0, set()
    for i, b in enumerate(data + data[3:]):
        _sync(device)
        tick = time.perf_counter()
        optimiser_step(trainee, trainee, optim, b, precision, device, max_grad_norm=1.0)
        _sync(device)
        if i < 3:  # warm-up steps: kernels chosen, allocator and optimiser state grown
            continue
        (times if i < len(data) else warm).append(time.perf_counter() - tick)
        if i >= len(data):
            continue
        q, t = b["query_len"], b["title_len"]
        useful += 3 * (model_flops(cfg, q.cpu().numpy()) + model_flops(cfg, t.cpu().numpy()))
        if b["query_ids"].is_cuda:  # BiEncoderTrainee.forward on a GPU: one call, both at the wider width
            w = trimmed_width(torch.cat([q, t]), b["query_ids"].shape[1])
            executed += 3 * model_flops(cfg, np.full(2 * len(q), w))
            widths.add(w)
        else:  # two calls, each trimmed to its longest row
            for n in (q, t):
                w = trimmed_width(n, b["query_ids"].shape[1])
                executed += 3 * model_flops(cfg, np.full(len(n), w))
                widths.add(w)
    step_s = float(np.median(times))
    return {"precision": precision, "batch": batch, "steps": len(times), "median_step_ms": 1000 * step_s,
            "step_s": step_s, "pairs_per_s": batch / step_s, "useful_flops_per_step": useful / len(times),
            "executed_flops_per_step": executed / len(times),
            # The same steps again: every sequence width already met (a GPU's attention builds a plan
            # per new width; docs/performance.md), so this is the step a long run settles at.
            "warm_median_step_ms": 1000 * float(np.median(warm)), "distinct_widths": len(widths)}


def profile_train_step(model: str, pairs: pd.DataFrame, device: str, batch: int, path: str) -> str:
    """torch.profiler over two bf16 training steps (after three warm-ups): the top operators by
    self device time and by self CPU time, also written to `path`. For a step far slower than its
    FLOPs, it says whether the time is in kernels, in launches or in host work between them."""
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.train_step import batches
    from training.model import adamw, build_trainee, optimiser_step

    data = batches(batch, 5, 64, pairs=pairs, model=model, device=device)
    trainee = build_trainee("bi_encoder", model, {"a": 10.0, "b": -5.0}).to(device).train()
    optim = adamw(trainee, 2e-5, 0.01, 1e-3)
    step = [lambda b=b: optimiser_step(trainee, trainee, optim, b, "bf16", device, max_grad_norm=1.0) for b in data]
    for s in step[:3]:
        s()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for s in step[3:]:
            s()
        _sync(device)
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    text = "\n\n".join(prof.key_averages().table(sort_by=k, row_limit=25) for k in (sort, "self_cpu_time_total"))
    Path(path).write_text(text + "\n")
    return text


def _mfu(row: dict, key_s: str, flops_key: str, peaks: dict[str, float | None]) -> None:
    rate = row[flops_key] / row[key_s]
    row[f"{key_s}_tflops"] = rate / 1e12
    for name, peak in peaks.items():
        if peak:
            row[f"{key_s}_mfu_{name}"] = rate / peak


def _table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r.get(c, float('nan')):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def plan(precisions: list[str], micro_batches: list[int], train_batches: list[int]) -> list[tuple]:
    """The runs, the most telling first (bf16 at the GPU config's sizes), so a run cut short by its
    deadline still has them."""
    score = [("score", p, b) for p in precisions for b in micro_batches]
    train = [("train", p, b) for p in precisions for b in train_batches]
    first = [score[0], train[0], ("agreement", "", 0)] if score and train else []
    return first + [x for x in score + train if x not in first]


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.bench_data import real_pairs
    from udfs.scoring import model_loader

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the packaged MiniLM)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--pairs", type=int, default=20_000)
    p.add_argument("--batch-sizes", default="512,64,2048", help="scorer micro-batches (scorer.batch_size)")
    p.add_argument("--train-batch-sizes", default="256,32,1024")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--arrow-batch", type=int, default=8192, help="rows per UDF call (Spark's Arrow batch)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=15)
    p.add_argument("--deadline-s", type=float, default=1e9, help="start no run after this many seconds")
    p.add_argument("--profile", default=None, help="first write a torch.profiler table of two bf16 training "
                   "steps at the first training batch size to this file")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gpu_mfu.json"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model = fp32_model_folder(model_loader.resolve_model_path(args.model), tempfile.mkdtemp(prefix="cw-gpu-"))
    pairs = real_pairs()
    pairs = pairs.sample(min(args.pairs, len(pairs)), random_state=0).reset_index(drop=True)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    peaks = {"datasheet": datasheet_peak(name), "matmul": measured_matmul_peak(args.device)}
    print(f"[{time.perf_counter() - t0:.0f} s] {name}: bf16 peak FLOP/s datasheet {peaks['datasheet']}, "
          f"8192^3 matmul {peaks['matmul']}", flush=True)
    if args.profile:
        print(profile_train_step(model, pairs, args.device, _ints(args.train_batch_sizes)[0], args.profile), flush=True)
    result = {"device": name, "torch": torch.__version__, "peak_bf16_flops": peaks, "agreement": None,
              "scoring": [], "training": [], "skipped": [],
              "command": "python -m benchmarks.gpu_mfu " + " ".join(sys.argv[1:] if argv is None else argv)}
    for kind, precision, size in plan(args.precisions.split(","), _ints(args.batch_sizes),
                                      _ints(args.train_batch_sizes)):
        if time.perf_counter() - t0 > args.deadline_s:
            result["skipped"].append([kind, precision, size])
            continue
        print(f"[{time.perf_counter() - t0:.0f} s] starting {kind} {precision} {size}", flush=True)
        if kind == "score":
            row = scorer_row(model, pairs, args.device, precision, size, args.arrow_batch, args.reps)
            for key in ("forward_only_s", "cosine_s"):
                _mfu(row, key, "useful_flops", peaks)
            result["scoring"].append(row)
        elif kind == "train":
            row = train_row(model, pairs, args.device, precision, size, args.train_steps)
            _mfu(row, "step_s", "useful_flops_per_step", peaks)
            result["training"].append(row)
        else:
            row = result["agreement"] = precision_agreement(model, pairs, args.device)
        print(f"[{time.perf_counter() - t0:.0f} s] {kind} {precision} {size}: "
              + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")  # after each run: a cut keeps them
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")  # with the runs the deadline skipped
    mfu = [c for c in ("mfu_datasheet", "mfu_matmul") if peaks[c.split("_")[1]]]
    print(_table(result["scoring"], ["precision", "micro_batch", "tokens", "padded_tokens", "forward_only_s",
                                     "cosine_s", "score_udf_s", "forward_tokens_per_s", "cosine_tokens_per_s",
                                     "score_pairs_per_s"] + [f"forward_only_s_{c}" for c in mfu]
                 + [f"cosine_s_{c}" for c in mfu]))
    print(_table(result["training"], ["precision", "batch", "median_step_ms", "warm_median_step_ms", "pairs_per_s",
                                      "step_s_tflops"] + [f"step_s_{c}" for c in mfu]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
