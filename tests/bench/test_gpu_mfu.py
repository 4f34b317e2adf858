"""The GPU benchmark's arithmetic (FLOPs per token, datasheet peaks), and its whole run on the CPU with
a tiny BERT, so the script that only a lent GPU runs at full size is known to work before it travels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.gpu_mfu import datasheet_peak, encoder_forward_flops, main


def test_encoder_flops_by_hand():
    # One layer, d = 2, f = 4, one row of 3 tokens: 3 * 2 * (4*4 + 2*2*4) matmul FLOPs + 4 * 3^2 * 2 attention.
    assert encoder_forward_flops(np.array([3]), 1, 2, 4) == 3 * 64 + 72
    # Layers multiply; rows add; padding a row to a wider width costs more than its own tokens.
    assert encoder_forward_flops(np.array([3, 5]), 6, 2, 4) == 6 * (encoder_forward_flops(np.array([3]), 1, 2, 4)
                                                                   + encoder_forward_flops(np.array([5]), 1, 2, 4))
    assert encoder_forward_flops(np.array([8, 8]), 6, 384, 1536) > encoder_forward_flops(np.array([3, 8]), 6, 384, 1536)


def test_datasheet_peaks_match_the_most_specific_name():
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert datasheet_peak("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert datasheet_peak("NVIDIA H200") == pytest.approx(989.4e12)
    assert datasheet_peak("Some Future Card") is None


def test_the_whole_benchmark_runs_on_cpu_with_a_tiny_bert(tiny_model_dir, tmp_path):
    out = tmp_path / "gpu_mfu.json"
    assert main(["--model", tiny_model_dir, "--device", "cpu", "--pairs", "300", "--batch-sizes", "16,64",
                 "--train-batch-sizes", "8", "--precisions", "fp32", "--arrow-batch", "128", "--reps", "1",
                 "--train-steps", "2", "--json", str(out), "--profile", str(tmp_path / "profile.txt")]) == 0
    assert "aten::addmm" in (tmp_path / "profile.txt").read_text()  # the profiler saw the step's matmuls
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["peak_bf16_flops"] == {"datasheet": None, "matmul": None}
    s16, s64 = result["scoring"]
    # Every micro-batch size embeds the same texts; sorting by token count keeps padding small.
    assert s16["tokens"] == s64["tokens"] > s16["texts"] > 0
    assert s16["tokens"] <= s16["padded_tokens"] <= s64["padded_tokens"] < 1.5 * s16["tokens"]
    assert s16["useful_flops"] <= s16["executed_flops"]
    assert all(r["forward_only_s"] > 0 and r["score_pairs_per_s"] > 0 for r in result["scoring"])
    (train,) = result["training"]
    assert train["batch"] == 8 and train["steps"] == 2 and train["median_step_ms"] > 0
    assert train["warm_median_step_ms"] > 0 and train["distinct_widths"] >= 1
    assert train["useful_flops_per_step"] <= train["executed_flops_per_step"]
    # bf16 autocast on CPU ranks pairs as fp32 does (the tiny model's cosines are nearly all distinct).
    assert result["agreement"]["spearman_bf16_vs_fp32"] > 0.98
