"""The strategy registry carries each strategy whole: what it reads, its formula text, its weight.

Every test here runs over the registry itself, so a new entry is checked without editing a list.
The last test adds a strategy (one entry plus its maths) and runs the real score job and `explain`
with it: that is all adding a strategy takes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_overrides
from signal_columns import synthetic_signal_columns

from udfs.weighting import strategies
from udfs.weighting.strategies import Strategy

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"base_rate": 0.2, "temperature": 1.0, "loss_shift": 5.0, "propensity_min": 0.05,
          "action_values": {"skip": 1.0, "click": 2.0, "long_dwell": 2.5, "cart": 3.0, "purchase": 4.0},
          "long_dwell_ms": 30000, "combined": {"relevance": 1.0, "ipw": 2.0},
          "denoise_weight": 0.1, "denoise_mode": "hard"}


class OnlyTheseColumns(Mapping):
    """Signal columns that fail the test when a strategy reads one it did not declare."""

    def __init__(self, cols: dict[str, np.ndarray], allowed: tuple[str, ...]):
        self.cols, self.allowed = cols, set(allowed)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.allowed:
            raise AssertionError(f"read {key!r}, which is not in its `reads`")
        return self.cols[key]

    def __iter__(self):
        return iter(self.allowed)

    def __len__(self) -> int:
        return len(self.allowed)


def test_the_synthetic_columns_cover_every_signal_a_strategy_may_read():
    assert set(synthetic_signal_columns(3)) == set(strategies.SIGNAL_COLUMNS)


@pytest.mark.parametrize("name", list(strategies.STRATEGIES))
def test_a_strategy_reads_exactly_what_it_declares(name):
    s = strategies.get(name)
    cols = synthetic_signal_columns(200, seed=1)
    w = strategies.raw_weights(name, OnlyTheseColumns(cols, s.reads), PARAMS, rows=200)
    assert w.shape == (200,) and np.all(np.isfinite(w)) and np.all(w > 0)
    # ... and each declared column matters to some row, or declaring it is a lie
    # (none reads nothing; confidence/relevance read one column that every row uses)
    for col in s.reads:
        moved = dict(cols)
        moved[col] = (1.0 - cols[col]) if col not in ("suspect",) else ~cols[col]
        if col in ("p_model", "p_click", "p_scorer_click"):
            moved[col] = cols[col] * 0.5  # 1 - p would leave entropy unchanged
        if col == "mlm_pll":
            moved[col] = cols[col] - 1.0
        if col == "propensity":
            moved[col] = np.clip(cols[col] * 0.5, 0.05, 1.0)
        if col in ("added_to_cart", "purchased"):
            moved[col] = np.ones(200)
        if col == "dwell_ms":
            moved[col] = np.full(200, 60_000.0)
        matters = False
        for params in (PARAMS, {**PARAMS, "denoise_mode": "soft"}):  # hard denoise reads only `suspect`
            base = strategies.raw_weights(name, OnlyTheseColumns(cols, s.reads), params, rows=200)
            changed = strategies.raw_weights(name, OnlyTheseColumns(moved, s.reads), params, rows=200)
            matters |= not np.allclose(changed, base)
        assert matters, f"{name}: its weight ignores {col}"


@pytest.mark.parametrize("name", strategies.names())
def test_explain_text_comes_from_the_registry_for_every_strategy(name):
    cols = synthetic_signal_columns(1, seed=2)
    row = {k: (bool(v[0]) if k == "suspect" else float(v[0])) for k, v in cols.items()}
    row["clicked"], row["position"] = 1, 3
    text = strategies.explain_row(name, row, PARAMS)
    assert text and "{" not in text
    if name not in ("none", "action_value", "denoise", "combined"):
        assert any(strategies.fmt(row[c]) in text for c in strategies.get(name).reads if c != "clicked"), text


def test_readme_strategy_table_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- strategies:[^\n]*-->\n(.*?)\n<!-- /strategies -->", readme, re.S)
    assert block, "README lost its generated strategy table"
    assert block.group(1) == strategies.markdown_table()
    for name in strategies.names():
        assert f"| `{name}` |" in block.group(1)


def test_an_entry_that_reads_an_unknown_column_is_refused():
    with pytest.raises(ValueError, match="unknown columns"):
        Strategy("broken", "x", "", ("clicks_by_magic",), lambda c, p: np.ones(1), lambda r, p: "1")


def test_adding_a_strategy_is_one_entry(spark, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`position_trust`: clicks at deep positions are worth more (1 / sqrt(propensity)), skips 1 — one
    entry, and the config, the Spark weight pass and `explain` all take it."""
    from jobs import config
    from jobs.cli import main as cli
    from jobs.generate import generate, write
    from jobs.score import run_score

    entry = Strategy(
        "position_trust", "clicks 1/√θ_k, skips 1", "a test", ("clicked", "propensity"),
        lambda c, p: np.where(np.asarray(c["clicked"]) > 0, np.asarray(c["propensity"]) ** -0.5, 1.0),
        lambda r, p: f"1 / sqrt({strategies.fmt(r['propensity'])})" if r.get("clicked") else "not clicked: 1")
    monkeypatch.setitem(strategies.STRATEGIES, entry.name, entry)

    raw_dir = tmp_path / "raw"
    write(generate(rows=400, days=1, seed=5), str(raw_dir))
    out = tmp_path / "w"
    cfg = config.load_config(overrides=tiny_overrides(tiny_model_dir, "weighting.strategy=position_trust",
                                                      "weighting.w_max=100.0"))
    run_score(spark, f"{raw_dir}/clickstream", str(out), cfg)
    rows = pd.read_parquet(out, columns=["event_id", "clicked", "propensity", "raw_weight"])
    expected = np.where(rows["clicked"] > 0, rows["propensity"] ** -0.5, 1.0)
    np.testing.assert_allclose(rows["raw_weight"], expected, rtol=1e-12)
    assert (rows.loc[rows["clicked"] > 0, "raw_weight"] > 1.0).any()

    clicked = rows[rows["clicked"] > 0].iloc[0]
    assert cli(["explain", "--output", str(out), "--event-id", clicked["event_id"]]) == 0
    text = capsys.readouterr().out
    assert "strategy position_trust: raw weight = 1 / sqrt(" in text and "same)" in text, text
