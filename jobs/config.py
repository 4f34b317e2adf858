"""Configuration: defaults (conf/defaults.yaml) <- profile file (--conf) <- --set key=value.

Unknown keys and type mismatches are errors, so a typo in a 3 a.m. batch config fails at once
instead of silently running with a default.
"""
from __future__ import annotations

import copy
import datetime
import re
import secrets
import time
from pathlib import Path
from typing import Any

import yaml

import conf
from training.metrics import OBJECTIVES, SELECT_KEYS
from udfs.config_hash import config_hash  # noqa: F401  (jobs read it here)
from udfs.errors import UserError
from udfs.scoring.device import PRECISIONS, SCORER_PRECISIONS
from udfs.weighting import strategies
from udfs.weighting.slots import SLOT_STRIDE

DEFAULTS_PATH = Path(conf.__file__).with_name("defaults.yaml")

# Keys whose values are free-form mappings (not validated key by key).
_FREE_MAPPINGS = {"spark.conf", "weighting.action_values", "weighting.combined"}

RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ConfigError(UserError):
    """A config value is unknown, mistyped or out of range."""


PROFILES = ("cluster.yaml", "local.yaml")  # shipped in the conf package beside defaults.yaml


def load_defaults() -> dict[str, Any]:
    with open(DEFAULTS_PATH) as f:
        return yaml.safe_load(f)


def _merge(base: dict, override: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"unknown config key '{dotted}'")
        if dotted in _FREE_MAPPINGS:
            if not isinstance(value, dict):
                raise ConfigError(f"'{dotted}' must be a mapping, got {value!r}")
            out[key] = {**base[key], **value}
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"'{dotted}' is a section; got {value!r}")
            out[key] = _merge(base[key], value, dotted + ".")
        else:
            out[key] = _coerce(dotted, base[key], value)
    return out


def _coerce(dotted: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"'{dotted}' must be true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, float) and isinstance(value, str):
        try:  # YAML 1.1 reads '1e-4' (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(default, list) and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(default, str) and isinstance(value, bool):  # auto | true | false keys: YAML reads true as a bool
        return str(value).lower()
    if not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
        raise ConfigError(
            f"'{dotted}' must be {type(default).__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = tree
        parts = key.strip().split(".")
        # spark.conf keys contain dots themselves: everything after 'spark.conf.' is one key.
        if parts[:2] == ["spark", "conf"] and len(parts) > 2:
            parts = ["spark", "conf", ".".join(parts[2:])]
            value = str(raw)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def load_config(conf_file: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = load_defaults()
    if conf_file:
        path = Path(conf_file)
        if not path.is_file() and conf_file in PROFILES:
            # A shipped profile by its bare name (`--conf cluster.yaml`): on a cluster the driver may run
            # from the shipped environment (clickweight package), away from any checkout.
            path = Path(DEFAULTS_PATH).parent / conf_file
        if not path.is_file():
            raise ConfigError(f"config file not found: {conf_file}")
        with open(path) as f:
            cfg = _merge(cfg, yaml.safe_load(f) or {})
    cfg = _merge(cfg, parse_overrides(overrides))
    validate(cfg)
    return cfg


def shuffle_partitions(configured: int, rows: int, max_rows_per_partition: int, min_rows_per_partition: int,
                       parallelism: int) -> int:
    """The score job's shuffle partitions for `rows` input rows: the session's spark.sql.shuffle.partitions,
    but no more than a partition per spark.min_rows_per_partition rows (at least one per core: a small
    input split finer only pays per-task costs; a 10k-row job ran 2.7 s faster in 2 partitions than in 8
    on 2 cores), and never so few that a partition holds over spark.max_rows_per_partition rows (10M rows
    in 8 partitions ran a 4g local driver out of heap caching them). (Not the pairs' scoring partitions:
    those fix the batches, and so the scores' last bits; udfs/scoring/spark.py score_partitions.)"""
    small = max(parallelism, -(-rows // min_rows_per_partition))
    return max(min(configured, small), -(-rows // max_rows_per_partition))


def row_model_inputs(cfg: dict[str, Any]) -> bool:
    """Whether the row table carries the trainee's token ids (output.row_model_inputs; auto: only for
    a trainer that streams rows, train.compact_pairs=false)."""
    value = cfg["output"]["row_model_inputs"]
    return (not cfg["train"]["compact_pairs"]) if value == "auto" else value == "true"


def with_overrides(cfg: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """A copy of a loaded config with --set style overrides applied (then validated)."""
    out = _merge(cfg, parse_overrides(pairs))
    validate(out)
    return out


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


# The naive baseline (README, docs/quality.md): uniform weights, the raw click rate as the pair label, the
# pointwise loss, no position tower; everything else as configured. One definition: the pipeline's `naive`
# run and benchmarks/quality.py's `naive` configuration both read it.
NAIVE_BASELINE: tuple[str, ...] = ("weighting.strategy=none", "weighting.pair_label=clicks",
                                   "train.objective=pointwise", "train.position_tower=false")


def pipeline_run_overrides(name: str) -> list[str]:
    """The --set overrides one pipeline run applies to the config: `naive` the naive baseline, `default`
    none (the config as it is), a strategy name weighting.strategy=<name>."""
    if name == "naive":
        return list(NAIVE_BASELINE)
    if name == "default":
        return []
    if name in strategies.names():
        return [f"weighting.strategy={name}"]
    raise ConfigError(f"pipeline.strategies: {name!r} is not naive, default or a strategy ({strategies.names()})")


def validate(cfg: dict[str, Any]) -> None:
    _check(isinstance(cfg["output"]["table_versions_kept"], int) and cfg["output"]["table_versions_kept"] >= 1,
           "output.table_versions_kept must be an integer >= 1 (the current version is always kept)")
    w = cfg["weighting"]
    names = strategies.names()  # the registry in udfs/weighting/strategies.py is the one list
    _check(w["strategy"] in names, f"weighting.strategy must be one of {names}, got {w['strategy']!r}")
    _check(0 < w["w_min"] <= 1 <= w["w_max"], "need 0 < weighting.w_min <= 1 <= weighting.w_max")
    _check(w["temperature"] > 0, "weighting.temperature must be > 0")
    _check(0 < w["propensity_min"] <= 1, "weighting.propensity_min must be in (0, 1]")
    _check(w["propensity_estimator"] in ("em", "ratio"), "weighting.propensity_estimator: em | ratio")
    _check(w["em_buckets"] >= 2 and w["em_max_pairs"] >= 0 and w["em_prior_rows"] >= 0 and w["max_driver_cells"] >= 0,
           "need weighting.em_buckets >= 2, em_max_pairs >= 0, em_prior_rows >= 0, max_driver_cells >= 0")
    _check(0 < w["denoise_weight"] <= 1, "weighting.denoise_weight must be in (0, 1]")
    _check(w["denoise_mode"] in ("hard", "soft"), "weighting.denoise_mode: hard | soft")
    _check(w["denoise_model"] in ("click_model", "scorer"), "weighting.denoise_model: click_model | scorer")
    _check(w["pair_label"] in ("auto", "click_model", "clicks"), "weighting.pair_label: auto | click_model | clicks")
    _check(w["pair_label"] != "click_model" or w["propensity_estimator"] == "em",
           "weighting.pair_label=click_model needs weighting.propensity_estimator=em")
    _check(w["em_examination"] in ("free", "power"), "weighting.em_examination: free | power")
    _check(w["em_shared_fit"] in ("joint", "marginal"), "weighting.em_shared_fit: joint | marginal")
    _check(isinstance(w["em_click_context"], int) and not isinstance(w["em_click_context"], bool)
           and 0 <= w["em_click_context"] <= 8, "weighting.em_click_context is a whole number from 0 to 8")
    _check(w["em_click_context_by"] in ("clicks_above", "last_click_distance"),
           "weighting.em_click_context_by: clicks_above | last_click_distance")
    _check(w["em_prior_groups"] in ("p_model", "p_model_position", "position"),
           "weighting.em_prior_groups: p_model | p_model_position | position")
    _check(w["em_prior_fit"] in ("fixed", "empirical_bayes"), "weighting.em_prior_fit: fixed | empirical_bayes")
    _check(w["em_within_query"] in ("fitted", "ranker"), "weighting.em_within_query: fitted | ranker")
    _check(isinstance(w["em_noise_floor"], bool) and isinstance(w["em_monotone"], bool),
           "weighting.em_noise_floor and em_monotone are true or false")
    _check(w["mlm_model"] is None or Path(w["mlm_model"]).is_dir(),
           f"weighting.mlm_model is not a folder: {w['mlm_model']}")
    kf = cfg["sampling"]["keep_fraction"]
    _check(kf is None or (isinstance(kf, (int, float)) and 0 < kf <= 1),
           f"sampling.keep_fraction must be null or in (0, 1], got {kf!r}")
    _check(isinstance(cfg["rounds"], int) and cfg["rounds"] >= 1, "rounds must be an int >= 1")
    runs = cfg["pipeline"]["strategies"]
    _check(isinstance(runs, list) and len(runs) >= 1 and len(set(runs)) == len(runs),
           "pipeline.strategies must be a non-empty list of distinct names")
    for name in runs:
        pipeline_run_overrides(name)
    actions = ("skip", "click", "long_dwell", "cart", "purchase")
    for name, value in w["action_values"].items():
        _check(name in actions, f"weighting.action_values: unknown action {name!r} (one of {', '.join(actions)})")
        _check(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
               f"weighting.action_values.{name} must be a number > 0, got {value!r}")
    run_id = cfg["run_id"]
    _check(run_id is None or (isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None),
           f"run_id must match [A-Za-z0-9_-]+ (it names sibling folders of the output), got {run_id!r}")
    for name in w["combined"]:
        _check(name in strategies.STRATEGIES and name != "none",
               f"weighting.combined: unknown signal {name!r}")
    t = cfg["train"]
    _check(t["launcher"] in ("torch_distributor", "torchrun"), "train.launcher: torch_distributor | torchrun")
    _check(t["num_processes"] >= 1, "train.num_processes must be >= 1")
    _check(t["batch_size"] >= 1 and t["epochs"] >= 1, "train.batch_size and train.epochs must be >= 1")
    _check(t["lr"] > 0, "train.lr must be > 0")
    _check(0 <= t["warmup_ratio"] < 1, "train.warmup_ratio must be in [0, 1)")
    _check(0 < t["eval_fraction"] < 1, "train.eval_fraction must be in (0, 1)")
    _check(t["reader_pool"] in ("dummy", "thread"), "train.reader_pool: dummy | thread")
    _check(t["max_steps_per_epoch"] is None or t["max_steps_per_epoch"] >= 1,
           "train.max_steps_per_epoch must be null or >= 1")
    _check(t["checkpoint_every_steps"] >= 0, "train.checkpoint_every_steps must be >= 0 (0 = epoch ends only)")
    _check(t["shuffle_buffer_rows"] >= 0, "train.shuffle_buffer_rows must be >= 0")
    _check(t["torch_threads"] >= 1, "train.torch_threads must be >= 1")
    _check(cfg["model"]["max_length"] >= 8, "model.max_length must be >= 8")
    _check(cfg["model"]["kind"] in ("bi_encoder", "cross_encoder"), "model.kind: bi_encoder | cross_encoder")
    _check(t["precision"] in PRECISIONS, "train.precision: auto | fp32 | bf16")
    _check(cfg["scorer"]["precision"] in SCORER_PRECISIONS, "scorer.precision: auto | fp32 | bf16 | int8")
    _check(not (cfg["scorer"]["precision"] == "int8" and str(cfg["scorer"]["device"]).startswith("cuda")),
           "scorer.precision=int8 is dynamic int8 quantisation for CPUs: use bf16 (or auto) on a GPU")
    _check(t["head_lr"] > 0, "train.head_lr must be > 0")
    _check(t["select_by"] in (*SELECT_KEYS, "auto"), f"train.select_by: auto | {' | '.join(SELECT_KEYS)}")
    _check(t["select_by"] != "examination_loss" or (t["compact_pairs"] and not t["position_tower"]),
           "train.select_by=examination_loss judges the pair table's clicks per position (train.compact_pairs: "
           "true) with the score job's examination; with train.position_tower the gate already judges per "
           "position with the tower's own terms")
    _check(float(t["select_margin_se"]) >= 0, "train.select_margin_se must be >= 0 (0: the plain best-of gate)")
    _check(isinstance(cfg["output"]["position_buckets"], int) and cfg["output"]["position_buckets"] >= 1,
           "output.position_buckets must be an integer >= 1")
    _check(t["objective"] in OBJECTIVES, f"train.objective: {' | '.join(OBJECTIVES)}")
    _check(t["objective"] != "listwise" or t["compact_pairs"],
           "train.objective=listwise trains on the pair table's per-query lists: it needs train.compact_pairs=true")
    _check(isinstance(t["position_tower"], bool), "train.position_tower must be true or false")
    _check(not t["position_tower"] or (t["compact_pairs"] and t["objective"] == "pointwise"),
           "train.position_tower trains on the pair table's per-position click rates with the pointwise loss: "
           "it needs train.compact_pairs=true and train.objective=pointwise")
    _check(isinstance(t["tower_noise_floor"], bool) and (t["position_tower"] or not t["tower_noise_floor"]),
           "train.tower_noise_floor is true or false, and true needs train.position_tower=true")
    _check(t["label_prior_impressions"] >= 0, "train.label_prior_impressions must be >= 0")
    _check(0 < t["pair_weight_power"] <= 1, "train.pair_weight_power must be in (0, 1]")
    sc = cfg["scorer"]
    _check(sc["batch_size"] >= 1, "scorer.batch_size must be >= 1")
    _check(sc["max_length"] >= 8, "scorer.max_length must be >= 8")
    _check(sc["torch_threads"] >= 0, "scorer.torch_threads must be >= 0 (0 = torch's default)")
    _check(sc["device"] in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", sc["device"]) is not None,
           f"scorer.device must be auto | cpu | cuda | cuda:N, got {sc['device']!r}")
    inp = cfg["input"]
    _check(inp["max_position"] >= 1, "input.max_position must be >= 1")
    reads_context = w["em_click_context"] and w["propensity_estimator"] == "em" and w["em_examination"] == "free"
    _check(not reads_context or inp["max_position"] < SLOT_STRIDE,
           f"input.max_position must be below {SLOT_STRIDE} while the click model reads the click context "
           "(weighting.em_click_context > 0): its examination slots are position + "
           f"{SLOT_STRIDE} x the click context; set weighting.em_click_context=0 for deeper positions")
    _check(inp["max_title_chars"] >= 1 and inp["max_query_chars"] >= 1,
           "input.max_title_chars and input.max_query_chars must be >= 1")
    try:
        datetime.datetime.fromisoformat(str(inp["min_event_ts"]))
    except ValueError:
        raise ConfigError(f"input.min_event_ts is not a timestamp: {inp['min_event_ts']!r}") from None
    fpd = cfg["output"]["files_per_date"]
    _check(fpd is None or fpd >= 1, "output.files_per_date must be null or >= 1")
    _check(cfg["output"]["min_row_groups_per_rank"] >= 1, "output.min_row_groups_per_rank must be >= 1")
    _check(cfg["spark"]["max_rows_per_partition"] >= 1000, "spark.max_rows_per_partition must be >= 1000")
    _check(cfg["scorer"]["min_rows_per_partition"] >= 1, "scorer.min_rows_per_partition must be >= 1")
    _check(1 <= cfg["spark"]["min_rows_per_partition"] <= cfg["spark"]["max_rows_per_partition"],
           "spark.min_rows_per_partition must be >= 1 and <= spark.max_rows_per_partition")
    _check(cfg["output"]["row_model_inputs"] in ("auto", "true", "false"),
           f"output.row_model_inputs must be auto, true or false, got {cfg['output']['row_model_inputs']!r}")
    reuse = cfg["scorer"]["reuse_scores_from"]
    _check(reuse is None or Path(reuse).is_dir(), f"scorer.reuse_scores_from is not a folder: {reuse}")
    for key in ("model", "scorer"):
        p = cfg[key]["path"]
        _check(p is None or Path(p).is_dir(), f"{key}.path is not a folder: {p}")
    g = cfg["generate"]
    _check(g["rows"] >= 1 and g["days"] >= 1, "generate.rows and generate.days must be >= 1")
    _check(0 <= g["malformed_fraction"] < 0.5, "generate.malformed_fraction must be in [0, 0.5)")
    _check(g["queries"] is None or g["queries"] >= 2, "generate.queries must be >= 2 or null (from rows)")
    _check(g["items"] is None or g["items"] >= 10, "generate.items must be >= 10 or null (from rows)")


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def dump_text(cfg: dict[str, Any]) -> str:
    """The resolved config as YAML, keys in definition order (what runs write beside their output)."""
    return yaml.safe_dump(cfg, sort_keys=False)


def dump(cfg: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(dump_text(cfg))
