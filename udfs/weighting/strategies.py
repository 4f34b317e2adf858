"""The one registry of weighting strategies. Each entry carries the strategy whole: the signal columns
it reads, its formula (the text README, `clickweight explain` and the report show), its source, the
raw-weight function and the same formula with one row's numbers put in.

Config validation, the score job's weight pass (which builds exactly the columns in `reads`),
`clickweight explain` and README's strategy table (`markdown_table`, checked by a test) all read
this table. A new strategy is one entry here plus its maths in udfs/weighting/weights.py. Every raw
weight is then clipped to [w_min, w_max] and rescaled to mean 1 (weights.normalise_scale), so each
function only has to return a positive number per row.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from udfs.weighting import weights as W

Columns = Mapping[str, np.ndarray]
Row = Mapping[str, Any]

# Every column a strategy may read, and where the weight pass gets it.
SIGNAL_COLUMNS: dict[str, str] = {
    "clicked": "input (the click, 0/1)",
    "added_to_cart": "input (optional; absent = 0)",
    "purchased": "input (optional; absent = 0)",
    "dwell_ms": "input (optional; absent = 0)",
    "relevance": "scorer: cos(emb(query), emb(title))",
    "p_model": "scorer: calibrated P(click)",
    "propensity": "click model: examination propensity of the row's position, relative to position 1",
    "noise_score": "confident learning on P(click): how strongly the other label wins",
    "suspect": "confident learning: the row's label is a suspected error",
    "mlm_pll": "masked LM: mean per-token pseudo-log-likelihood of the title",
    "p_click": "click model: the row's leave-one-out P(click), its pair's relevance re-fitted without it",
    "p_scorer_click": "the scorer's P(click) at the row's position: ε + (1 − ε)·θ_k·m, m the click model's "
                      "relevance of the pairs the scorer rates alike (p_model where the prior does not group by it: "
                      "em_prior_rows 0 or em_prior_groups position)",
}


def fmt(x: Any) -> str:
    return "null" if x is None else f"{x:.6g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Strategy:
    name: str
    formula: str                                          # the raw weight in words and symbols
    source: str                                           # where the idea comes from
    reads: tuple[str, ...]                                # keys of SIGNAL_COLUMNS it needs
    weight: Callable[[Columns, Mapping[str, Any]], np.ndarray]  # raw positive weight per row
    explain: Callable[[Row, Mapping[str, Any]], str]      # `formula` with one row's numbers
    needs_mlm: bool = False                               # titles scored by a masked LM (mlm_pll)
    uses_click_model: bool = False                        # denoise: its P(click) may come from the click model

    def __post_init__(self) -> None:
        unknown = set(self.reads) - set(SIGNAL_COLUMNS)
        if unknown:
            raise ValueError(f"strategy {self.name!r} reads unknown columns {sorted(unknown)}")


def _information_gain_row(row: Row, p: Mapping[str, Any]) -> str:
    h_base = W.binary_entropy(np.array([p["base_rate"]]))[0]
    h_p = W.binary_entropy(np.array([row["p_model"]]))[0]
    return (f"max(H(base rate {fmt(p['base_rate'])}) - H(p_model {fmt(row['p_model'])}), 0) "
            f"= max({fmt(float(h_base))} - {fmt(float(h_p))}, 0)")


def _loss_row(row: Row, p: Mapping[str, Any]) -> str:
    shift, t = fmt(p["loss_shift"]), fmt(p["temperature"])
    bce = float(W.bce(np.array([row["p_model"]], np.float64), np.array([row["clicked"]], np.float64))[0])
    return (f"exp((BCE(p_model {fmt(row['p_model'])}, clicked {row['clicked']}) - max BCE {shift}) / T {t})"
            f" = exp(({fmt(bce)} - {shift}) / {t})")


def _action_row(row: Row, p: Mapping[str, Any]) -> str:
    v, y = p["action_values"], row.get("clicked")
    action = ("purchase" if row.get("purchased") else "cart" if row.get("added_to_cart")
              else "long_dwell" if y and (row.get("dwell_ms") or 0) >= p["long_dwell_ms"]
              else "click" if y else "skip")
    table = ", ".join(f"{k} {fmt(float(v[k]))}" for k in ("purchase", "cart", "long_dwell", "click", "skip"))
    return f"the row's strongest action is {action} -> {fmt(float(v[action]))}  (values: {table})"


def _denoise_row(row: Row, p: Mapping[str, Any]) -> str:
    if p["denoise_mode"] == "hard":
        return (f"suspect={row['suspect']} (confident learning): "
                f"{fmt(p['denoise_weight']) if row['suspect'] else '1'}")
    return f"1 - (1 - {fmt(p['denoise_weight'])}) * noise_score {fmt(row['noise_score'])}"


def _ipw_weight(c: Columns, p: Mapping[str, Any]) -> np.ndarray:
    return np.where(np.asarray(c["clicked"]) > 0, 1.0 / np.asarray(c["propensity"], np.float64), 1.0)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("none", "1 (exactly uniform)", "baseline", (),
             lambda c, p: np.float64(1.0), lambda r, p: "1 (uniform)"),  # broadcast by raw_weights
    Strategy("relevance", "max(cos(emb(query), emb(title)), 0)", "seed 003", ("relevance",),
             lambda c, p: np.maximum(np.asarray(c["relevance"], np.float64), 0.0) + W.EPS,
             lambda r, p: f"max(cos(query, title), 0) = max({fmt(r['relevance'])}, 0)"),
    Strategy("confidence", "p = σ(z), the scorer's calibrated click probability", "seed 002", ("p_model",),
             lambda c, p: W.clip_prob(c["p_model"]), lambda r, p: f"p_model = {fmt(r['p_model'])}"),
    Strategy("information_gain", "max(H(ȳ) − H(p), 0)", "seed 001", ("p_model",),
             lambda c, p: np.maximum(W.information_gain(c["p_model"], p["base_rate"]), 0.0) + W.EPS,
             _information_gain_row),
    # softmax over per-row losses == exp(loss / T) up to the global scale that normalisation removes
    Strategy("loss", "exp((BCE(p, y) − max BCE) / `temperature`): a softmax over per-row losses", "seed 000",
             ("p_model", "clicked"),
             lambda c, p: W.loss_weight(c["p_model"], c["clicked"], p["temperature"], p.get("loss_shift", W.BCE_MAX)),
             _loss_row),
    Strategy("el2n", "\\|p − y\\|", "Paul et al. 2021", ("p_model", "clicked"),
             lambda c, p: W.el2n(c["p_model"], c["clicked"]) + W.EPS,
             lambda r, p: f"|p_model - clicked| = |{fmt(r['p_model'])} - {r['clicked']}|"),
    Strategy("ipw", "clicks 1/θ_k, skips 1; θ_k the examination propensity of position k (regression-EM "
             "on the log, relative to position 1, floored at `propensity_min`)",
             "Wang et al. 2018; Joachims et al. 2017", ("propensity", "clicked"), _ipw_weight,
             lambda r, p: (f"clicked at position {r['position']}: 1 / propensity = 1 / {fmt(r['propensity'])}"
                           if r.get("clicked") else "not clicked: 1")),
    # The information an impression's click carries about its pair's relevance grows with the chance it
    # was seen: under the position-based model the Fisher information of a click at position k is about
    # theta_k / gamma. Paired with `pair_label: click_model`, a pair's weight is its expected examinations.
    Strategy("examination", "θ_k, the examination propensity of the row's position (as `ipw`'s θ_k): an "
             "impression counts by how likely it was seen", "position-based click model (Joachims et al. 2017)",
             ("propensity",), lambda c, p: np.asarray(c["propensity"], np.float64),
             lambda r, p: f"propensity of position {r['position']} = {fmt(r['propensity'])}"),
    Strategy("action_value", "purchase > cart > click with dwell ≥ `long_dwell_ms` > click > skip "
             "(`action_values`)", "e-commerce practice", ("clicked", "added_to_cart", "purchased", "dwell_ms"),
             lambda c, p: W.action_value(c["clicked"], c["added_to_cart"], c["purchased"], c["dwell_ms"],
                                         p["action_values"], p["long_dwell_ms"]),
             _action_row),
    Strategy("denoise", "confident learning on P(click) (`denoise_model`: the EM click model's leave-one-out "
             "ε + (1 − ε)·θ_k·γ₋ᵢ, γ₋ᵢ the pair's relevance re-fitted without the row, or the scorer's p); "
             "`hard`: suspects × `denoise_weight`; `soft`: "
             "1 − (1 − `denoise_weight`)·noise_score", "Northcutt et al. 2021", ("noise_score", "suspect"),
             lambda c, p: W.denoise_weight(c["noise_score"], c["suspect"], p["denoise_weight"], p["denoise_mode"]),
             _denoise_row, uses_click_model=True),
    # RHO-LOSS's reducible forms: the signal under the scorer minus the same signal under a model that
    # did not see the row (the click model's leave-one-out P(click)), as exp(difference / T). Both predict
    # the row's click at its position: against the scorer's position-blind p_model, every deep skip would
    # read as reducible and every deep click as irreducible, a position weight nobody asked for.
    Strategy("loss_reducible", "exp((BCE(p_k, y) − BCE(p₋ᵢ, y)) / `temperature`); p_k the scorer's P(click) at "
             "the row's position (`p_scorer_click`), p₋ᵢ the click model's leave-one-out P(click), as `denoise`'s",
             "seed 000; Mindermann et al. 2022 (RHO-LOSS)", ("p_scorer_click", "p_click", "clicked"),
             lambda c, p: W.reducible(W.bce(c["p_scorer_click"], c["clicked"]), W.bce(c["p_click"], c["clicked"]),
                                      p["temperature"]),
             lambda r, p: (f"exp((BCE(p_scorer_click {fmt(r['p_scorer_click'])}, {r['clicked']}) - BCE(p_click "
                           f"{fmt(r['p_click'])}, {r['clicked']})) / T {fmt(p['temperature'])})")),
    Strategy("el2n_reducible", "exp((\\|p_k − y\\| − \\|p₋ᵢ − y\\|) / `temperature`)",
             "Paul et al. 2021; Mindermann et al. 2022", ("p_scorer_click", "p_click", "clicked"),
             lambda c, p: W.reducible(W.el2n(c["p_scorer_click"], c["clicked"]), W.el2n(c["p_click"], c["clicked"]),
                                      p["temperature"]),
             lambda r, p: (f"exp((|{fmt(r['p_scorer_click'])} - {r['clicked']}| - |{fmt(r['p_click'])} - "
                           f"{r['clicked']}|) / T {fmt(p['temperature'])})")),
    Strategy("information_gain_reducible", "exp((H(p₋ᵢ) − H(p_k)) / `temperature`): the scorer's certainty "
             "beyond the click model's", "seed 001; Mindermann et al. 2022", ("p_scorer_click", "p_click"),
             lambda c, p: W.reducible(W.binary_entropy(c["p_click"]), W.binary_entropy(c["p_scorer_click"]),
                                      p["temperature"]),
             lambda r, p: (f"exp((H(p_click {fmt(r['p_click'])}) - H(p_scorer_click {fmt(r['p_scorer_click'])}))"
                           f" / T {fmt(p['temperature'])})")),
    Strategy("mlm_quality", "exp(mean per-token pseudo-log-likelihood of the title) under a masked LM "
             "(`weighting.mlm_model`, needs an MLM head)", "seed 004; Salazar et al. 2020", ("mlm_pll",),
             lambda c, p: W.mlm_quality(c["mlm_pll"]),
             lambda r, p: f"exp(mean token PLL of the title) = exp({fmt(r.get('mlm_pll'))})", needs_mlm=True),
)}
COMBINED = "combined"
COMBINED_FORMULA = "Π signal^exponent over `weighting.combined`"


def names() -> tuple[str, ...]:
    """Every name `weighting.strategy` accepts: the registry's entries, then `combined`."""
    return (*STRATEGIES, COMBINED)


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown weighting signal {name!r}: choose one of {tuple(STRATEGIES)}")
    return STRATEGIES[name]


def signals(weighting: Mapping[str, Any]) -> list[Strategy]:
    """The signals a weighting config uses: its strategy, or combined's signals with a nonzero exponent."""
    if weighting["strategy"] == COMBINED:
        return [get(n) for n, e in weighting["combined"].items() if float(e) != 0.0]
    return [get(weighting["strategy"])]


def reads(weighting: Mapping[str, Any]) -> tuple[str, ...]:
    """The signal columns a weighting config needs, in SIGNAL_COLUMNS order."""
    wanted = {c for s in signals(weighting) for c in s.reads}
    return tuple(c for c in SIGNAL_COLUMNS if c in wanted)


def is_uniform(weighting: Mapping[str, Any]) -> bool:
    """Every row's raw weight is exactly 1 (`none`): normalisation needs no pass over the rows."""
    return [s.name for s in signals(weighting)] == ["none"]


def needs_mlm(weighting: Mapping[str, Any]) -> bool:
    return any(s.needs_mlm for s in signals(weighting))


def uses_click_model(weighting: Mapping[str, Any]) -> bool:
    return any(s.uses_click_model for s in signals(weighting))


def raw_weights(strategy: str, cols: Columns, params: Mapping[str, Any], rows: int | None = None,
                entries: Mapping[str, Strategy] | None = None) -> np.ndarray:
    """Raw weight of `strategy` (a signal, or `combined`: product of signals ** exponents).

    `entries` are the Strategy objects to use (the Spark weight pass ships the ones it resolved on
    the driver, so a worker computes exactly what the driver's registry said); default: the registry."""
    def entry(name: str) -> Strategy:
        return entries[name] if entries is not None and name in entries else get(name)

    n = len(cols["clicked"]) if rows is None else rows
    if strategy == COMBINED:
        w = np.ones(n)
        for name, exponent in params["combined"].items():
            if float(exponent) != 0.0:  # an exponent of 0 switches a signal off: its columns are not built
                w = w * entry(name).weight(cols, params) ** float(exponent)
    else:
        w = entry(strategy).weight(cols, params)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), (n,))
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise FloatingPointError(f"strategy {strategy!r} produced a non-finite or non-positive raw weight")
    return w


def explain_row(strategy: str, row: Row, params: Mapping[str, Any]) -> str:
    """The strategy's raw weight with this row's numbers put in."""
    if strategy == COMBINED:
        return " * ".join(f"({get(n).explain(row, params)}) ** {e}"
                          for n, e in params["combined"].items() if float(e) != 0.0)
    return get(strategy).explain(row, params)


def markdown_table() -> str:
    """README's strategy table, from this registry (tests/weighting/test_strategy_registry.py keeps README in step)."""
    lines = ["| strategy | raw weight | reads | source |", "|---|---|---|---|"]
    for s in STRATEGIES.values():
        lines.append(f"| `{s.name}` | {s.formula} | {', '.join(s.reads) or '-'} | {s.source} |")
    lines.append(f"| `{COMBINED}` | {COMBINED_FORMULA} | its signals' | |")
    return "\n".join(lines)
