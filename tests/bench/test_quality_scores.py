"""benchmarks/quality.py keeps each evaluated model's held-out scores in the repository, so a matrix
run over several sessions (whose run folders do not survive) can still be tabulated and bootstrapped."""
from __future__ import annotations

import json

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


QUERIES = np.repeat([f"q{i}" for i in range(20)], 5)


def _scored_row(tmp_path, seed: int, config: str, quality_: float, cm: str = "flip20", rng=None,
                queries: np.ndarray = QUERIES, **extra) -> dict:
    """A row whose held-out scores are written to a predictions file and whose AUC is theirs."""
    from training.metrics import auc

    rng = rng if rng is not None else np.random.default_rng([seed, len(config)])
    relevance = np.tile([3.0, 1.0, 2.67, 1.0, 1.33], len(queries) // 5)
    score = quality_ * (relevance >= 2.5) + rng.normal(size=len(queries))
    path = tmp_path / f"{seed}_{cm}_{config}_{len(list(tmp_path.iterdir()))}.parquet"
    pd.DataFrame({"query": queries, "relevance": relevance, "score": score}).to_parquet(path)
    return {"seed": seed, "click_model": "-" if config == "zero-shot" else cm, "config": config,
            "auc": auc(relevance >= 2.5, score), "predictions": str(path), **extra}


def test_summary_of_a_matrix_in_progress_where_truth_has_not_reached_every_seed(tmp_path):
    """Naive and a candidate have run on seeds 0 and 1, truth on seed 1 only: the table still builds (a
    multi-seed invocation once crashed here after its first naive run); truth is compared with naive on
    the seed it has, and the candidate gets no headroom share until truth covers its seeds."""
    rng = np.random.default_rng(0)
    quality_ = {"zero-shot": 0.2, "naive": 0.6, "truth": 1.5, "cand": 1.0}
    rows = [_scored_row(tmp_path, seed, config, quality_[config], rng=rng)
            for seed in (0, 1) for config in ("zero-shot", "naive", "truth", "cand")
            if not (config == "truth" and seed == 0)]
    a = {(r["seed"], r["config"]): r["auc"] for r in rows}
    summary = {r["config"]: r for r in quality.summarise(rows, replicates=20)}
    assert summary["naive"]["seeds"] == [0, 1] and summary["truth"]["seeds"] == [1]
    assert summary["truth"]["vs_naive"]["seeds"] == 1
    assert summary["truth"]["vs_naive"]["mean"] == pytest.approx(a[1, "truth"] - a[1, "naive"])  # seed 1's naive
    assert summary["truth"]["vs_naive"]["t_lo"] is None                      # one seed: no t interval
    assert summary["cand"]["vs_naive"]["seeds"] == 2
    assert summary["cand"]["vs_naive"]["mean"] == pytest.approx((a[0, "cand"] - a[0, "naive"] + a[1, "cand"]
                                                                  - a[1, "naive"]) / 2)
    cand = summary["cand"]["vs_naive"]
    assert cand["t_lo"] < cand["mean"] < cand["t_hi"]
    assert "headroom_share" not in summary["cand"] and "headroom_share" not in summary["truth"]


def test_against_pairs_each_configuration_with_a_reference_on_the_same_draws(tmp_path):
    """--against REF: each configuration's difference from REF (a screen's rule compares with today's
    default) on the seeds both have; its bootstrap is the same resample as the naive column's, so a
    configuration identical to REF is exactly 0 in every draw."""
    rng = np.random.default_rng(2)
    quality_ = {"zero-shot": 0.2, "naive": 0.5, "ref": 1.0, "better": 1.6}
    rows = [_scored_row(tmp_path, seed, config, quality_[config], rng=rng)
            for seed in (0, 1, 2) for config in quality_]
    twin = [{**r, "config": "ref_twin"} for r in rows if r["config"] == "ref"]
    a = {(r["seed"], r["config"]): r["auc"] for r in rows}
    summary = {r["config"]: r for r in quality.summarise([*rows, *twin], replicates=200, against="ref")}
    better = summary["better"]["vs_against"]
    assert better["config"] == "ref" and better["seeds"] == 3
    assert better["mean"] == pytest.approx(np.mean([a[s, "better"] - a[s, "ref"] for s in (0, 1, 2)]))
    assert better["lo"] < better["mean"] < better["hi"] and better["t_lo"] is not None
    assert summary["ref_twin"]["vs_against"]["lo"] == summary["ref_twin"]["vs_against"]["hi"] == 0.0
    assert "vs_against" not in summary["ref"] and "vs_against" not in summary["zero-shot"]
    naive = summary["naive"]["vs_against"]     # naive against ref: minus ref's own difference from naive
    assert naive["mean"] == pytest.approx(-summary["ref"]["vs_naive"]["mean"])
    text = quality.markdown(list(summary.values()))
    assert "− ref [95 % CI: queries; t]" in text.splitlines()[0]
    line = next(x for x in text.splitlines() if "| better |" in x)
    assert line.rstrip().endswith(f"{better['mean']:+.4f} [{better['lo']:+.4f}, {better['hi']:+.4f}]; "
                                  f"t [{better['t_lo']:+.4f}, {better['t_hi']:+.4f}] |")
    assert "− ref" not in quality.markdown(quality.summarise(rows, replicates=20))   # without --against: none


def test_the_table_shows_the_t_interval_and_the_headroom_shares_interval(tmp_path):
    rng = np.random.default_rng(1)
    quality_ = {"zero-shot": 0.2, "naive": 0.5, "truth": 1.5, "cand": 1.0}
    rows = [_scored_row(tmp_path, seed, config, quality_[config], rng=rng)
            for seed in (0, 1, 2) for config in quality_]
    summary = {r["config"]: r for r in quality.summarise(rows, replicates=200)}
    cand = summary["cand"]
    assert cand["headroom_share_ci"]["lo"] <= cand["headroom_share"] <= cand["headroom_share_ci"]["hi"]
    assert cand["vs_naive"]["t_lo"] is not None
    text = quality.markdown(quality.summarise(rows, replicates=200))
    assert "over seeds (t)" in text
    line = next(x for x in text.splitlines() if "| cand |" in x)
    lo, hi = cand["headroom_share_ci"]["lo"], cand["headroom_share_ci"]["hi"]
    assert f"{cand['headroom_share']:.0%} [{round(100 * lo)}, {round(100 * hi)}]" in line
    assert f"[{cand['vs_naive']['t_lo']:+.4f}, {cand['vs_naive']['t_hi']:+.4f}]" in line
    one = quality.markdown(quality.summarise([r for r in rows if r["seed"] == 0], replicates=20))
    cells = [c.strip() for c in next(x for x in one.splitlines() if "| cand |" in x).split("|")]
    assert cells[3] == "1" and cells[5].startswith(("+", "-0")) and cells[6] == "-"   # one seed: a dash


def test_the_summary_is_deterministic_and_pairs_seeds_jointly(tmp_path):
    rng = np.random.default_rng(2)
    rows = [_scored_row(tmp_path, seed, config, q, rng=rng)
            for seed in (0, 1) for config, q in (("zero-shot", 0.2), ("naive", 0.5), ("cand", 1.0))]
    a, b = quality.summarise(rows, replicates=50), quality.summarise(rows, replicates=50)
    assert a == b


def test_rows_of_other_sizes_are_neither_deduplicated_nor_pooled_together(tmp_path):
    """The same (seed, click model, config) run with another held-out query count is another experiment:
    the old dedup on (seed, click model, config) kept only the later one and pooled it with the rest."""
    rng = np.random.default_rng(3)
    small = {"split": "dev", "train_queries": 40, "heldout_queries": 20, "sessions": 16.0}
    large = {**small, "heldout_queries": 30}
    rows = []
    for sizes, q in ((small, QUERIES), (large, np.repeat([f"q{i}" for i in range(30)], 5))):
        for seed in (0, 1):
            for config, strength in (("zero-shot", 0.2), ("naive", 0.5), ("cand", 1.0)):
                extra = {**sizes, "sessions": None} if config == "zero-shot" else sizes
                rows.append(_scored_row(tmp_path, seed, config, strength, rng=rng, queries=q, **extra))
    summary = quality.summarise(rows, replicates=20)
    cands = [r for r in summary if r["config"] == "cand"]
    assert sorted(r["heldout_queries"] for r in cands) == [20, 30] and all(r["seeds"] == [0, 1] for r in cands)
    assert "(q40, h20, s16)" in quality.markdown(summary) and "(q40, h30, s16)" in quality.markdown(summary)
    with pytest.raises(SystemExit, match="several splits"):
        quality.summarise([*rows, {**rows[-1], "split": "test", "seed": 5}], replicates=20)


def test_a_configuration_on_other_held_out_rows_is_not_paired_with_naive(tmp_path):
    rng = np.random.default_rng(4)
    rows = [_scored_row(tmp_path, 0, c, q, rng=rng) for c, q in (("zero-shot", 0.2), ("naive", 0.5))]
    shuffled = np.array([f"q{(i + 1) % 20}" for i in range(20)]).repeat(5)
    rows.append(_scored_row(tmp_path, 0, "cand", 1.0, rng=rng, queries=shuffled))
    with pytest.raises(RuntimeError, match="query column"):
        quality.summarise(rows, replicates=5)


def test_provenance_from_the_row_its_path_and_only_a_runs_own_arguments():
    path = "/w/runs/quality/test/seed4_q2000/pbm_eta0.5_s16/eval_default_h12787.parquet"
    assert quality.path_provenance(path) == {"split": "test", "seed": 4, "train_queries": 2000,
                                             "click_model": "pbm_eta0.5", "sessions": 16.0}
    assert quality.path_provenance("benchmarks/results/quality_scores/dev/seed0_q1000/eval_zero_shot_h7325.parquet") \
        == {"split": "dev", "seed": 0, "train_queries": 1000}
    row = {"seed": 4, "click_model": "pbm_eta0.5", "config": "default", "predictions": path}
    run_args = {"split": "test", "train_queries": 2000, "heldout_queries": 2000, "sessions": 16.0,
                "tabulate_only": False}
    want = {"split": "test", "train_queries": 2000, "heldout_queries": 2000, "sessions": 16.0}
    assert quality.row_provenance(row, run_args) == want
    # a --tabulate-only call's arguments are defaults it did not use, and a replay's have no sizes
    unknown = {**want, "heldout_queries": None}
    assert quality.row_provenance(row, {**run_args, "heldout_queries": 800, "tabulate_only": True}) == unknown
    assert quality.row_provenance(row, {"split": "test", "replay": "examination_loss+se"}) == unknown
    # a run's arguments that disagree with the path are another invocation's (an --include'd row)
    assert quality.row_provenance(row, {**run_args, "train_queries": 1000}) == unknown
    # the row's own fields first; a row that contradicts its own path is refused
    assert quality.row_provenance({**row, "heldout_queries": 1500}, run_args)["heldout_queries"] == 1500
    with pytest.raises(ValueError, match="sessions"):
        quality.row_provenance({**row, "sessions": 4.0})
    with pytest.raises(ValueError, match="seed"):
        quality.row_provenance({**row, "seed": 3})
    zero = {"seed": 4, "click_model": "-", "config": "zero-shot",
            "scores": "benchmarks/results/quality_scores/test/seed4_q2000/eval_zero_shot_h12787.parquet"}
    assert quality.row_provenance(zero, run_args) == {**want, "sessions": None}


def test_a_gate_study_replay_takes_the_sizes_of_the_results_file_it_replayed(tmp_path, monkeypatch):
    """A replay written before replays carried provenance has no size arguments of its own: its rows are
    the replayed file's, so that file's run arguments give them (found by name where the recorded path
    was another checkout's); an unknown source gives none."""
    monkeypatch.setattr(quality, "ROOT", tmp_path)
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    run_args = {"split": "test", "train_queries": 2000, "heldout_queries": 2000, "sessions": 16.0,
                "tabulate_only": False}
    (results / "quality_test_test_s0.json").write_text(json.dumps({"args": run_args, "runs": []}))
    row = {"seed": 0, "click_model": "graded", "config": "default",
           "scores": "benchmarks/results/quality_scores/test/seed0_q2000/graded_s16/eval_default_h1.parquet"}
    name = "quality_test_test_s0.json"
    for recorded in (f"benchmarks/results/{name}", f"/elsewhere/benchmarks/results/{name}"):
        replay = {"results": [recorded], "tag": "test_s0", "replay": "examination_loss+se"}
        assert quality.row_provenance(row, replay)["heldout_queries"] == 2000
    missing = {"results": ["/elsewhere/missing.json"], "replay": "x"}
    assert quality.row_provenance(row, missing)["heldout_queries"] is None
    # the replayed run's sizes must still agree with the row's path
    (results / "quality_test_test_s0.json").write_text(json.dumps({"args": {**run_args, "train_queries": 1000}}))
    assert quality.row_provenance(row, {"results": [name], "replay": "x"})["heldout_queries"] is None


def test_a_tabulation_writes_no_size_arguments_it_did_not_use():
    import argparse

    args = argparse.Namespace(split="test", tag="x", tabulate_only=True, include=["a.json"], replicates=1000,
                              train_queries=2000, heldout_queries=800, sessions=16.0, seeds=[0, 1, 2, 3, 4],
                              click_models=["graded"], configs="naive", config=[], candidates=False,
                              prune_weights=False, data="d", work="w")
    written = quality.written_args(args)
    assert not {"train_queries", "heldout_queries", "sessions", "seeds"} & set(written)
    assert quality.run_args_of(written) is None   # so its rows' own fields are what a later --include reads
    ran = quality.written_args(argparse.Namespace(**{**vars(args), "tabulate_only": False}))
    assert ran["heldout_queries"] == 800 and quality.run_args_of(ran) == ran


def test_a_stored_score_file_that_is_not_the_rows_fails_loudly_and_a_stale_run_folder_is_skipped(tmp_path, monkeypatch):
    repo, work = tmp_path / "repo", tmp_path / "runs"
    monkeypatch.setattr(quality, "ROOT", repo)
    monkeypatch.setattr(quality, "SCORES", repo / "quality_scores")
    rel = "test/seed0_q10/flip20_s16/eval_naive_h3.parquet"
    first = np.array([0.9, 0.1, 0.5])            # AUC 1.0 against relevance 3, 1, 2.67
    row = {"seed": 0, "click_model": "flip20", "config": "naive", "auc": 1.0,
           "predictions": _predictions(work, rel, first)}
    kept = quality.persist_scores(row)
    # a rerun under the same path with other settings: new predictions, the stored file is stale
    rerun = {**row, "auc": 0.0, "predictions": _predictions(work, rel, -first)}
    with pytest.raises(RuntimeError, match="do not give the row's AUC"):
        quality.persist_scores(rerun)
    assert quality.load_predictions(pd.Series(kept))["score"].tolist() == pytest.approx(first.tolist())  # stored
    with pytest.raises(RuntimeError, match="stale"):
        quality.load_predictions(pd.Series({**kept, "auc": 0.5}))


def test_a_loop_round_after_one_click_model_leaves_the_next_click_models_folder_alone(tmp_path, monkeypatch):
    """run_seed once overwrote the seed folder `base` with the loop round's start model, so with several
    click models and an `X+r1` config the next click model's runs landed under the previous one's model
    folder (and persist_scores raised after a full training). No training here: the training and
    evaluation are recorded, not run."""
    from types import SimpleNamespace

    from conftest import graded_pairs

    calls = []

    def fake_train(data, clickstream, held, name, sets, reuse, *a, previous=None, **k):
        calls.append((data, name, previous))
        return {"auc": 0.7, "predictions": str(data / f"eval_{name}_h1.parquet")}

    monkeypatch.setattr(quality, "train_and_evaluate", fake_train)
    monkeypatch.setattr(quality, "evaluate", lambda model, held, out: {"auc": 0.6, "predictions": str(out)})
    monkeypatch.setattr(quality, "default_model_path", lambda: "zero-shot")
    monkeypatch.setattr(quality, "prune_weights", lambda model: calls.append(("pruned", model)) or 0)
    args = SimpleNamespace(split="dev", train_queries=40, heldout_queries=20, work=str(tmp_path), sessions=2.0,
                           click_models=["graded", "flip20"], candidates=False, prune_weights=True)
    configs = quality.named_configs([])
    names = quality.with_loop_rounds(configs, ["naive", "default", "default+r1"])
    rows = list(quality.run_seed(args, graded_pairs(200, 4, 0, query="query {}"), 0, configs, names))
    seed_dir = tmp_path / "dev" / "seed0_q40"
    assert quality.seed_folder(args, 0) == seed_dir
    trained = [(d, n, p) for d, n, p in (c for c in calls if c[0] != "pruned")]
    for cm in ("graded", "flip20"):
        data = quality.click_model_folder(seed_dir, cm, 2.0)
        assert data == seed_dir / f"{cm}_s2"
        assert [(n, p) for d, n, p in trained if d == data] == \
            [("naive", None), ("default", None), ("default+r1", data / "m_default")]
    assert ("pruned", seed_dir / "flip20_s2" / "m_default") in calls
    assert [r["split"] for r in rows] == ["dev"] * 7 and {r["heldout_queries"] for r in rows} == {20}
    assert rows[0]["sessions"] is None and rows[1]["sessions"] == 2.0


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
    # a row's own provenance, not its file's claim: a --tabulate-only file wrote default sizes, a
    # replay none; a row whose path says another train size is not this invocation's
    tabulated = quality.finished_runs([({**same, "tabulate_only": True}, runs)], args)
    assert not quality.click_model_finished(tabulated, 2, "graded", names, configs)
    own = [{**r, **same} for r in runs]
    assert quality.click_model_finished(quality.finished_runs([({}, own)], args), 2, "graded", names, configs)
    elsewhere = [{**r, "predictions": f"/w/test/seed2_q1000/{r['click_model']}_s16/eval_{r['config']}_h9.parquet"}
                 for r in runs]
    assert not quality.click_model_finished(quality.finished_runs([(same, elsewhere)], args), 2, "graded",
                                            names, configs)


def test_a_loop_round_takes_its_bases_settings_and_runs_after_it():
    configs = quality.named_configs([])
    names = quality.with_loop_rounds(configs, ["naive", "default+r1", "naive+r1", "truth"])
    assert names == ["naive", "truth", "default", "default+r1", "naive+r1"]   # a base not asked for is added
    assert configs["default+r1"] == configs["default"] and configs["naive+r1"] == configs["naive"]
    assert quality.loop_base("default+r1") == "default" and quality.loop_base("default") is None
    for bad in ("truth+r1", "nosuch+r1", "default+r1+r1"):
        with pytest.raises(SystemExit):
            quality.with_loop_rounds(quality.named_configs([]), ["naive", bad])


def test_only_the_unfinished_configurations_run_with_what_they_start_from():
    import argparse

    args = argparse.Namespace(split="test", train_queries=2000, heldout_queries=2000, sessions=16.0)
    same = {"split": "test", "train_queries": 2000, "heldout_queries": 2000, "sessions": 16.0}
    configs = {"naive": ["weighting.pair_label=clicks"], "truth": ["weighting.pair_label=clicks"], "default": [],
               "ctx": ["weighting.em_click_context=2"], "default+r1": []}
    runs = [{"seed": 0, "click_model": "graded", "config": n, "sets": configs[n], "auc": 0.7}
            for n in ("naive", "truth", "default")]
    finished = quality.finished_runs([(same, runs)], args)
    assert quality.runs_to_do(finished, 0, "graded", ["naive", "default", "ctx"], configs) == ["ctx"]
    assert quality.runs_to_do(finished, 0, "graded", ["naive", "truth", "default"], configs) == []
    # a truth oracle copies naive's score output, a loop round starts from its base's model: both come back
    unfinished_truth = quality.finished_runs([(same, runs[:1] + runs[2:])], args)
    assert quality.runs_to_do(unfinished_truth, 0, "graded", ["naive", "truth", "ctx"], configs) == \
        ["naive", "truth", "ctx"]
    assert quality.runs_to_do(finished, 0, "graded", ["naive", "default", "default+r1"], configs) == \
        ["default", "default+r1"]
    assert quality.runs_to_do(finished, 1, "graded", ["naive", "ctx"], configs) == ["naive", "ctx"]
