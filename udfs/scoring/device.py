"""Which torch device a scoring task uses.

Spark assigns GPUs to tasks only on a cluster with `spark.task.resource.gpu.amount`; in local
mode it never does, so the task then picks a CUDA device by partition id itself, else the CPU.
"""
from __future__ import annotations

import os


def cuda_ordinal(address: str, cuda_device_count: int, visible_devices: str | None) -> int:
    """torch's ordinal for a Spark GPU address.

    Spark's addresses are what the worker's discovery script reported, normally physical ids
    (nvidia-smi's). With CUDA_VISIBLE_DEVICES=1,2 torch numbers the visible devices 0 and 1, so
    physical 2 is cuda:1: the ordinal is the address's place in the visible list.
    """
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    if visible:
        if address in visible:
            return visible.index(address)
        raise RuntimeError(f"Spark assigned GPU {address} but CUDA_VISIBLE_DEVICES={visible_devices} hides it; "
                           "make the worker's GPU discovery script and CUDA_VISIBLE_DEVICES agree")
    idx = int(address)
    if idx >= cuda_device_count:
        raise RuntimeError(f"Spark assigned GPU {address} but this worker sees {cuda_device_count} CUDA devices")
    return idx


def choose_device(
    requested: str, gpu_addresses: list[str] | None, partition_id: int, cuda_device_count: int,
    visible_devices: str | None = None,
) -> str:
    """Pure decision: 'cpu' or 'cuda:N'.

    requested: 'auto' | 'cpu' | 'cuda' | 'cuda:N' (config scorer.device).
    gpu_addresses: the task's Spark `gpu` resource addresses, or None when Spark assigned none.
    visible_devices: the worker's CUDA_VISIBLE_DEVICES.
    """
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda:"):
        return requested
    if gpu_addresses:
        return f"cuda:{cuda_ordinal(gpu_addresses[0], cuda_device_count, visible_devices)}"
    if cuda_device_count > 0:
        return f"cuda:{partition_id % cuda_device_count}"
    if requested == "cuda":
        raise RuntimeError("scorer.device=cuda but no CUDA device is visible to this Python worker")
    return "cpu"


def task_device(requested: str) -> str:
    """The device for the current Spark task (or the driver, outside a task)."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    addresses = None
    partition_id = 0
    if ctx is not None:
        partition_id = ctx.partitionId()
        gpu = ctx.resources().get("gpu")
        if gpu is not None and gpu.addresses:
            addresses = list(gpu.addresses)
    return choose_device(requested, addresses, partition_id, torch.cuda.device_count(),
                         os.environ.get("CUDA_VISIBLE_DEVICES"))


PRECISIONS = ("auto", "fp32", "bf16")
SCORER_PRECISIONS = (*PRECISIONS, "int8")  # int8: the scorer's linear layers dynamically quantised (CPU)


def cpu_has_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """The CPU runs bf16 matmuls natively (AVX512-BF16 or AMX): otherwise bf16 is emulated and slower."""
    try:
        with open(cpuinfo_path) as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: str) -> str:
    """'fp32', 'bf16' or 'int8' (scorer only, CPU only): auto picks bf16 on CUDA and on CPUs with
    native bf16, else fp32 (the fallback); int8 is never picked by auto (see docs/performance.md)."""
    if requested not in SCORER_PRECISIONS:
        raise ValueError(f"precision {requested!r}: choose one of {SCORER_PRECISIONS}")
    if requested == "int8" and str(device).startswith("cuda"):
        raise ValueError("precision int8 is dynamic quantisation for CPUs; on a GPU use bf16")
    if requested != "auto":
        return requested
    if str(device).startswith("cuda"):
        return "bf16"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(precision: str, device: str):
    """The autocast context for a resolved precision ('fp32' is a no-op context)."""
    import contextlib

    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)


def quantise_int8(model):
    """Dynamic int8 quantisation of every nn.Linear, per output channel (weights int8, activations
    quantised per batch). Faster than fp32 on CPUs, but scores move: docs/performance.md measures the
    rank agreement with fp32, which is why `auto` never picks it."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def _glibc():
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def release_free_heap() -> bool:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; False and nothing done elsewhere).
    A worker scoring batch after batch frees activations and token arrays of many sizes; glibc keeps
    those pages in its arenas, so without this a worker's RSS grows with the pairs it has scored
    (docs/performance.md, "Worker memory"). It costs milliseconds; a batch takes seconds."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
