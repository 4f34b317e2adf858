"""The quality protocol's parts (benchmarks/protocol.py) and the click models it runs: the fixed
dev/test split, paired bootstrap differences, the PBM and flip-noise simulators, the clean oracle."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import graded_pairs

from benchmarks import protocol
from training.metrics import auc
from udfs.clickstream.simulate import SimulatorSettings, click_probability, simulate


def _pairs(n_queries: int = 60, per_query: int = 8, seed: int = 0) -> pd.DataFrame:
    return graded_pairs(n_queries, per_query, seed, query="query {}")


def test_query_split_is_a_fixed_function_of_the_text():
    assert protocol.query_split("Cordless Drill") == protocol.query_split("  cordless   drill ")
    sides = [protocol.query_split(f"q{i}") for i in range(2000)]
    assert 0.45 < sides.count("dev") / len(sides) < 0.55


def test_query_split_pins():
    """Pinned: a change to the hash would silently move queries between dev and test."""
    assert {q: protocol.query_split(q) for q in ("angle bracket", "deck paint", "led bulb")} == \
        {"angle bracket": "dev", "deck paint": "dev", "led bulb": "test"}


def test_sample_split_never_crosses_the_split_and_is_disjoint():
    pairs = _pairs(200)
    for seed in (0, 1):
        train, held = protocol.sample_split(pairs, "dev", 40, 20, seed)
        assert set(train["query"]).isdisjoint(held["query"])
        assert {protocol.query_split(q) for q in pd.concat([train, held])["query"]} == {"dev"}
        assert train["query"].nunique() == 40 and held["query"].nunique() == 20
    a, _ = protocol.sample_split(pairs, "dev", 40, 20, 0)
    b, _ = protocol.sample_split(pairs, "dev", 40, 20, 1)
    assert set(a["query"]) != set(b["query"])
    with pytest.raises(ValueError, match="queries"):
        protocol.sample_split(pairs, "test", 500, 20, 0)


def test_paired_bootstrap_of_identical_models_is_exactly_zero_and_a_better_model_is_above():
    rng = np.random.default_rng(0)
    queries = np.repeat([f"q{i}" for i in range(80)], 6)
    positive = rng.random(len(queries)) < 0.4
    base = positive + rng.normal(0, 1.5, len(queries))
    better = positive + rng.normal(0, 0.5, len(queries))
    draws = protocol.bootstrap_auc_differences(queries, positive, {"naive": base, "same": base.copy(),
                                                                   "better": better}, "naive", 200, seed=1)
    assert np.all(draws["same"] == 0.0)
    point = auc(positive, better) - auc(positive, base)
    combined = protocol.combine_seeds([point], [draws["better"]])
    assert combined["lo"] > 0 and combined["lo"] < combined["mean"] < combined["hi"]
    # two seeds: the interval of the mean is narrower than one seed's
    two = protocol.combine_seeds([point, point], [draws["better"], draws["better"][::-1]])
    assert two["hi"] - two["lo"] < combined["hi"] - combined["lo"]


def test_headroom_share():
    assert protocol.headroom_share([0.72], [0.70], [0.75]) == pytest.approx(0.4)
    assert np.isnan(protocol.headroom_share([0.72], [0.70], [0.69]))


def test_pbm_click_probability_is_the_literature_formula():
    s = SimulatorSettings(click_model="pbm", pbm_epsilon=0.1)
    got = click_probability(np.array([1.0, 2.0, 3.0]), s)
    assert got.tolist() == pytest.approx([0.1, 0.1 + 0.9 * 1 / 3, 1.0])


def test_flip_noise_removes_clicks_as_well_as_adding_them_and_keeps_no_carts():
    pairs = _pairs(150)
    base = SimulatorSettings(noise_share=0.0, sessions_per_query=8)
    clean_log, _ = simulate(pairs, base, seed=5)
    flipped, truth = simulate(pairs, SimulatorSettings(noise_share=0.0, sessions_per_query=8, flip_rate=0.3), seed=5)
    # flip_rate draws come last: everything before them is the same log
    assert (clean_log["position"].to_numpy() == flipped["position"].to_numpy()).all()
    was, now = clean_log["clicked"].to_numpy(), flipped["clicked"].to_numpy()
    assert ((was == 1) & (now == 0)).mean() > 0.015  # clicks removed
    assert ((was == 0) & (now == 1)).mean() > 0.03   # clicks added
    assert (was != now).mean() == pytest.approx(0.3 * 0.5, abs=0.03)  # a flip changes the click half the time
    assert not flipped.loc[truth["is_noise_click"].to_numpy(), "added_to_cart"].any()
    # flip_rate = 0 reproduces the log draw for draw
    again, _ = simulate(pairs, SimulatorSettings(noise_share=0.0, sessions_per_query=8, flip_rate=0.0), seed=5)
    pd.testing.assert_frame_equal(again, clean_log)


def test_clean_settings_drop_noise_and_position_bias_only():
    s = protocol.CLICK_MODELS["flip20"]
    c = s.clean()
    assert (c.flip_rate, c.noise_share, c.position_bias) == (0.0, 0.0, False)
    assert (c.click_model, c.eta, c.cart_high) == (s.click_model, s.eta, s.cart_high)
    log, truth = simulate(_pairs(100), c, seed=2)
    assert truth["examined"].all() and not truth["is_noise_click"].any()


@pytest.mark.parametrize("name", list(protocol.CLICK_MODELS))
def test_every_click_model_in_the_grid_simulates(name):
    log, truth = simulate(_pairs(40), protocol.CLICK_MODELS[name], seed=1)
    assert 0.05 < log["clicked"].mean() < 0.8
    top = log.groupby("position")["clicked"].mean()
    assert top.loc[1] > top.loc[6]   # position bias everywhere in the grid


def test_a_run_folder_never_evaluates_on_another_held_out_set(tmp_path):
    # the seed's folder is keyed by seed and train queries only; a second invocation with another
    # --heldout-queries must stop, not score its models on the first one's held-out pairs
    from types import SimpleNamespace

    from benchmarks import quality
    pairs = _pairs(200)
    args = SimpleNamespace(split="dev", train_queries=40, heldout_queries=20, work=str(tmp_path), click_models=[])
    held = tmp_path / "dev" / "seed0_q40" / "heldout.parquet"
    held.parent.mkdir(parents=True)
    _, first = protocol.sample_split(pairs, "dev", 40, 20, 0)
    first[["query", "item_id", "title", "relevance"]].to_parquet(held)
    args.heldout_queries = 10
    with pytest.raises(SystemExit, match="another held-out set"):
        next(quality.run_seed(args, pairs, 0, {}, []))
