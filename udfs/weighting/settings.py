"""The weighting settings, typed: `weighting.*` of a validated config (jobs/config.py validates it),
built once by the score job and passed down instead of the config dict. Frozen, so no phase can
change what a later phase reads.

The registry's formula functions (udfs/weighting/strategies.py) read their parameters by name from a
mapping that also holds what the job fitted on the log (base rate, noise thresholds, loss shift):
`formula_params` builds it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from udfs.config_section import ConfigSection


@dataclass(frozen=True)
class WeightingSettings(ConfigSection):
    strategy: str
    w_min: float
    w_max: float
    normalize: bool
    temperature: float
    propensity_min: float
    propensity_estimator: str          # em | ratio
    max_driver_cells: int
    em_max_pairs: int
    em_buckets: int
    em_prior_rows: float
    em_prior_groups: str               # p_model | p_model_position | position
    em_prior_fit: str                  # fixed (em_prior_rows) | empirical_bayes
    em_noise_floor: bool
    em_monotone: bool
    em_examination: str                # free | power
    em_shared_fit: str                 # joint | marginal (weights.propensity_em)
    em_click_context: int              # 0: examination by position | C: by position and click context (0..C)
    em_click_context_by: str           # clicks_above | last_click_distance (udfs/weighting/spark.py with_click_context)
    pair_label: str                    # auto | click_model | clicks
    em_within_query: str               # fitted | ranker (spark.with_ranker_order_within_query)
    denoise_weight: float
    denoise_mode: str                  # hard | soft
    denoise_model: str                 # click_model | scorer
    mlm_model: str | None
    action_values: Mapping[str, float]
    long_dwell_ms: float
    combined: Mapping[str, float]      # signal -> exponent (strategy `combined`)

    SECTION = "weighting"
    FLOATS = ("w_min", "w_max", "temperature", "propensity_min", "em_prior_rows", "denoise_weight", "long_dwell_ms")
    INTS = ("max_driver_cells", "em_max_pairs", "em_buckets", "em_click_context")

    @classmethod
    def _converted(cls, values: dict[str, Any]) -> dict[str, Any]:
        for key in ("action_values", "combined"):  # copies (plain dicts: Spark pickles these settings)
            values[key] = {k: float(v) for k, v in values[key].items()}
        return values

    @property
    def click_context(self) -> int:
        """The click contexts the EM reads (em_click_context), or 0 where it does not apply: the ratio
        estimator fits no click model, and em_examination power one curve over positions."""
        return self.em_click_context if self.propensity_estimator == "em" and self.em_examination == "free" else 0

    def click_context_unused(self) -> str | None:
        """Why a requested em_click_context is not used (None when it is, or none is requested)."""
        if not self.em_click_context or self.click_context:
            return None
        if self.propensity_estimator != "em":
            return f"propensity_estimator={self.propensity_estimator} fits no click model"
        return f"em_examination={self.em_examination} fits one examination curve over positions"

    def as_config(self) -> dict[str, Any]:
        """Back to the config's plain `weighting` section (YAML, hashing)."""
        out = asdict(self)
        out["action_values"], out["combined"] = dict(self.action_values), dict(self.combined)
        return out

    def formula_params(self, **fitted: Any) -> dict[str, Any]:
        """What the registry's formulas read: these settings plus the statistics fitted on the log
        (base_rate, noise_thresholds, loss_shift)."""
        return {**self.as_config(), **fitted}


@dataclass(frozen=True)
class SamplingSettings(ConfigSection):
    """`sampling.*`: importance sampling (udfs/weighting/spark.py: importance_sample)."""
    keep_fraction: float | None        # None = keep every row
    seed: int

    SECTION = "sampling"
    INTS = ("seed",)

    @classmethod
    def _converted(cls, values: dict[str, Any]) -> dict[str, Any]:
        if values["keep_fraction"] is not None:  # YAML may give 1 for 1.0
            values["keep_fraction"] = float(values["keep_fraction"])
        return values
