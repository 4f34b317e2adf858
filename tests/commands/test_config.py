from __future__ import annotations

import pytest

from jobs import config
from udfs.weighting import strategies


def test_defaults_validate_and_hash_is_stable():
    a, b = config.load_config(), config.load_config()
    assert config.config_hash(a) == config.config_hash(b)
    assert config.config_hash(a) != config.config_hash(config.load_config(overrides=["train.lr=1e-4"]))


def test_set_parses_yaml_scalars_and_spark_conf_keys():
    cfg = config.load_config(overrides=["train.epochs=3", "weighting.w_max=20", "train.use_gpu=false",
                                        "spark.conf.spark.sql.shuffle.partitions=16",
                                        "pipeline.strategies=none,ipw"])
    assert cfg["train"]["epochs"] == 3 and cfg["weighting"]["w_max"] == 20.0
    assert cfg["spark"]["conf"]["spark.sql.shuffle.partitions"] == "16"
    assert cfg["pipeline"]["strategies"] == ["none", "ipw"]


@pytest.mark.parametrize("sets, on_rows", [
    ([], False),                                                   # auto, the pair trainer: none on rows
    (["train.compact_pairs=false"], True),                          # auto, a row trainer: on rows
    (["output.row_model_inputs=true"], True),
    (["output.row_model_inputs=false", "train.compact_pairs=false"], False),
])
def test_token_ids_go_on_the_rows_only_where_a_trainer_streams_rows(sets, on_rows):
    cfg = config.load_config(overrides=sets)
    assert config.row_model_inputs(cfg) is on_rows


def test_shuffle_partitions_grow_with_rows_past_the_configured_value_and_shrink_to_the_cores_below_it():
    part = lambda rows, cores=2: config.shuffle_partitions(8, rows, 500_000, 100_000, cores)  # noqa: E731
    assert part(800) == 2 and part(10_000) == 2 and part(200_000) == 2   # one partition a core
    assert part(10_000, cores=4) == 4 and part(10_000, cores=16) == 8    # not fewer than the cores (up to 8)...
    assert part(300_000) == 3 and part(800_000) == 8                      # ... nor smaller than 100k rows
    assert part(4_000_000) == 8 and part(4_000_001) == 9                  # the configured 8, then growth
    assert part(10_000_000) == 20 and part(10_000_000, cores=64) == 20
    assert config.shuffle_partitions(400, 10_000, 500_000, 100_000, 64) == 64   # a cluster's small input


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("train.epochs=three", "'train.epochs' must be int"),
    ("weighting.strategy=magic", "weighting.strategy must be one of"),
    ("weighting.w_min=2", "w_min <= 1"),
    ("model.path=/does/not/exist", "model.path is not a folder"),
    ("train.use_gpu=1", "must be true/false"),
    ("novalue", "key=value"),
    ("input.max_position=0", "max_position must be >= 1"),
    ("input.max_position=1000000", "below 1000000 while the click model reads the click context"),
    ("input.min_event_ts=notadate", "min_event_ts is not a timestamp"),
    ("output.files_per_date=0", "files_per_date"),
    ("output.row_model_inputs=sometimes", "row_model_inputs must be auto, true or false"),
    ("spark.max_rows_per_partition=10", "max_rows_per_partition must be >= 1000"),
    ("spark.min_rows_per_partition=0", "min_rows_per_partition must be >= 1"),
    ("scorer.min_rows_per_partition=0", "scorer.min_rows_per_partition must be >= 1"),
    ("scorer.device=tpu", "scorer.device must be"),
    ("train.checkpoint_every_steps=-5", "checkpoint_every_steps"),
    ("weighting.action_values.purchse=4", "unknown action 'purchse'"),
    ("weighting.action_values.cart=-1", "action_values.cart must be a number > 0"),
    ("run_id=../../victim", "run_id must match"),
    ("run_id=a b", "run_id must match"),
    ("pipeline.strategies=naive,magic", "'magic' is not naive, default or a strategy"),
    ("pipeline.strategies=naive,naive", "distinct names"),
    ("weighting.pair_label=magic", "pair_label: auto | click_model | clicks"),
    ("weighting.em_shared_fit=both", "em_shared_fit: joint | marginal"),
    ("weighting.em_within_query=magic", "em_within_query: fitted | ranker"),
    ("weighting.em_click_context=-1", "em_click_context is a whole number from 0 to 8"),
    ("weighting.em_click_context=1.5", "em_click_context. must be int"),
    ("weighting.em_click_context=9", "em_click_context is a whole number from 0 to 8"),
])
def test_bad_values_fail_with_a_clear_message(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load_config(overrides=[override])


@pytest.mark.parametrize(("other", "why"), [("weighting.em_examination=power", "one examination curve"),
                                            ("weighting.propensity_estimator=ratio", "fits no click model")])
def test_the_click_context_applies_to_the_free_em_examination_only(other, why):
    from udfs.weighting.settings import WeightingSettings

    used = WeightingSettings.from_config(config.load_config(overrides=["weighting.em_click_context=2"]))
    assert used.click_context == 2 and used.click_context_unused() is None
    w = WeightingSettings.from_config(config.load_config(overrides=["weighting.em_click_context=2", other]))
    assert w.click_context == 0 and why in w.click_context_unused()


def test_pipeline_runs_are_the_naive_baseline_the_defaults_or_a_strategy():
    from jobs.pipeline import round_config

    cfg = config.load_config(overrides=["pipeline.strategies=naive,default,ipw"])
    naive, default, ipw = (round_config(cfg, name, None) for name in cfg["pipeline"]["strategies"])
    assert (naive["weighting"]["strategy"], naive["weighting"]["pair_label"], naive["train"]["objective"],
            naive["train"]["position_tower"]) == ("none", "clicks", "pointwise", False)
    # default: the config as it is (only the pipeline's training budget set)
    assert default["weighting"] == cfg["weighting"] and default["weighting"]["pair_label"] == "auto"
    assert ipw["weighting"]["strategy"] == "ipw" and ipw["weighting"]["pair_label"] == cfg["weighting"]["pair_label"]
    assert default["train"]["max_steps_per_epoch"] == cfg["pipeline"]["max_steps_per_epoch"]


def test_profiles_in_conf_load(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "conf"
    for name in ("local.yaml", "cluster.yaml"):
        cfg = config.load_config(str(root / name))
        assert cfg["weighting"]["strategy"] in strategies.names()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: -1\n")
    with pytest.raises(config.ConfigError, match="batch_size"):
        config.load_config(str(bad))


def test_shipped_profile_by_bare_name_away_from_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no conf/ here, as on a driver running from the shipped archive
    cfg = config.load_config("cluster.yaml")
    assert cfg["train"]["local_mode"] is False and cfg["train"]["reader_pool"] == "dummy"
    (tmp_path / "cluster.yaml").write_text("train:\n  num_processes: 3\n")
    assert config.load_config("cluster.yaml")["train"]["num_processes"] == 3  # a file here wins
    with pytest.raises(config.ConfigError, match="not found: mine.yaml"):
        config.load_config("mine.yaml")


def test_settings_objects_are_typed_frozen_and_refuse_unknown_keys():
    import dataclasses

    from training.settings import TrainSettings
    from udfs.weighting.settings import WeightingSettings

    cfg = config.load_config(overrides=["train.lr=1", "weighting.w_max=20"])
    t, w = TrainSettings.from_config(cfg), WeightingSettings.from_config(cfg)
    assert isinstance(t.lr, float) and t.lr == 1.0 and isinstance(w.w_max, float) and w.w_max == 20.0
    assert w.formula_params(base_rate=0.2)["base_rate"] == 0.2 and w.as_config() == cfg["weighting"]
    assert w.but(strategy="none").strategy == "none" and w.strategy == cfg["weighting"]["strategy"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.epochs = 3
    with pytest.raises(ValueError, match=r"train settings: unknown \['lrr'\]"):
        TrainSettings.from_mapping({**cfg["train"], "lrr": 1.0})
    with pytest.raises(ValueError, match=r"missing \['w_min'\]"):
        WeightingSettings.from_mapping({k: v for k, v in cfg["weighting"].items() if k != "w_min"})


def test_score_partitions_depend_on_the_config_and_the_input_only():
    from udfs.scoring.spark import score_partitions

    assert score_partitions(8, None, 5000) == 8                            # no row count: the configured value
    assert score_partitions(8, 800, 5000) == 2 and score_partitions(8, 10_000, 5000) == 2
    assert score_partitions(8, 10_001, 5000) == 3 and score_partitions(8, 40_000, 5000) == 8
    assert score_partitions(8, 10_000_000, 5000) == 8 and score_partitions(1, 10_000, 5000) == 1


def test_positions_past_the_slot_stride_load_when_the_click_model_reads_position_alone():
    for extra in ("weighting.em_click_context=0", "weighting.propensity_estimator=ratio"):
        assert config.load_config(overrides=["input.max_position=1000000", extra])["input"]["max_position"] == 1_000_000
