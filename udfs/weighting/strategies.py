"""The one registry of weighting strategies: name -> raw-weight function, the columns it reads,
and what the score job must compute for it (a masked LM, the click model's P(click)).

Config validation, the score job and the pipeline all read this table; a new strategy is one entry
here plus its maths in udfs/weighting/weights.py. Every raw weight is then clipped to [w_min, w_max] and
rescaled to mean 1 (udfs/weighting/weights.py normalise_scale), so each function only has to be positive.

| strategy | raw weight | reads | source |
|---|---|---|---|
| none | 1 | - | uniform baseline |
| relevance | max(cos, 0) | relevance | seed 003 |
| confidence | p | p_model | seed 002 |
| information_gain | max(H(y_bar) - H(p), 0) | p_model | seed 001 |
| loss | exp((BCE(p, y) - max BCE) / T) | p_model, clicked | seed 000 |
| el2n | abs(p - y) | p_model, clicked | Paul et al. 2021 |
| ipw | clicks 1 / theta_k, skips 1 | propensity, clicked | Joachims et al. 2017 |
| action_value | purchase > cart > long dwell > click > skip | clicked, added_to_cart, purchased, dwell_ms | |
| denoise | confident learning on P(click) | noise_score, suspect | Northcutt et al. 2021 |
| mlm_quality | exp(mean token PLL of the title) | mlm_pll | seed 004; Salazar et al. 2020 |
| combined | product of signals ** exponents | (its signals') | |
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from udfs.weighting import weights as W

Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Strategy:
    name: str
    weight: Callable[[Columns, Mapping[str, Any]], np.ndarray]  # raw positive weight per row
    reads: tuple[str, ...]              # the signal columns it needs
    needs_mlm: bool = False             # titles scored by a masked LM (mlm_pll)
    uses_click_model: bool = False      # denoise: P(click) from the EM click model when configured


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("none", lambda c, p: np.ones(len(c["clicked"])), ()),
    Strategy("relevance", lambda c, p: np.maximum(np.asarray(c["relevance"], np.float64), 0.0) + W.EPS,
             ("relevance",)),
    Strategy("confidence", lambda c, p: W.clip_prob(c["p_model"]), ("p_model",)),
    Strategy("information_gain",
             lambda c, p: np.maximum(W.information_gain(c["p_model"], p["base_rate"]), 0.0) + W.EPS, ("p_model",)),
    # softmax over per-row losses == exp(loss / T) up to the global scale that normalisation removes
    Strategy("loss", lambda c, p: W.loss_weight(c["p_model"], c["clicked"], p["temperature"],
                                                p.get("loss_shift", W.BCE_MAX)), ("p_model", "clicked")),
    Strategy("el2n", lambda c, p: W.el2n(c["p_model"], c["clicked"]) + W.EPS, ("p_model", "clicked")),
    Strategy("ipw", lambda c, p: np.where(np.asarray(c["clicked"]) > 0,
                                          1.0 / np.asarray(c["propensity"], np.float64), 1.0),
             ("propensity", "clicked")),
    Strategy("action_value", lambda c, p: W.action_value(c["clicked"], c["added_to_cart"], c["purchased"],
                                                         c["dwell_ms"], p["action_values"], p["long_dwell_ms"]),
             ("clicked", "added_to_cart", "purchased", "dwell_ms")),
    Strategy("denoise", lambda c, p: W.denoise_weight(c["noise_score"], c["suspect"], p["denoise_weight"],
                                                      p["denoise_mode"]),
             ("noise_score", "suspect"), uses_click_model=True),
    Strategy("mlm_quality", lambda c, p: W.mlm_quality(c["mlm_pll"]), ("mlm_pll",), needs_mlm=True),
)}
COMBINED = "combined"
NAMES: tuple[str, ...] = (*STRATEGIES, COMBINED)


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown weighting signal {name!r}: choose one of {tuple(STRATEGIES)}")
    return STRATEGIES[name]


def signals(weighting: Mapping[str, Any]) -> list[Strategy]:
    """The signals a weighting config uses: its strategy, or combined's signals with a nonzero exponent."""
    if weighting["strategy"] == COMBINED:
        return [get(n) for n, e in weighting["combined"].items() if float(e) != 0.0]
    return [get(weighting["strategy"])]


def needs_mlm(weighting: Mapping[str, Any]) -> bool:
    return any(s.needs_mlm for s in signals(weighting))


def uses_click_model(weighting: Mapping[str, Any]) -> bool:
    return any(s.uses_click_model for s in signals(weighting))


def raw_weights(strategy: str, cols: Columns, params: Mapping[str, Any]) -> np.ndarray:
    """Raw weight of `strategy` (a signal, or `combined`: product of signals ** exponents)."""
    if strategy == COMBINED:
        w = np.ones(len(cols["clicked"]))
        for name, exponent in params["combined"].items():
            w = w * get(name).weight(cols, params) ** float(exponent)
    else:
        w = get(strategy).weight(cols, params)
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise FloatingPointError(f"strategy {strategy!r} produced a non-finite or non-positive raw weight")
    return w
