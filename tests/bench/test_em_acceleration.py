"""benchmarks/em_acceleration.py on a real (tiny) score output's rows: both EMs run, and agree."""
from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks import em_acceleration as ea
from jobs import config
from udfs.weighting import weights
from udfs.weighting.settings import WeightingSettings


def test_compare_runs_plain_and_squarem_and_restores_the_default(tmp_path):
    rng = np.random.default_rng(2)
    n = 4000
    pair = rng.integers(0, 300, n)
    position = rng.integers(1, 8, n)
    gamma = rng.uniform(0.1, 0.9, 300)
    clicked = (rng.random(n) < gamma[pair] / position ** 0.8).astype(np.int32)
    rows = pd.DataFrame({"query": [f"q{p % 40} " for p in pair], "title": [f" t{p}" for p in pair],
                         "position": position, "clicked": clicked, "p_model": gamma[pair]})
    (tmp_path / "event_date=2026-01-01").mkdir()
    rows.to_parquet(tmp_path / "event_date=2026-01-01" / "part-0.parquet")
    cells = ea.output_cells(str(tmp_path))
    assert cells["n"].sum() == n and cells["_bucket"].nunique() == 300   # trimmed texts: one bucket a pair
    r = ea.compare(cells, WeightingSettings.from_config(config.load_config()))
    assert weights._em_from.__defaults__ == (True, None, None)   # accelerate, frozen, blocks: restored
    assert r["em_steps_squarem"] > 0 and r["em_steps_plain"] > 0 and r["speedup"] > 0
    assert r["max_abs_diff_propensity"] < 1e-4 and r["max_abs_diff_label"] < 1e-4
