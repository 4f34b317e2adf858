"""The benchmarks' click simulator: kept at this path for the docs; it lives in udfs/clickstream/simulate.py.

One simulator serves the quality benchmarks (graded real pairs through `simulate`) and the demo
data generator (jobs/generate.py); see udfs/clickstream/simulate.py for the click model and its settings.
"""
from __future__ import annotations

from udfs.clickstream.simulate import SimulatorSettings, click_probability, simulate, split_by_query

__all__ = ["SimulatorSettings", "click_probability", "simulate", "split_by_query"]
