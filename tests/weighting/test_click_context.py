"""weighting.em_click_context: examination by position and by the clicks above a row in its search
(udfs/weighting/slots.py), in real local Spark and on the driver, against a cascade log whose truth is
known, and a position-based log it must read as the position-based model does."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides

from jobs import config
from jobs.generate import generate, write
from jobs.score import run_score
from udfs.weighting import cells as C
from udfs.weighting import spark_em
from udfs.weighting import weights as W
from udfs.weighting.settings import WeightingSettings
from udfs.weighting.slots import SLOT_STRIDE, marginal_by_position
from udfs.weighting.spark import (
    CLICK_CONTEXT,
    collect_cells,
    estimate_propensity,
    pair_bucket,
    with_click_context,
    with_click_probability,
    with_clicks_above,
)

SETTINGS = WeightingSettings.from_config(config.load_config()).but(em_click_context=0)


def cascade_frame(seed: int = 5, queries: int = 150, sessions: int = 30, shown: int = 8,
                  stop: float = 0.6) -> pd.DataFrame:
    """A cascade click log: each session reads its list from the top, clicks an item with its
    attractiveness, and stops after a click with probability `stop` (never otherwise). The list is
    shuffled each session, so that every pair is seen at several positions and click contexts."""
    rng = np.random.default_rng(seed)
    attract = rng.uniform(0.05, 0.9, (queries, shown))
    rows = []
    for q in range(queries):
        for s in range(sessions):
            order = rng.permutation(shown)
            reading = True
            for pos, item in enumerate(order, start=1):
                clicked = int(reading and rng.random() < attract[q, item])
                rows.append((f"s{q}_{s}", f"e{q}_{s}_{pos}", f"q{q}", f"t{q}_{item}", pos, clicked,
                             attract[q, item]))
                if clicked and rng.random() < stop:
                    reading = False
    frame = pd.DataFrame(rows, columns=["session_id", "event_id", "query", "title", "position", "clicked",
                                        "attractiveness"])
    frame["position"] = frame["position"].astype(np.int32)
    frame["p_model"] = np.clip(frame["attractiveness"] + rng.normal(0, 0.2, len(frame)), 0.02, 0.98)
    return frame


@pytest.fixture(scope="module")
def cascade(spark):
    frame = cascade_frame()
    return frame, with_clicks_above(spark.createDataFrame(frame)).cache()


def _driver_fit(log, w: WeightingSettings):
    cells = collect_cells(log.withColumn("relevance", log["p_model"]), 1_000_000, None, w.em_click_context)
    cells["pm"] = cells["p_raw"]
    return estimate_propensity(log, w, cells)


def _truth_by_bucket(log) -> pd.Series:
    """Each pair's true attractiveness, keyed as the EM's evidence is (pair_bucket)."""
    frame = log.select(pair_bucket().alias("_bucket"), "attractiveness").toPandas()
    return frame.groupby("_bucket")["attractiveness"].first()


def test_the_click_context_reads_the_cascade_and_labels_pairs_better(cascade, spark):
    frame, log = cascade
    plain = SETTINGS.but(em_noise_floor=False)
    context = plain.but(em_click_context=1)
    prop0, info0, cm0 = _driver_fit(log, plain)
    prop1, info1, cm1 = _driver_fit(log, context)
    # The per-position propensity stays keyed by position; the context's curves are in the fit's description.
    assert sorted(prop1) == list(range(1, 9)) and "examination_by_click_context" not in info0
    curves = info1["examination_by_click_context"]
    assert sorted(curves) == ["0", "1"] and sorted(curves["1"]) == list(range(2, 9))
    # The cascade examines everything until a click (context 0 flat) and, after one, continues with
    # probability 1 - stop = 0.4 a click (context 1 well below context 0 at every position).
    c0 = np.array([curves["0"][k] for k in range(1, 9)])
    c1 = np.array([curves["1"][k] for k in range(2, 9)])
    assert c0.min() / c0.max() > 0.85
    assert (c1 < 0.75 * c0[1:]).all()
    # The per-position propensity (ipw, the gate) is each position's examination over its contexts,
    # weighted by their rows: about what the position-based fit finds, falling with position.
    rows = frame.assign(above=np.minimum(log.select(CLICK_CONTEXT).toPandas()[CLICK_CONTEXT], 1))
    share = rows.groupby(["position", "above"]).size().unstack(fill_value=0)
    for k in range(2, 9):
        mean = (share.loc[k, 0] * curves["0"][k] + share.loc[k, 1] * curves["1"][k]) / share.loc[k].sum()
        assert prop1[k] == pytest.approx(min(1.0, mean / curves["0"][1]), rel=1e-9)
    assert prop0[8] < 0.8 and prop1[8] < 0.8
    # Every pair's label ranks the true attractiveness better with the context than without.
    truth = _truth_by_bucket(log)
    rank = {}
    for name, cm in (("plain", cm0), ("context", cm1)):
        ev = cm.evidence.set_index("_bucket")["_gamma"]
        rank[name] = pd.Series(ev).rank().corr(truth.reindex(ev.index).rank())
    assert rank["context"] > rank["plain"] + 0.01, rank   # 0.894 against 0.874 (seed 5)


def test_a_position_based_log_reads_the_same_with_or_without_the_context(spark):
    """Clicks that do not depend on the clicks above: each context's curve is the position-based one, and
    the labels hardly move."""
    rng = np.random.default_rng(11)
    frame = cascade_frame(seed=11, stop=0.0)   # never stops: examination is 1 everywhere ...
    bias = 1.0 / frame["position"] ** 0.8      # ... then a position bias on top, independent of context
    frame["clicked"] = (rng.random(len(frame)) < frame["attractiveness"] * bias).astype(np.int32)
    log = with_clicks_above(spark.createDataFrame(frame)).cache()
    plain = SETTINGS.but(em_noise_floor=False)
    prop0, _, cm0 = _driver_fit(log, plain)
    prop1, info1, cm1 = _driver_fit(log, plain.but(em_click_context=2))
    curves = info1["examination_by_click_context"]
    assert sorted(curves) == ["0", "1", "2"]
    for k in range(1, 9):
        assert abs(prop1[k] - prop0[k]) < 0.05
    for ctx in ("1", "2"):   # relative to position 1 of context 0, like prop
        for k, t in curves[ctx].items():
            if k >= 3:
                assert abs(t / curves["0"][1] - prop0[k]) < 0.1, (ctx, k)
    g0 = cm0.evidence.set_index("_bucket")["_gamma"]
    g1 = cm1.evidence.set_index("_bucket")["_gamma"].reindex(g0.index)
    assert np.corrcoef(g0, g1)[0, 1] > 0.98


def test_the_spark_em_reads_the_same_slots_as_the_driver(cascade, monkeypatch):
    """Past max_driver_cells the EM runs in Spark (udfs/weighting/spark_em.py) on the same examination
    slots: with every pair in the sample, the same curves and about the same labels."""
    _, log = cascade
    w = SETTINGS.but(em_noise_floor=False, em_click_context=1)
    prop, info, cm = _driver_fit(log, w)
    monkeypatch.setattr(spark_em, "MIN_SAMPLE_CELLS", 10**9)   # the whole log is the sample
    persisted: list = []
    s_prop, s_info, s_cm = estimate_propensity(log, w.but(max_driver_cells=0), None, persisted)
    assert s_info["em_sample"]["fraction"] == 1.0
    for ctx, curve in info["examination_by_click_context"].items():
        for k, t in curve.items():
            assert s_info["examination_by_click_context"][ctx][k] == pytest.approx(t, abs=2e-3)
    ev = cm.evidence.sort_values("_bucket").reset_index(drop=True)
    s_ev = s_cm.evidence.toPandas().sort_values("_bucket").reset_index(drop=True)
    assert (ev["_bucket"].to_numpy() == s_ev["_bucket"].to_numpy()).all()
    # each pair solved alone with its own stopping point (pair_relevance): close to the joint fit, as without
    # the context (mean 0.011 here either way; test_spark_em.py)
    assert np.abs(s_ev["_gamma"] - ev["_gamma"]).mean() < 0.02
    assert np.corrcoef(s_ev["_gamma"], ev["_gamma"])[0, 1] > 0.99
    assert prop == pytest.approx(s_prop, abs=2e-3)
    for frame in persisted:
        frame.unpersist()


def test_each_rows_click_probability_reads_its_own_slot(cascade, spark):
    """p_click = eps + (1 - eps) theta_slot gamma_-i: a row below a click is read with context 1's theta."""
    frame, log = cascade
    w = SETTINGS.but(em_noise_floor=False, em_click_context=1, em_prior_rows=0.0)
    _, _, cm = _driver_fit(log, w)
    out = with_click_probability(log.withColumn("b", pair_bucket()), cm, spark).toPandas()
    assert out["p_click"].notna().all() and "_position" not in out.columns
    slot = out["position"].astype(np.int64) + SLOT_STRIDE * np.minimum(out[CLICK_CONTEXT], 1)
    held = cm.held_out().set_index(["_bucket", "_position"])
    cell = held.loc[list(zip(out["b"], slot))]
    gamma = np.where(out["clicked"] == 1, cell["_g_click"], cell["_g_skip"])
    expected = cm.eps + (1 - cm.eps) * slot.map(cm.theta).to_numpy() * np.clip(gamma, W.EPS, 1 - W.EPS)
    np.testing.assert_allclose(out["p_click"], np.clip(expected, W.EPS, 1 - W.EPS), rtol=1e-9)
    below = out[CLICK_CONTEXT] > 0   # the rows whose slot is not their position: context 1's theta is lower
    assert below.mean() > 0.2
    assert (slot[below].map(cm.theta) < 0.8 * out.loc[below, "position"].map(cm.theta)).all()


def test_clicks_above_count_the_higher_positions_of_the_same_search(spark):
    frame = pd.DataFrame({"session_id": ["a", "a", "a", "a", "b", "b", None, None],
                          "event_id": list("12345678"), "query": ["x", "x", "x", "y", "x", "x", "x", "x"],
                          "position": [3, 1, 2, 1, 1, 2, 1, 2], "clicked": [1, 1, 0, 1, 0, 1, 1, 1]})
    got = with_clicks_above(spark.createDataFrame(frame)).toPandas().sort_values("event_id")
    # search (a, x): positions 1 (click), 2, 3 (click); (a, y) alone; (b, x): 1, 2 (click); rows without a
    # session have no known search, so no click above (not each other's)
    assert got[CLICK_CONTEXT].tolist() == [1, 0, 1, 0, 0, 0, 0, 0]


def test_last_click_distance_counts_the_positions_below_the_last_click_above(spark):
    frame = pd.DataFrame({"session_id": ["a", "a", "a", "a", "b", "b", None, "a", "a"],
                          "event_id": list("123456789"), "query": ["x", "x", "x", "y", "x", "x", "x", "x", "x"],
                          "position": [3, 1, 2, 1, 1, 2, 2, 5, 5], "clicked": [1, 1, 0, 1, 0, 1, 1, 1, 0]})
    got = with_click_context(spark.createDataFrame(frame), "last_click_distance").toPandas().sort_values("event_id")
    # search (a, x): 1 (click), 2, 3 (click), 5 (click), 5: the last click above 2 and 3 is at 1, above the
    # first 5 at 3; the second 5 shares its position with the click before it (event order): 1 below it,
    # not "no click"; (a, y) and (b, x)'s first rows have no click above; a row without a session reads as none
    assert got[CLICK_CONTEXT].tolist() == [2, 0, 1, 0, 0, 0, 0, 2, 1]
    with pytest.raises(ValueError, match="one of"):
        with_click_context(spark.createDataFrame(frame), "clicks_below")


def test_the_last_click_distance_recovers_the_cascades_continuation(cascade, spark):
    """By distance from the last click the cascade's examination is what the simulator does: 1 with no
    click above, 1 - stop = 0.4 right below a click at every position, falling with the distance (a user
    still reading far below a click is one who did not stop), each curve flat in position; the labels
    rank the attractiveness as well as by the clicks above."""
    frame, _ = cascade
    log = with_click_context(spark.createDataFrame(frame), "last_click_distance").cache()
    w = SETTINGS.but(em_noise_floor=False, em_click_context=4, em_click_context_by="last_click_distance")
    _, info, cm = _driver_fit(log, w)
    curves = info["examination_by_click_context"]
    assert sorted(curves) == ["0", "1", "2", "3", "4"]
    assert min(curves["0"].values()) > 0.95
    assert all(abs(v - 0.4) < 0.03 for v in curves["1"].values()), curves["1"]
    means = [np.mean(list(curves[str(d)].values())) for d in range(1, 5)]
    assert means == sorted(means, reverse=True) and means[3] < 0.6 * means[0]
    truth = _truth_by_bucket(log)
    ev = cm.evidence.set_index("_bucket")["_gamma"]
    assert pd.Series(ev).rank().corr(truth.reindex(ev.index).rank()) > 0.885   # 0.894 (seed 5), as clicks_above


def test_carry_forward_falls_back_one_context_down():
    slots = [1, 2, 3, SLOT_STRIDE + 2, SLOT_STRIDE + 3, 2 * SLOT_STRIDE + 3]
    fitted = {1: 1.0, 2: 0.8, 3: 0.6, SLOT_STRIDE + 3: 0.3}
    out = C.carry_forward(slots, fitted, 1.0)
    assert out == {1: 1.0, 2: 0.8, 3: 0.6, SLOT_STRIDE + 2: 0.8, SLOT_STRIDE + 3: 0.3, 2 * SLOT_STRIDE + 3: 0.3}


def test_the_marginal_by_position_weighs_each_context_by_its_rows():
    theta = {1: 1.0, 2: 0.9, SLOT_STRIDE + 2: 0.3, 3: 0.8, SLOT_STRIDE + 3: 0.2, 2 * SLOT_STRIDE + 3: 0.1}
    rows = {1: 10, 2: 6, SLOT_STRIDE + 2: 4, 3: 1, SLOT_STRIDE + 3: 0, 2 * SLOT_STRIDE + 3: 3}
    got = marginal_by_position(theta, rows)
    assert got == pytest.approx({1: 1.0, 2: (6 * 0.9 + 4 * 0.3) / 10, 3: (0.8 + 3 * 0.1) / 4})


def test_monotone_theta_is_one_chain_per_context():
    theta = np.array([1.0, 0.5, 0.7, 0.9, 0.2, 0.4])
    n = np.ones(6)
    blocks = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(W.monotone_theta(theta, n, blocks), [1.0, 0.6, 0.6, 0.9, 0.3, 0.3])
    np.testing.assert_allclose(W.monotone_theta(theta, n), W.non_increasing(theta, n))


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("raw_ctx") / "data"
    write(generate(rows=600, days=2, seed=23, malformed_fraction=0.0), str(folder))
    return str(folder)


@pytest.mark.parametrize("shared_fit, by, levels", [("joint", "clicks_above", 1), ("marginal", "clicks_above", 1),
                                                    ("joint", "last_click_distance", 2)])
def test_the_score_job_labels_pairs_with_the_click_context(spark, raw_dir, tiny_model_dir, tmp_path, shared_fit, by,
                                                           levels):
    """End to end: the job's pair labels are the driver's EM on (examination slot, pair) cells rebuilt from
    the output rows, with theta fitted either way; the run summary describes each context's curve; the
    rows keep their columns."""
    sets = ["weighting.strategy=none", "weighting.pair_label=click_model", f"weighting.em_click_context={levels}",
            f"weighting.em_shared_fit={shared_fit}", f"weighting.em_click_context_by={by}"]
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, *sets))
    summary = run_score(spark, f"{raw_dir}/clickstream", str(tmp_path / "out"), cfg)
    assert sorted(summary["propensity_fit"]["examination_by_click_context"]) == [str(c) for c in range(levels + 1)]
    assert summary["click_context"] == {"levels": levels, "by": by, "rows_without_session": 0}
    assert all(int(k) < SLOT_STRIDE for k in summary["propensity"])
    stored = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert "examination_by_click_context" in stored["propensity_fit"]
    rows = pd.read_parquet(tmp_path / "out")
    assert CLICK_CONTEXT not in rows.columns
    pairs = pd.read_parquet(tmp_path / "out" / "_pairs")
    rows = rows.sort_values(["session_id", "query", "position", "event_id"])
    if by == "clicks_above":
        context = rows.groupby(["session_id", "query"])["clicked"].cumsum() - rows["clicked"]
    else:   # positions below the last click above (0 with none): any row after a click in its search is >= 1
        clicked_at = rows["position"].where(rows["clicked"] == 1)
        last = clicked_at.groupby([rows["session_id"], rows["query"]]).transform(lambda x: x.shift().ffill())
        context = (rows["position"] - last).fillna(0).astype(np.int64)
    slot = rows["position"].astype(np.int64) + SLOT_STRIDE * np.minimum(context, levels)
    key = rows["query"].str.strip() + "\x00" + rows["title"].str.strip()
    codes, uniques = pd.factorize(key, sort=True)
    cells = (rows.assign(_bucket=codes, c=rows["clicked"], position=slot).groupby(["position", "_bucket"])
                 .agg(n=("c", "size"), c=("c", "sum"), pm=("p_model", "first")).reset_index())
    _, info, model = C.em_propensity(C.sorted_cells(cells), "query_title_pairs", WeightingSettings.from_config(cfg))
    for ctx, curve in summary["propensity_fit"]["examination_by_click_context"].items():
        assert info["examination_by_click_context"][ctx] == pytest.approx(curve)
    gamma = model["evidence"].set_index("_bucket")["_gamma"]
    expected = pd.Series(gamma.to_numpy(), index=np.asarray(uniques)[gamma.index.to_numpy()])
    got = pairs.set_index(pairs["query"] + "\x00" + pairs["title"])["label"]
    np.testing.assert_allclose(got.loc[expected.index], expected, rtol=1e-6, atol=1e-9)


def test_the_score_job_keeps_one_persisted_copy_of_the_rows_with_the_click_context(spark, raw_dir, tiny_model_dir):
    """The clicks above are computed before the scored rows are persisted, not on a second persisted copy:
    at a data lake's size that copy is the rows again, in memory or on the executors' disks."""
    from jobs import score

    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=none"))
    default = WeightingSettings.from_config(cfg)
    assert default.click_context > 0   # the default reads the click context
    rows, _ = score.extract(spark, f"{raw_dir}/clickstream", None)
    out, _, stats, cached, _ = score.transform(rows, cfg, "run-test")
    try:
        row_copies = [f for f in cached if {"event_id", "p_model"} <= set(f.columns)
                      and not {"weight", "raw_weight"} & set(f.columns)]   # the rows before their weights
        assert len(row_copies) == 1 and CLICK_CONTEXT in row_copies[0].columns
        assert stats["click_context"] == {"levels": default.click_context, "by": default.em_click_context_by,
                                          "rows_without_session": 0}
        assert CLICK_CONTEXT not in out.columns
    finally:
        score.release(cached)


def test_a_log_without_session_ids_reads_as_the_position_based_model(spark, raw_dir, tiny_model_dir, tmp_path):
    """session_id is optional in the data contract: a log without the column scores under the default
    click context, says how many rows had no session, and labels its pairs exactly as the position-based
    model does (every row in context 0)."""
    folder = tmp_path / "no_session"
    pd.read_parquet(f"{raw_dir}/clickstream").drop(columns=["session_id"]).to_parquet(folder.with_suffix(".parquet"))
    source = str(folder.with_suffix(".parquet"))
    summaries, labels = {}, {}
    default = WeightingSettings.from_config(config.load_config())
    for context in (default.em_click_context, 0):
        sets = ["weighting.strategy=none", "weighting.pair_label=click_model", f"weighting.em_click_context={context}"]
        cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, *sets))
        out = tmp_path / f"out{context}"
        summaries[context] = run_score(spark, source, str(out), cfg)
        pairs = pd.read_parquet(out / "_pairs")
        labels[context] = pairs.set_index(["query", "title"])["label"].sort_index()
    c = default.em_click_context
    rows = summaries[c]["rows_valid"]
    assert summaries[c]["click_context"] == {"levels": c, "by": default.em_click_context_by,
                                             "rows_without_session": rows}
    assert rows > 500
    assert "click_context" not in summaries[0]
    assert summaries[c]["propensity"] == pytest.approx(summaries[0]["propensity"])
    np.testing.assert_allclose(labels[c].to_numpy(), labels[0].to_numpy(), rtol=1e-9)
