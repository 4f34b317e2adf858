"""Where a bi-encoder training step's time goes on a GPU, and what each change buys: one process,
the same real batches, variants of the recipe's step timed side by side (run on a lent GPU).

- v0_recipe: training.model.optimiser_step as the recipe calls it (whatever training.model is on the path);
- v1_fused: the same step with fused AdamW;
- v2_nosync: + the trimmed widths known on the host (no `int(lengths.max())` device syncs) and the
  loss left on the device (no per-step `float(loss)`);
- v3_concat: + queries and titles through the encoder in one call (both padded to the wider);
- v4_graphed_encoder: + the encoder's forward and backward replayed as CUDA graphs, one per width
  (torch.cuda.make_graphed_callables; widths rounded up to a multiple of 8);
- v5_graphed_step: the whole step (forward, backward, clipping, fused capturable AdamW) as one
  CUDA graph per width: what the GPU's kernels take with no launch overhead at all;
- v6_no_cudnn_attention: v3_concat with PyTorch's attention kept off the cuDNN backend (flash,
  memory-efficient or math kernels: no per-width plan builds; are its kernels faster or slower?).

The first run (benchmarks/results/gpu_step_lab_h200.json) had v1_fused unfused (a parameter group's
own "fused": None overrode the keyword) and v5 failing for the same reason; fixed since, not rerun.

For each: median step with a sync around each step, the mean over steps launched back to back (one
sync at the end), and for the profiled ones the device time of the kernels by kind (matmuls,
attention, optimiser, the rest), the number of kernels and of device-to-host syncs per step.

    python -m benchmarks.gpu_step_lab --model DIR --json lab.json --profile-dir DIR
    python -m benchmarks.gpu_step_lab --device cpu --batch 8 --steps 2 --variants v0_recipe,v3_concat  # smoke
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks.gpu_mfu import datasheet_peak, fp32_model_folder, measured_matmul_peak, model_flops

VARIANTS = ("v0_recipe", "v1_fused", "v2_nosync", "v3_concat", "v4_graphed_encoder", "v5_graphed_step",
            "v6_no_cudnn_attention")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _round(w: int, multiple: int) -> int:
    return min(64, -(-w // multiple) * multiple)


def host_batches(batch: int, n: int, pairs, model: str, device: str, multiple: int = 1) -> list[dict]:
    """benchmarks.train_step.batches, each with the trimmed widths as host ints ("_wq", "_wt")."""
    from benchmarks.train_step import batches

    cpu = batches(batch, n, 64, pairs=pairs, model=model, device="cpu")
    out = []
    for b in cpu:
        d = {k: v.to(device) for k, v in b.items()}
        d["_wq"], d["_wt"] = _round(int(b["query_len"].max()), multiple), _round(int(b["title_len"].max()), multiple)
        d["_ql"], d["_tl"] = b["query_len"].numpy(), b["title_len"].numpy()
        out.append(d)
    return out


def _trainee(model: str, device: str):
    import torch

    from training.model import build_trainee

    torch.manual_seed(0)
    return build_trainee("bi_encoder", model, {"a": 10.0, "b": -5.0}).to(device).train()


def _adamw(trainee, **kw):
    import torch

    from training.model import adamw

    base = adamw(trainee, 2e-5, 0.01, 1e-3)  # the recipe's parameter groups, without their option keys
    groups = [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in base.param_groups]
    return torch.optim.AdamW(groups, lr=2e-5, **kw)  # (a group's own "fused": None would override fused=True)


def _pool(hidden, mask):
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def _mask(lengths, width):
    import torch

    return (torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).long()


def Encode(encoder):
    """The encoder as a module of (ids, mask, types) -> last_hidden_state (what a graph can hold); a
    fresh wrapper each time, since make_graphed_callables replaces the forward of the module it gets."""
    import torch

    class _Encode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, ids, mask, types):
            return self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    return _Encode()


class _AlwaysBuildMasks:
    """Under graph capture the mask must be built, never tested with a host sync (`mask.all()`)."""

    def __enter__(self):
        from transformers import masking_utils

        self.saved = getattr(masking_utils, "_ignore_bidirectional_mask_sdpa", None)
        if self.saved is not None:
            masking_utils._ignore_bidirectional_mask_sdpa = lambda *a, **k: False

    def __exit__(self, *exc):
        from transformers import masking_utils

        if self.saved is not None:
            masking_utils._ignore_bidirectional_mask_sdpa = self.saved


def eager_step(trainee, optim, device: str, concat: bool, defer: bool, encode=None, cache: bool = True):
    """One step: the recipe's arithmetic, widths from the host, optionally one encoder call for both."""
    import torch

    from training.model import weighted_bce
    from udfs.scoring.device import autocast

    enc = encode or Encode(trainee.encoder)
    cuda = device.startswith("cuda")

    def ctx():
        if not cuda:
            return autocast("bf16", device)
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)

    def step(b):
        wq, wt = b["_wq"], b["_wt"]
        with ctx():
            if concat:
                w = max(wq, wt)
                ids = torch.cat([b["query_ids"][:, :w], b["title_ids"][:, :w]]).long()
                lens = torch.cat([b["query_len"], b["title_len"]])
                mask = _mask(lens, w)
                e = _pool(enc(ids, mask, torch.zeros_like(ids)), mask)
                eq, et = e[:len(lens) // 2], e[len(lens) // 2:]
            else:
                out = []
                for k, w in (("query", wq), ("title", wt)):
                    ids = b[f"{k}_ids"][:, :w].long()
                    mask = _mask(b[f"{k}_len"], w)
                    out.append(_pool(enc(ids, mask, torch.zeros_like(ids)), mask))
                eq, et = out
            z = trainee.a * (eq * et).sum(-1) + trainee.b
        loss = weighted_bce(z, b["label"], b["weight"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
        optim.step()
        return loss.detach() if defer else float(loss.detach())

    return step


def graphed_encoder_step(trainee, optim, device: str, data: list[dict]):
    """v3_concat with the encoder's forward+backward as CUDA graphs, one per width in `data`."""
    import torch

    widths = sorted({max(b["_wq"], b["_wt"]) for b in data})
    rows = 2 * len(data[0]["label"])
    graphs = {}
    tick = time.perf_counter()
    with _AlwaysBuildMasks(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        for w in widths:
            ids = torch.ones(rows, w, dtype=torch.long, device=device)
            mask = torch.ones(rows, w, dtype=torch.long, device=device)
            graphs[w] = torch.cuda.make_graphed_callables(Encode(trainee.encoder), (ids, mask, torch.zeros_like(ids)))
    capture_s = time.perf_counter() - tick

    def encode(ids, mask, types):
        return graphs[ids.shape[1]](ids, mask, types)

    return eager_step(trainee, optim, device, concat=True, defer=True, encode=encode, cache=False), capture_s, widths


def graphed_whole_step(trainee, optim, device: str, data: list[dict]):
    """The whole step captured once per width (static inputs, capturable fused AdamW)."""
    widths = sorted({max(b["_wq"], b["_wt"]) for b in data})
    step = eager_step(trainee, optim, device, concat=True, defer=True, cache=False)
    graphs = {}
    tick = time.perf_counter()
    with _AlwaysBuildMasks():
        for w in widths:
            graphs[w] = _capture(step, optim, data[0], w)
    capture_s = time.perf_counter() - tick

    def replay(b):
        g, static, loss = graphs[max(b["_wq"], b["_wt"])]
        for k, v in static.items():
            if hasattr(v, "copy_"):
                v.copy_(b[k])
        g.replay()
        return loss

    return replay, capture_s, widths


def _capture(step, optim, sample: dict, w: int):
    """One width's graph: three warm-up steps on a side stream, then the capture."""
    import torch

    static = {k: v.clone() for k, v in sample.items() if hasattr(v, "clone") and not isinstance(v, np.ndarray)}
    for k in ("query_len", "title_len"):
        static[k].fill_(w)
    static["_wq"] = static["_wt"] = w
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step(static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    optim.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        loss = step(static)
    return g, static, loss


def time_steps(step, data: list[dict], device: str, warm: int = 3) -> dict:
    """Median synced step, and the mean of the same steps launched back to back (one sync)."""
    for b in data[:warm]:
        step(b)
    _sync(device)
    times = []
    for b in data[warm:]:
        _sync(device)
        tick = time.perf_counter()
        step(b)
        _sync(device)
        times.append(time.perf_counter() - tick)
    tick = time.perf_counter()
    losses = [step(b) for b in data[warm:]]
    _sync(device)
    pipelined = (time.perf_counter() - tick) / len(losses)
    last = losses[-1]
    return {"median_step_ms": 1000 * float(np.median(times)), "min_step_ms": 1000 * float(np.min(times)),
            "pipelined_step_ms": 1000 * pipelined, "last_loss": float(last)}


def flops(cfg, data: list[dict], warm: int, concat: bool) -> tuple[float, float]:
    """Useful (each text at its own length) and executed (padded as the variant pads) training FLOPs per step."""
    useful = executed = 0.0
    for b in data[warm:]:
        useful += 3 * (model_flops(cfg, b["_ql"]) + model_flops(cfg, b["_tl"]))
        if concat:
            w = _round(max(b["_wq"], b["_wt"]), 8)
            executed += 3 * model_flops(cfg, np.full(2 * len(b["_ql"]), w))
        else:
            executed += 3 * (model_flops(cfg, np.full(len(b["_ql"]), b["_wq"]))
                             + model_flops(cfg, np.full(len(b["_tl"]), b["_wt"])))
    k = len(data) - warm
    return useful / k, executed / k


KINDS = (("matmul", ("gemm", "cutlass", "xmma", "nvjet", "wgmma", "splitk")),
         ("attention", ("fmha", "attention", "flash", "efficient")),
         ("optimizer", ("adam", "multi_tensor", "foreach")),)


def profile(step, data: list[dict], device: str, path: Path, steps: int = 2) -> dict:
    """torch.profiler over `steps` steps: tables to `path`, and a per-step summary."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    for b in data[:3]:
        step(b)
    _sync(device)
    with tprofile(activities=acts) as prof:
        for b in data[3:3 + steps]:
            step(b)
        _sync(device)
    ka = prof.key_averages()
    sort = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    text = "\n\n".join(ka.table(sort_by=k, row_limit=30) for k in (sort, "self_cpu_time_total"))
    path.write_text(text + "\n")
    kern_us, kern_n, by_kind, host = 0.0, 0, {k: 0.0 for k, _ in KINDS} | {"other": 0.0}, {}
    top = []
    for e in ka:
        dev = str(getattr(e, "device_type", "")).upper()
        t = float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0) or 0.0)
        if "CUDA" in dev and t > 0:
            kern_us += t
            kern_n += e.count
            name = e.key.lower()
            kind = next((k for k, keys in KINDS if any(s in name for s in keys)), "other")
            by_kind[kind] += t
            top.append((t, e.key[:90], e.count))
        if e.key.startswith("cuda") or e.key in ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero"):
            host[e.key] = {"count": e.count, "cpu_us": float(e.self_cpu_time_total)}
    top.sort(reverse=True)
    cpu_ops = sum(e.count for e in ka if e.key.startswith("aten::"))
    return {"kernel_ms_per_step": kern_us / 1000 / steps, "kernels_per_step": kern_n / steps,
            "kernel_ms_by_kind_per_step": {k: v / 1000 / steps for k, v in by_kind.items()},
            "aten_ops_per_step": cpu_ops / steps, "runtime_calls": host,
            "top_kernels": [{"us_per_step": t / steps, "name": n, "calls_per_step": c / steps} for t, n, c in top[:12]]}


def scorer_breakdown(model: str, pairs, device: str, micro_batch: int = 512) -> dict:
    """Where the scorer's `cosine` goes: tokenising the distinct texts, padding and copying the
    micro-batches, the encoder with a sync per micro-batch (as it runs), and without one."""
    import torch

    from benchmarks.gpu_mfu import _scorer
    from udfs.scoring.bert import _mean_pool

    q, t = pairs["query"].str.strip().tolist(), pairs["title"].str.strip().tolist()
    sc = _scorer(model, device, "bf16", micro_batch, 64)
    sc.cosine(q, t)  # warm-up

    def timed(fn):
        _sync(device)
        tick = time.perf_counter()
        out = fn()
        _sync(device)
        return time.perf_counter() - tick, out

    res = {"pairs": len(q), "micro_batch": micro_batch}
    res["cosine_s"], _ = timed(lambda: sc.cosine(q, t))
    res["distinct_tokens_s"], (ids_q, _, ids_t, _) = timed(lambda: sc.distinct_tokens(q, t))
    res["embed_ids_s"], _ = timed(lambda: (sc.embed_ids(ids_q), sc.embed_ids(ids_t)))

    def pad_all():
        for ids in (ids_q, ids_t):
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            for idx in sc._chunks(lengths):
                sc._padded(ids, idx, lengths)

    res["pad_and_copy_s"], _ = timed(pad_all)

    def embed_nosync(ids):
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = torch.empty((len(ids), sc.encoder.config.hidden_size), dtype=torch.float32, device=device)
        with torch.inference_mode(), sc._autocast():
            for idx in sc._chunks(lengths):
                enc = sc._padded(ids, idx, lengths)
                hidden = sc.encoder(**enc).last_hidden_state
                emb = torch.nn.functional.normalize(_mean_pool(hidden, enc["attention_mask"]).float(), dim=-1)
                out[torch.from_numpy(idx).to(device, non_blocking=True)] = emb[:len(idx)]
        return out.cpu().numpy()

    res["embed_one_sync_s"], _ = timed(lambda: (embed_nosync(ids_q), embed_nosync(ids_t)))
    return res


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.bench_data import real_pairs
    from udfs.scoring import model_loader

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", default="256", help="batch sizes, comma-separated")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--profile-variants", default="v0_recipe,v3_concat,v5_graphed_step,v6_no_cudnn_attention")
    p.add_argument("--profile-dir", default=None)
    p.add_argument("--scorer", action="store_true", help="also break the scorer's cosine down")
    p.add_argument("--json", default="gpu_step_lab.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model = fp32_model_folder(model_loader.resolve_model_path(args.model), tempfile.mkdtemp(prefix="cw-lab-"))
    pairs = real_pairs()
    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(args.device) if cuda else "cpu"
    res = {"device": name, "torch": torch.__version__, "peak": {"datasheet": datasheet_peak(name),
           "matmul": measured_matmul_peak(args.device)}, "runs": [], "errors": []}
    print(f"[{time.perf_counter() - t0:.0f} s] {name} {res['peak']}", flush=True)
    if args.scorer:
        try:
            res["scorer"] = scorer_breakdown(model, pairs.sample(min(20_000, len(pairs)), random_state=0)
                                             .reset_index(drop=True), args.device)
            print(f"[{time.perf_counter() - t0:.0f} s] scorer {res['scorer']}", flush=True)
        except Exception as exc:
            res["errors"].append({"variant": "scorer", "error": repr(exc), "trace": traceback.format_exc()[-3000:]})
    warm = 3
    for bs in [int(x) for x in args.batch.split(",")]:
        data = host_batches(bs, args.steps + warm, pairs, model, args.device, multiple=8)
        raw = host_batches(bs, args.steps + warm, pairs, model, args.device, multiple=1)
        for v in args.variants.split(","):
            try:
                from training.model import optimiser_step

                tr = _trainee(model, args.device)
                fused = {"fused": True} if cuda else {}
                extra = {}
                use = data
                if v == "v0_recipe":
                    from training.model import adamw

                    opt = adamw(tr, 2e-5, 0.01, 1e-3)
                    step = lambda b, tr=tr, opt=opt: optimiser_step(tr, tr, opt, b, "bf16", args.device, 1.0)  # noqa: E731
                    use = raw
                elif v == "v1_fused":
                    opt = _adamw(tr, **fused)
                    step = lambda b, tr=tr, opt=opt: optimiser_step(tr, tr, opt, b, "bf16", args.device, 1.0)  # noqa: E731
                    use = raw
                elif v == "v2_nosync":
                    step = eager_step(tr, _adamw(tr, **fused), args.device, concat=False, defer=True)
                    use = raw
                elif v == "v3_concat":
                    step = eager_step(tr, _adamw(tr, **fused), args.device, concat=True, defer=True)
                elif v == "v4_graphed_encoder":
                    step, extra["capture_s"], extra["widths"] = graphed_encoder_step(
                        tr, _adamw(tr, **fused), args.device, data)
                elif v == "v6_no_cudnn_attention":
                    from torch.nn.attention import SDPBackend, sdpa_kernel

                    inner = eager_step(tr, _adamw(tr, **fused), args.device, concat=True, defer=True)
                    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

                    def step(b, inner=inner, backends=backends):
                        with sdpa_kernel(backends):
                            return inner(b)
                elif v == "v5_graphed_step":
                    step, extra["capture_s"], extra["widths"] = graphed_whole_step(
                        tr, _adamw(tr, fused=True, capturable=True), args.device, data)
                else:
                    raise ValueError(v)
                row = {"variant": v, "batch": bs, **extra, **time_steps(step, use, args.device, warm)}
                import training.model as tm

                # training.model with trimmed_width runs the recipe's step as one encoder call on a GPU
                product_one_call = cuda and hasattr(tm, "trimmed_width")
                concat = v != "v2_nosync" if product_one_call else v not in ("v0_recipe", "v1_fused", "v2_nosync")
                useful, executed = flops(tr.encoder.config, use, warm, concat)
                row |= {"useful_tflop_per_step": useful / 1e12, "executed_tflop_per_step": executed / 1e12}
                for key in ("median_step_ms", "pipelined_step_ms"):
                    rate = useful / (row[key] / 1000)
                    row[f"{key}_tflops"] = rate / 1e12
                    for pk, peak in res["peak"].items():
                        if peak:
                            row[f"{key}_mfu_{pk}"] = rate / peak
                row["pairs_per_s"] = bs / (row["median_step_ms"] / 1000)
                if args.profile_dir and v in args.profile_variants.split(",") and bs == 256:
                    Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
                    row["profile"] = profile(step, use, args.device, Path(args.profile_dir) / f"profile_{v}.txt")
                res["runs"].append(row)
                print(f"[{time.perf_counter() - t0:.0f} s] " + json.dumps(
                    {k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items() if k != "profile"}),
                    flush=True)
                if "profile" in row:
                    print(json.dumps(row["profile"], indent=1), flush=True)
                del tr, step
                if cuda:
                    torch.cuda.empty_cache()
            except Exception as exc:  # a variant that fails must not cost the others
                res["errors"].append({"variant": v, "batch": bs, "error": repr(exc),
                                      "trace": traceback.format_exc()[-3000:]})
                print(f"[{time.perf_counter() - t0:.0f} s] {v} {bs} FAILED: {exc!r}", flush=True)
            Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    cols = ["variant", "batch", "median_step_ms", "pipelined_step_ms", "pairs_per_s", "median_step_ms_tflops",
            "median_step_ms_mfu_datasheet", "pipelined_step_ms_mfu_datasheet"]
    print("| " + " | ".join(cols) + " |")
    for r in res["runs"]:
        cells = (f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols)
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
