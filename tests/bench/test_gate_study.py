"""benchmarks/gate_study.py: the offline gate replay's maths (no Spark, no model)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import gate_study


def _run(start_loss, epoch_losses, se, graded, selected="epoch_1"):
    names = ["start", *(f"epoch_{i}" for i in range(len(epoch_losses)))]
    value = dict(zip(names, [start_loss, *epoch_losses]))
    crit = {"value": value, "se_vs_start": dict.fromkeys(names[1:], se)}
    return {"selected": selected, "graded_auc": dict(zip(names, graded)),
            "criteria": {"impression_loss": crit, "examination_loss": crit,
                         "click_auc": {"value": dict.fromkeys(names, 0.5)}}}


def test_pick_rules():
    run = _run(0.5390, [0.5393, 0.5394], se=0.0003, graded=[0.69, 0.70, 0.71], selected="start")
    assert gate_study.pick(run, "impression_loss") == "start"       # the plain gate acts on noise
    assert gate_study.pick(run, "impression_loss+se") == "epoch_0"  # within 2 SE: the best epoch is kept
    assert gate_study.pick(run, "last") == "epoch_1" and gate_study.pick(run, "hindsight") == "epoch_1"
    harmful = _run(0.5390, [0.5500, 0.5600], se=0.0003, graded=[0.69, 0.60, 0.55])
    assert gate_study.pick(harmful, "impression_loss+se") == "start"  # clearly worse: the start stays
    summary = {s["rule"]: s for s in gate_study.summarise([run, harmful])}
    assert summary["hindsight"]["regret"] == 0.0
    assert summary["impression_loss+se"]["minus_current"] == pytest.approx((0.70 - 0.69 + 0.69 - 0.55) / 2)


def test_replay_exports_the_rules_pick_and_the_start_as_zero_shot():
    run = {**_run(0.5390, [0.5393, 0.5394], se=0.0003, graded=[0.69, 0.70, 0.71], selected="start"),
           "seed": 0, "click_model": "flip20", "config": "truth"}
    rows = [{"seed": 0, "click_model": "-", "config": "zero-shot", "auc": 0.69, "scores": "z.parquet"},
            {"seed": 0, "click_model": "flip20", "config": "truth", "auc": 0.69, "selected": "start",
             "scores": "z.parquet", "candidates": {"start": {"same_as": "zero-shot"},
                                                   "epoch_0": {"auc": 0.70, "scores": "e0.parquet"},
                                                   "epoch_1": {"auc": 0.71, "scores": "e1.parquet"}}}]
    kept = gate_study.replay(rows, [run], "current")[1]
    assert (kept["auc"], kept["scores"], kept["selected"]) == (0.69, "z.parquet", "start")
    moved = gate_study.replay(rows, [run], "impression_loss+se")[1]
    assert (moved["auc"], moved["scores"], moved["selected"]) == (0.70, "e0.parquet", "epoch 0")
    assert "candidates" not in moved and gate_study.replay(rows, [run], "last")[0] == rows[0]


def test_margins_count_each_epochs_lead_over_its_start_in_standard_errors():
    good = {**_run(0.5390, [0.5384, 0.5388], se=0.0002, graded=[0.69, 0.70, 0.71]),
            "seed": 0, "click_model": "flip20", "config": "naive"}
    bad = {**_run(0.5390, [0.5391, 0.5380], se=0.0002, graded=[0.69, 0.68, 0.70]),
           "seed": 1, "click_model": "graded", "config": "el2n"}
    stale = {**bad, "graded_auc": {"start": 0.5, "epoch_0": 0.5, "epoch_1": 0.5}}  # replaced by the later copy
    m = gate_study.margins([stale, good, bad])
    assert (m["runs"], m["candidates"], m["above_start"]) == (2, 4, 3)
    assert m["lead_se_max"] == pytest.approx(5.0) and m["lead_se_min"] == pytest.approx(-0.5)
    assert (m["lead_beyond_2se"], m["start_ahead_beyond_2se"]) == (2, 0)   # 3 SE and 5 SE
    assert [(r["config"], r["candidate"]) for r in m["worse_than_start"]] == [("el2n", "epoch_0")]
    assert "| graded | 2 | 1 |" in gate_study.margins_markdown(m)


def test_plain_rules_follow_the_trainers_gate_with_its_tolerance():
    """A plain criterion rule is the trainer's gate (training.metrics.gate_keeps): an epoch replaces the
    best so far only if better by more than GATE_TOLERANCE, so a tie keeps the earlier candidate. The
    old `min` over all candidates took an epoch ahead of the start by 5e-7, which the trainer never does."""
    from benchmarks import quality
    from training.metrics import GATE_TOLERANCE

    tiny = _run(0.5390, [0.5390 - GATE_TOLERANCE / 2, 0.5400], se=0.0003, graded=[0.69, 0.70, 0.71])
    assert gate_study.pick(tiny, "impression_loss") == "start"
    clear = _run(0.5390, [0.5390 - 2 * GATE_TOLERANCE, 0.5390 - 2.5 * GATE_TOLERANCE], se=0.0003,
                 graded=[0.69, 0.70, 0.71])
    assert gate_study.pick(clear, "impression_loss") == "epoch_0"   # epoch_1 is not ahead of it by the tolerance
    rng = np.random.default_rng(0)
    for _ in range(200):   # the trainer's rule as benchmarks.quality replays it (patience never reached)
        values = 0.5 + rng.integers(-3, 4, 4) * GATE_TOLERANCE * rng.choice([0.3, 1.0, 3.0])
        run = _run(values[0], values[1:].tolist(), se=0.0003, graded=[0.7] * 4)
        want = quality.replay_selection(dict(zip(run["graded_auc"], values)), patience=10)
        assert gate_study.pick(run, "examination_loss") == want
    # click AUC: higher is better, with the same tolerance
    higher = _run(0.5, [0.5, 0.5], se=0.0003, graded=[0.69, 0.70, 0.71])
    higher["criteria"]["click_auc"]["value"] = {"start": 0.6, "epoch_0": 0.6 + GATE_TOLERANCE / 2, "epoch_1": 0.61}
    assert gate_study.pick(higher, "click_auc") == "epoch_1"


def test_hindsight_is_a_diagnostic_never_a_replay():
    assert "hindsight" in gate_study.RULES and "hindsight" not in gate_study.REPLAY_RULES
    run = {**_run(0.5390, [0.5393, 0.5394], se=0.0003, graded=[0.69, 0.70, 0.71]),
           "seed": 0, "click_model": "flip20", "config": "truth"}
    with pytest.raises(ValueError, match="hindsight"):
        gate_study.replay([], [run], "hindsight")
    with pytest.raises(SystemExit):   # argparse: not a choice
        gate_study.main(["--results", "none.json", "--replay", "hindsight"])


def test_replay_refuses_a_candidate_without_its_own_scores():
    run = {**_run(0.5390, [0.5380, 0.5394], se=0.0003, graded=[0.69, 0.70, 0.71]),
           "seed": 0, "click_model": "flip20", "config": "truth"}
    rows = [{"seed": 0, "click_model": "-", "config": "zero-shot", "auc": 0.69, "scores": "z.parquet"},
            {"seed": 0, "click_model": "flip20", "config": "truth", "auc": 0.71, "selected": "epoch 1",
             "scores": "e1.parquet", "predictions": "/runs/e1.parquet",
             "candidates": {"start": {"same_as": "zero-shot"}, "epoch_0": {"auc": 0.70},
                            "epoch_1": {"auc": 0.71, "scores": "e1.parquet"}}}]
    with pytest.raises(RuntimeError, match="epoch_0 has no AUC or held-out scores"):
        gate_study.replay(rows, [run], "impression_loss")
    rows[1]["candidates"]["epoch_0"]["predictions"] = "/runs/e0.parquet"   # its own, not yet persisted
    moved = gate_study.replay(rows, [run], "impression_loss")[1]
    assert moved["predictions"] == "/runs/e0.parquet" and "scores" not in moved   # not epoch 1's kept scores
