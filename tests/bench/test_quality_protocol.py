"""The quality protocol's parts (benchmarks/protocol.py) and the click models it runs: the fixed
dev/test split, paired bootstrap differences, the PBM and flip-noise simulators, the clean oracle."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import graded_pairs

from benchmarks import protocol
from training.metrics import auc
from udfs.clickstream.simulate import (
    SimulatorSettings,
    click_probability,
    examination_probability,
    simulate,
    simulate_sessions,
)


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
    assert combined["t_lo"] is None and combined["t_hi"] is None   # one seed: no interval over seeds


def _seed(queries: list[str], rng: np.random.Generator, per_query: int = 6, noise: float = 1.0):
    """One seed's held-out rows: naive (noisy), better (less noisy), same (naive's scores)."""
    q = np.repeat(np.array(queries, dtype=object), per_query)
    positive = rng.random(len(q)) < 0.4
    naive = positive + rng.normal(0, 1.5 * noise, len(q))
    return q, positive, {"naive": naive, "better": positive + rng.normal(0, 0.7 * noise, len(q)),
                         "same": naive.copy()}


def test_joint_draws_repeat_each_drawn_query_on_every_seed_that_holds_it():
    """Draw b is one resample of the union of the seeds' held-out queries: recomputed by hand (the
    union's queries drawn with replacement, each seed's rows of a query repeated by its count, plain
    AUC on the repeated rows), it is the same on both seeds' shared queries and for every configuration."""
    rng = np.random.default_rng(3)
    held = {0: _seed([f"q{i}" for i in range(0, 30)], rng), 1: _seed([f"q{i}" for i in range(15, 45)], rng)}
    got = protocol.joint_bootstrap_auc_differences(held, "naive", 5, seed=11)
    assert set(got) == {"better", "same"} and set(got["better"]) == {0, 1}
    assert all(np.all(d == 0.0) for d in got["same"].values())
    union = sorted({f"q{i}" for i in range(45)})
    draw = np.random.default_rng(11)
    for b in range(5):
        counts = np.bincount(draw.integers(0, len(union), len(union)), minlength=len(union))
        for s, (q, positive, scores) in held.items():
            repeat = counts[[union.index(x) for x in q]]
            want = (auc(np.repeat(positive, repeat), np.repeat(scores["better"], repeat))
                    - auc(np.repeat(positive, repeat), np.repeat(scores["naive"], repeat)))
            assert got["better"][s][b] == pytest.approx(want, abs=1e-12)
    again = protocol.joint_bootstrap_auc_differences(held, "naive", 5, seed=11)
    assert all(np.array_equal(again["better"][s], got["better"][s]) for s in held)   # deterministic
    other = protocol.joint_bootstrap_auc_differences(held, "naive", 5, seed=12)
    assert not np.array_equal(other["better"][0], got["better"][0])


def test_counted_auc_is_the_plain_auc_with_ties_and_of_repeated_rows():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 300).astype(float)          # many ties
    positive = rng.random(300) < 0.3
    groups = protocol._tie_groups(score)
    ones = np.ones(300)
    assert protocol._counted_auc(*groups, np.where(positive, ones, 0), np.where(positive, 0, ones)) == \
        pytest.approx(auc(positive, score), abs=1e-12)
    w = rng.integers(0, 3, 300).astype(float)
    assert protocol._counted_auc(*groups, np.where(positive, w, 0), np.where(positive, 0, w)) == \
        pytest.approx(auc(np.repeat(positive, w.astype(int)), np.repeat(score, w.astype(int))), abs=1e-12)


def test_seeds_sharing_their_held_out_queries_do_not_narrow_the_query_interval():
    """Four seeds on the SAME held-out queries and the same scores: averaging them adds no information
    about the queries, so the combined query interval must be as wide as one seed's. The old per-seed
    independent draws, averaged, gave about half the width (1/sqrt(4))."""
    rng = np.random.default_rng(5)
    one = _seed([f"q{i}" for i in range(120)], rng)
    held = dict.fromkeys(range(4), one)
    draws = protocol.joint_bootstrap_auc_differences(held, "naive", 400, seed=2)
    point = auc(one[1], one[2]["better"]) - auc(one[1], one[2]["naive"])
    single = protocol.combine_seeds([point], [draws["better"][0]])
    four = protocol.combine_seeds([point] * 4, [draws["better"][s] for s in range(4)])
    assert four["hi"] - four["lo"] == pytest.approx(single["hi"] - single["lo"], rel=1e-9)
    independent = [protocol.bootstrap_auc_differences(one[0], one[1], one[2], "naive", 400, seed=s)["better"]
                   for s in range(4)]
    old = protocol.combine_seeds([point] * 4, independent)
    assert old["hi"] - old["lo"] < 0.7 * (four["hi"] - four["lo"])   # what the old combination claimed
    # disjoint held-out sets are independent: there, averaging does narrow the interval
    disjoint = {s: _seed([f"s{s}q{i}" for i in range(120)], rng) for s in range(4)}
    d = protocol.joint_bootstrap_auc_differences(disjoint, "naive", 400, seed=2)
    pts = [auc(h[1], h[2]["better"]) - auc(h[1], h[2]["naive"]) for h in disjoint.values()]
    wide = protocol.combine_seeds(pts[:1], [d["better"][0]])
    narrow = protocol.combine_seeds(pts, [d["better"][s] for s in range(4)])
    assert narrow["hi"] - narrow["lo"] < 0.75 * (wide["hi"] - wide["lo"])


def test_a_configuration_on_fewer_seeds_is_drawn_on_the_seeds_it_has():
    rng = np.random.default_rng(1)
    a, b = _seed([f"q{i}" for i in range(30)], rng), _seed([f"q{i}" for i in range(20, 50)], rng)
    b = (b[0], b[1], {k: v for k, v in b[2].items() if k != "better"})
    got = protocol.joint_bootstrap_auc_differences({0: a, 1: b}, "naive", 3, seed=0)
    assert set(got["better"]) == {0} and set(got["same"]) == {0, 1}
    with pytest.raises(ValueError, match="naive"):
        protocol.joint_bootstrap_auc_differences({0: (a[0], a[1], {"better": a[2]["better"]})}, "naive", 3)


def test_t_interval_over_seeds():
    got = protocol.combine_seeds([0.01, 0.02, 0.03], [np.zeros(10)] * 3)
    half = 4.3027 * 0.01 / np.sqrt(3)
    assert (got["t_lo"], got["t_hi"]) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    assert protocol.t_interval([0.01]) == (None, None)
    assert protocol.t_interval([0.02, 0.02]) == (pytest.approx(0.02), pytest.approx(0.02))


def _t_cdf_above_zero(q: float, df: int) -> float:
    """P(0 < T < q) for Student's t, by the trapezoid rule on its density."""
    import math
    x = np.linspace(0.0, q, 400_001)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    y = c * (1 + x ** 2 / df) ** (-(df + 1) / 2)
    return float(np.sum((y[1:] + y[:-1]) / 2) * (x[1] - x[0]))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 12, 19, 30, 31, 45, 120])
def test_t_quantiles_give_97_5_percent(df):
    assert 0.5 + _t_cdf_above_zero(protocol.t_quantile_975(df), df) == pytest.approx(0.975, abs=5e-5)


def test_headroom_share():
    assert protocol.headroom_share([0.72], [0.70], [0.75]) == pytest.approx(0.4)
    assert np.isnan(protocol.headroom_share([0.72], [0.70], [0.69]))


def test_headroom_share_interval_from_the_same_draws_and_undefined_draws():
    rng = np.random.default_rng(0)
    truth = [0.010 + 0.002 * rng.standard_normal(1000) for _ in range(2)]
    config = [0.5 * t + 0.0005 * rng.standard_normal(1000) for t in truth]
    ci = protocol.share_interval(config, truth)
    share = (config[0] + config[1]) / (truth[0] + truth[1])
    assert (ci["lo"], ci["hi"]) == (pytest.approx(np.quantile(share, 0.025)), pytest.approx(np.quantile(share, 0.975)))
    assert ci["lo"] < 0.5 < ci["hi"] and ci["undefined"] == 0
    # a denominator <= 0 leaves that draw's share undefined: up to 2.5 % of the draws, the interval is
    # taken over the others; beyond, it is unbounded
    few, many = np.full(1000, 0.01), np.full(1000, 0.01)
    few[:25], many[:26] = 0.0, -0.01
    num = [np.linspace(0.0, 0.01, 1000)]
    assert protocol.share_interval(num, [few])["undefined"] == 25
    assert protocol.share_interval(num, [few])["lo"] is not None
    unbounded = protocol.share_interval(num, [many])
    assert (unbounded["lo"], unbounded["hi"], unbounded["undefined"]) == (None, None, 26)


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


@pytest.mark.parametrize("name", [*protocol.CLICK_MODELS, *protocol.PROBE_CLICK_MODELS])
def test_every_click_model_in_the_grid_simulates(name):
    log, truth = simulate(_pairs(40), protocol.click_model_settings(name), seed=1)
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


def test_the_probes_are_outside_the_grid_and_named_apart():
    assert not set(protocol.PROBE_CLICK_MODELS) & set(protocol.CLICK_MODELS)
    assert protocol.click_model_settings("cascade").click_model == "cascade"
    with pytest.raises(ValueError, match="unknown click model"):
        protocol.click_model_settings("dbn")


def _sessions(relevance: float, n_sess: int = 20000, width: int = 8):
    pool = np.full((1, width), relevance)
    return np.zeros(n_sess, dtype=np.int64), np.full(n_sess, width), pool


def test_cascade_reads_down_and_stops_only_after_a_click():
    s = protocol.PROBE_CLICK_MODELS["cascade"]
    sess_q, sess_len, pool = _sessions(2.0, n_sess=3000)
    pool[0, :] = np.linspace(3.0, 1.0, pool.shape[1])      # a good ranker: relevance falls with position
    imp = simulate_sessions(pool, sess_q, sess_len, s, np.random.default_rng(0))
    ex = imp.examined.reshape(3000, -1)
    cl = (imp.clicked & ~imp.noise).reshape(3000, -1)
    # examination is a prefix of each session: once the user stops, nothing below is read
    assert (np.diff(ex.astype(int), axis=1) <= 0).all()
    assert ex[:, 0].all() and not (cl & ~ex).any()
    # a session stops right after a click, never after a skip
    last = ex.sum(axis=1) - 1
    stopped = last < ex.shape[1] - 1
    assert cl[np.arange(3000)[stopped], last[stopped]].all()
    # examination falls below the top (so the log has a position bias) and is not (1/k)^eta: eta is unused
    assert ex.mean(axis=0)[-1] < 0.9 * ex.mean(axis=0)[0]
    with pytest.raises(ValueError, match="rows above"):
        examination_probability(np.array([1, 2]), s)


def test_cascade_with_every_click_stopping_clicks_at_most_once_a_session():
    from dataclasses import replace
    s = replace(protocol.PROBE_CLICK_MODELS["cascade"], stop_low=1.0, stop_high=1.0)
    sess_q, sess_len, pool = _sessions(2.0, n_sess=2000)
    imp = simulate_sessions(pool, sess_q, sess_len, s, np.random.default_rng(1))
    assert imp.clicked.reshape(2000, -1).sum(axis=1).max() == 1


def test_trust_bias_clicks_irrelevant_items_near_the_top_at_the_literature_rates():
    s = protocol.PROBE_CLICK_MODELS["trust"]
    sess_q, sess_len, pool = _sessions(1.0)                # every item irrelevant: gain 0
    imp = simulate_sessions(pool, sess_q, sess_len, s, np.random.default_rng(2))
    frame = pd.DataFrame({"k": imp.position, "ex": imp.examined, "c": imp.clicked})
    given_exam = frame[frame["ex"]].groupby("k")["c"].mean()
    np.testing.assert_allclose(given_exam.to_numpy(), 0.65 / np.arange(1, 9), atol=0.02)
    np.testing.assert_allclose(frame.groupby("k")["ex"].mean().to_numpy(), 1 / np.arange(1, 9), atol=0.02)
    # a perfect item: eps+_k = 1 - (min(k, 20) + 1) / 100
    sess_q, sess_len, pool = _sessions(3.0)
    imp = simulate_sessions(pool, sess_q, sess_len, s, np.random.default_rng(3))
    at_top = imp.examined & (imp.position == 1)
    assert imp.clicked[at_top].mean() == pytest.approx(0.98, abs=0.01)
    # the truth label is the gain, without the false clicks
    assert click_probability(np.array([1.0, 2.0, 3.0]), s).tolist() == pytest.approx([0.0, 1 / 3, 1.0])


@pytest.mark.parametrize("name", list(protocol.PROBE_CLICK_MODELS))
def test_the_probes_clean_oracle_reads_every_row_and_clicks_by_attractiveness(name):
    s = protocol.PROBE_CLICK_MODELS[name].clean()
    sess_q, sess_len, pool = _sessions(2.0, n_sess=5000)
    imp = simulate_sessions(pool, sess_q, sess_len, s, np.random.default_rng(4))
    assert imp.examined.all()
    frame = pd.DataFrame({"k": imp.position, "c": imp.clicked})
    want = click_probability(np.array([2.0]), s)[0]
    np.testing.assert_allclose(frame.groupby("k")["c"].mean().to_numpy(), want, atol=0.03)


def test_the_good_ranker_probe_shows_relevant_items_higher_than_the_grids_ranker():
    def mean_position_of_relevant(settings):
        log, truth = simulate(_pairs(60), settings, seed=3)
        return log.loc[truth["true_relevance"].to_numpy() >= 2.5, "position"].mean()
    assert mean_position_of_relevant(protocol.PROBE_CLICK_MODELS["good_ranker"]) < \
        mean_position_of_relevant(protocol.CLICK_MODELS["graded"]) - 0.3
