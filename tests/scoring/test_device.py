"""Device choice, including with faked Spark task resources."""
from __future__ import annotations

import pytest

from udfs.scoring.device import choose_device, task_device


@pytest.mark.parametrize("requested, addresses, partition, cuda, expected", [
    ("auto", ["1"], 0, 4, "cuda:1"),         # Spark assigned GPU 1 to the task
    ("auto", None, 5, 2, "cuda:1"),          # local mode with CUDA: by partition
    ("auto", None, 5, 0, "cpu"),             # no CUDA at all
    ("cpu", ["0"], 0, 4, "cpu"),             # forced CPU wins
    ("cuda:3", None, 0, 4, "cuda:3"),
])
def test_choose_device(requested, addresses, partition, cuda, expected):
    assert choose_device(requested, addresses, partition, cuda) == expected


@pytest.mark.parametrize("address, visible, expected", [
    ("2", "1,2", "cuda:1"),   # physical GPU 2 is torch's second visible device
    ("1", "1,2", "cuda:0"),
    ("0", None, "cuda:0"),
])
def test_spark_gpu_address_maps_through_cuda_visible_devices(address, visible, expected):
    assert choose_device("auto", [address], 0, 2, visible) == expected


@pytest.mark.parametrize("address, visible", [("0", "1,2"), ("5", None)])
def test_a_spark_gpu_torch_cannot_see_is_an_error_not_another_gpu(address, visible):
    with pytest.raises(RuntimeError, match="Spark assigned GPU"):
        choose_device("auto", [address], 0, 2, visible)


def test_cuda_requested_without_cuda_is_an_error():
    with pytest.raises(RuntimeError, match="no CUDA"):
        choose_device("cuda", None, 0, 0)


class _FakeResource:
    def __init__(self, addresses):
        self.addresses = addresses


class _FakeTaskContext:
    def __init__(self, partition, resources):
        self._partition, self._resources = partition, resources

    def partitionId(self):  # noqa: N802 (Spark's name)
        return self._partition

    def resources(self):
        return self._resources


def test_task_device_reads_spark_task_gpu_resources(monkeypatch):
    import torch
    from pyspark import TaskContext

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(TaskContext, "get", classmethod(lambda cls: _FakeTaskContext(3, {"gpu": _FakeResource(["0"])})))
    assert task_device("auto") == "cuda:0"
    monkeypatch.setattr(TaskContext, "get", classmethod(lambda cls: _FakeTaskContext(3, {})))
    assert task_device("auto") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert task_device("auto") == "cpu"


_HEAP_PROBE = """
import numpy as np, psutil
from udfs.scoring.device import release_free_heap
proc = psutil.Process()
base = proc.memory_info().rss
blocks, keep = [], []
for _ in range(3000):
    blocks.append(np.ones(8000))  # 64 KB each: under glibc's mmap threshold, so from the heap
    keep.append(np.ones(16))      # small survivors between them: free() alone cannot shrink the heap
del blocks
held = proc.memory_info().rss - base
released = release_free_heap()
print(held, proc.memory_info().rss - base, released)
"""


def test_release_free_heap_returns_freed_pages_to_the_os():
    import platform
    import subprocess
    import sys
    from pathlib import Path

    from udfs.scoring.device import release_free_heap

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        assert release_free_heap() is False
        return
    # A fresh process: in a long one, earlier tests' freed pages would absorb the probe's blocks.
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    held, after, released = int(out[0]), int(out[1]), out[2]
    assert released == "True"
    assert held > 100 * 2**20    # ~180 MiB freed but still resident
    assert after < held / 4      # handed back
