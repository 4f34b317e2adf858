"""benchmarks/quality.py keeps each evaluated model's held-out scores in the repository, so a matrix
run over several sessions (whose run folders do not survive) can still be tabulated and bootstrapped."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import quality


def _predictions(work, rel: str, scores: np.ndarray) -> str:
    path = work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"query": ["a", "a", "b"], "title": ["x", "y", "z"], "relevance": [3.0, 1.0, 2.67],
                  "score": scores}).to_parquet(path)
    return str(path)


def test_scores_kept_in_the_repository_load_back_after_the_run_folder_is_gone(tmp_path, monkeypatch):
    repo, work = tmp_path / "repo", tmp_path / "runs"
    monkeypatch.setattr(quality, "ROOT", repo)
    monkeypatch.setattr(quality, "SCORES", repo / "benchmarks" / "results" / "quality_scores")
    score = np.array([0.1234567891, 0.5, -2.0])
    row = {"seed": 3, "config": "naive",
           "predictions": _predictions(work, "dev/seed3_q1000/pbm_eta2_s16/eval_naive_h3.parquet", score)}
    zero = {"seed": 3, "config": "zero-shot",
            "predictions": _predictions(work, "dev/seed3_q1000/eval_zero_shot_h3.parquet", score[::-1])}
    kept, kept_zero = quality.persist_scores(row), quality.persist_scores(zero)
    assert kept["scores"] == "benchmarks/results/quality_scores/dev/seed3_q1000/pbm_eta2_s16/eval_naive_h3.parquet"
    assert (repo / "benchmarks/results/quality_scores/dev/seed3_q1000/heldout_h3.parquet").exists()
    for p in work.rglob("*.parquet"):
        p.unlink()
    back = quality.load_predictions(pd.Series(kept))
    assert back["query"].tolist() == ["a", "a", "b"] and back["relevance"].tolist() == [3.0, 1.0, 2.67]
    np.testing.assert_allclose(back["score"], score, rtol=1e-7)  # float32 in the repository
    np.testing.assert_allclose(quality.load_predictions(pd.Series(kept_zero))["score"], score[::-1], rtol=1e-7)
    with pytest.raises(FileNotFoundError, match="no held-out scores"):
        quality.load_predictions(pd.Series({**row, "scores": "benchmarks/results/quality_scores/none.parquet"}))


def test_a_second_model_on_other_held_out_rows_is_refused(tmp_path, monkeypatch):
    repo, work = tmp_path / "repo", tmp_path / "runs"
    monkeypatch.setattr(quality, "ROOT", repo)
    monkeypatch.setattr(quality, "SCORES", repo / "quality_scores")
    quality.persist_scores({"predictions": _predictions(work, "test/seed0_q10/flip20_s16/eval_a_h3.parquet",
                                                        np.zeros(3))})
    other = _predictions(work, "test/seed0_q10/flip20_s16/eval_b_h3.parquet", np.zeros(3))
    pd.read_parquet(other).assign(query=["a", "b", "b"]).to_parquet(other)
    with pytest.raises(RuntimeError, match="held-out rows differ"):
        quality.persist_scores({"predictions": other})


def test_summary_of_a_matrix_in_progress_where_truth_has_not_reached_every_seed(tmp_path):
    """Naive and a candidate have run on seeds 0 and 1, truth on seed 1 only: the table still builds (a
    multi-seed invocation once crashed here after its first naive run); truth is compared with naive on
    the seed it has, and the candidate gets no headroom share until truth covers its seeds."""
    rng = np.random.default_rng(0)
    auc = {"zero-shot": 0.55, "naive": 0.60, "truth": 0.65, "cand": 0.62}
    rows = []
    for seed in (0, 1):
        for config in ("zero-shot", "naive", "truth", "cand"):
            if config == "truth" and seed == 0:
                continue
            path = tmp_path / f"{seed}_{config}.parquet"
            pd.DataFrame({"query": np.repeat([f"q{i}" for i in range(20)], 5),
                          "relevance": rng.choice([1.0, 3.0], 100), "score": rng.normal(size=100)}).to_parquet(path)
            rows.append({"seed": seed, "click_model": "-" if config == "zero-shot" else "flip20", "config": config,
                         "auc": auc[config] + (0.01 * seed if config == "naive" else 0.0), "predictions": str(path)})
    summary = {r["config"]: r for r in quality.summarise(rows, replicates=20)}
    assert summary["naive"]["seeds"] == [0, 1] and summary["truth"]["seeds"] == [1]
    assert summary["truth"]["vs_naive"]["seeds"] == 1
    assert summary["truth"]["vs_naive"]["mean"] == pytest.approx(0.65 - 0.61)  # seed 1's naive, not the mean
    assert summary["cand"]["vs_naive"]["seeds"] == 2
    assert summary["cand"]["vs_naive"]["mean"] == pytest.approx((0.62 - 0.60 + 0.62 - 0.61) / 2)
    assert "headroom_share" not in summary["cand"] and "headroom_share" not in summary["truth"]


def test_pruning_a_run_deletes_its_weights_and_keeps_what_reuse_and_the_gate_study_read(tmp_path):
    model = tmp_path / "m_naive"
    keep = ["train_summary.json", "config.json", "candidates/epoch_0/heldout_rank0.npz",
            "candidates/start/clickweight_model.json"]
    drop = ["model.safetensors", "checkpoints/checkpoint.pt", "checkpoints/best.pt",
            "candidates/epoch_0/model.safetensors", "candidates/start/model.safetensors"]
    for rel in keep + drop:
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(b"x" * 10)
    assert quality.prune_weights(model) == 10 * len(drop)
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file()) == sorted(keep)
    assert quality.prune_weights(model) == 0   # a second pass (a reused run) finds nothing to free


def _finished_clean_run(folder, log_bytes: bytes, held) -> None:
    (folder / "clean_log" / "clickstream").mkdir(parents=True)
    (folder / "clean_log" / "clickstream" / "part-0.parquet").write_bytes(log_bytes)
    for rel in ["w_clean/_summary.json", "m_clean/train_summary.json", "m_clean/candidates/epoch_0/heldout_rank0.npz"]:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(folder.name)
    stem = quality.eval_stem(folder, "clean", held).name
    for suffix in (".json", ".parquet"):
        (folder / (stem + suffix)).write_text(folder.name)
        (folder / (quality.eval_stem(folder, "clean__epoch_0", held).name + suffix)).write_text(folder.name)


def test_a_clean_run_whose_log_is_byte_identical_to_a_finished_ones_is_copied_not_rerun(tmp_path):
    held = tmp_path / "heldout.parquet"
    pd.DataFrame({"query": ["q"], "relevance": [3.0]}).to_parquet(held)
    _finished_clean_run(tmp_path / "pbm_eta0.5_s16", b"the same log", held)
    _finished_clean_run(tmp_path / "graded_s16", b"another log", held)
    target = tmp_path / "pbm_eta1_s16"
    (target / "clean_log" / "clickstream").mkdir(parents=True)
    log = target / "clean_log" / "clickstream" / "part-0.parquet"
    log.write_bytes(b"the same log")
    (target / "m_clean").mkdir()  # a cut-off run's partial folder is replaced
    assert quality.reuse_identical_run(target, "clean", log, held) == tmp_path / "pbm_eta0.5_s16"
    assert (target / "m_clean" / "train_summary.json").read_text() == "pbm_eta0.5_s16"
    assert (target / "m_clean" / "candidates" / "epoch_0" / "heldout_rank0.npz").exists()
    assert (target / (quality.eval_stem(target, "clean", held).name + ".parquet")).read_text() == "pbm_eta0.5_s16"
    assert (target / (quality.eval_stem(target, "clean__epoch_0", held).name + ".json")).exists()
    assert quality.reuse_identical_run(target, "clean", log, held) is None  # finished: nothing to do

    other = tmp_path / "flip10_s16"
    (other / "clean_log" / "clickstream").mkdir(parents=True)
    (other / "clean_log" / "clickstream" / "part-0.parquet").write_bytes(b"a log no finished run had")
    assert quality.reuse_identical_run(other, "clean", other / "clean_log" / "clickstream" / "part-0.parquet",
                                       held) is None
    assert not (other / "m_clean").exists()


def test_the_gate_replay_follows_the_trainers_rule():
    # an epoch is kept only if it beats the best so far by more than 1e-6; ties keep the earlier
    assert quality.replay_selection({"start": 0.5, "epoch_0": 0.49, "epoch_1": 0.495}, patience=1) == "epoch_0"
    assert quality.replay_selection({"start": 0.5, "epoch_0": 0.5 - 5e-7, "epoch_1": 0.5001}, 1) == "start"
    assert quality.replay_selection({"start": 0.5, "epoch_0": 0.51, "epoch_1": 0.49}, 1) == "epoch_1"
    assert quality.replay_selection({"start": 0.5, "epoch_1": 0.4, "epoch_0": 0.45}, 1) == "epoch_1"  # order by epoch
    with pytest.raises(ValueError):  # the trainer would have stopped before epoch_2: no such candidate
        quality.replay_selection({"start": 0.5, "epoch_0": 0.6, "epoch_1": 0.6, "epoch_2": 0.1}, 1)
    # train.select_margin_se: a start that leads by less than margin x SE is not kept; by more, it is;
    # once an epoch is the best, later epochs must beat it outright
    tie = {"start": 0.5, "epoch_0": 0.5003, "epoch_1": 0.5002}
    se = {"epoch_0": 0.0002, "epoch_1": 0.0002}
    assert quality.replay_selection(tie, 1) == "start"
    assert quality.replay_selection(tie, 1, margin_se=2.0, se_vs_start=se) == "epoch_1"  # e0 in, e1 beats it
    assert quality.replay_selection(tie, 1, margin_se=0.5, se_vs_start=se) == "start"
    assert quality.replay_selection(tie, 1, margin_se=1.0, se_vs_start=se) == "epoch_1"  # only epoch_1 within 1 SE
    assert quality.replay_selection({**tie, "epoch_1": 0.5004}, 1, 2.0, se) == "epoch_0"


def test_the_training_digest_reads_the_columns_not_the_file_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(folder, uuid, label):
        (folder / "_pairs").mkdir(parents=True)
        pq.write_table(pa.table({"label": label, "clicks": [1, 2]}), folder / "_pairs" / f"part-00000-{uuid}.parquet")
        return folder

    a = table(tmp_path / "a", "1111", [0.1, 0.2])
    b = table(tmp_path / "b", "2222", [0.1, 0.2])
    c = table(tmp_path / "c", "3333", [0.1, 0.3])
    cols = ("label",)
    assert quality.table_digest(a, cols) == quality.table_digest(b, cols) != quality.table_digest(c, cols)
    assert quality.table_digest(a, ("label", "clicks")) == quality.table_digest(b, ("label", "clicks"))


def test_a_click_model_is_skipped_only_when_every_config_finished_with_the_same_settings_and_sizes():
    import argparse

    args = argparse.Namespace(split="test", train_queries=2000, heldout_queries=2000, sessions=16.0)
    same = {"split": "test", "train_queries": 2000, "heldout_queries": 2000, "sessions": 16.0}
    configs = {"naive": ["weighting.pair_label=clicks"], "default": []}
    runs = [{"seed": 2, "click_model": "-", "config": "zero-shot", "auc": 0.68},
            {"seed": 2, "click_model": "graded", "config": "naive", "sets": configs["naive"], "auc": 0.70},
            {"seed": 2, "click_model": "graded", "config": "default", "sets": [], "auc": 0.71},
            {"seed": 2, "click_model": "flip10", "config": "naive", "sets": configs["naive"], "auc": 0.69},
            {"seed": 2, "click_model": "flip20", "config": "naive", "sets": ["other"], "auc": 0.69},
            {"seed": 2, "click_model": "flip20", "config": "default", "sets": [], "auc": 0.69}]
    finished = quality.finished_runs([(same, runs)], args)
    names = ["naive", "default"]
    assert quality.click_model_finished(finished, 2, "graded", names, configs)
    assert not quality.click_model_finished(finished, 2, "flip10", names, configs)   # default missing
    assert not quality.click_model_finished(finished, 2, "flip20", names, configs)   # naive's settings differ
    assert not quality.click_model_finished(finished, 3, "graded", names, configs)   # another seed
    smaller = quality.finished_runs([({**same, "sessions": 4.0}, runs)], args)      # another log size
    assert not quality.click_model_finished(smaller, 2, "graded", names, configs)


def test_a_loop_round_takes_its_bases_settings_and_runs_after_it():
    configs = quality.named_configs([])
    names = quality.with_loop_rounds(configs, ["naive", "default+r1", "naive+r1", "truth"])
    assert names == ["naive", "truth", "default", "default+r1", "naive+r1"]   # a base not asked for is added
    assert configs["default+r1"] == configs["default"] and configs["naive+r1"] == configs["naive"]
    assert quality.loop_base("default+r1") == "default" and quality.loop_base("default") is None
    for bad in ("truth+r1", "nosuch+r1", "default+r1+r1"):
        with pytest.raises(SystemExit):
            quality.with_loop_rounds(quality.named_configs([]), ["naive", bad])
