"""Click simulator over real graded (query, title) pairs: a clickstream whose ground truth is known.

Each session shows one query's products ranked by a noisy ranker; examination decays with
position (P(exam | k) = 1 / k**eta); a click needs examination and is then likelier the more
relevant the product (graded 1..3); a share of labels is flipped (noise); purchases follow
clicks on the most relevant products. Pairs repeat across sessions, as in real logs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SimulatorSettings:
    sessions_per_query: float = 6.0   # mean; per-query counts are Zipf-skewed around it
    eta: float = 0.8                  # position-bias exponent (hidden from clickweight)
    ranker_noise: float = 0.6         # sd of the ranker's error on the 1..3 scale
    noise_rate: float = 0.15          # share of rows whose click label is flipped
    click_low: float = 0.05           # click probability of an examined, irrelevant (1.0) item
    click_high: float = 0.75          # ... of an examined, perfect (3.0) item
    position_bias: bool = True        # False: every position is examined (the unbiased reference)
    start_date: str = "2026-02-01"
    days: int = 3


def split_by_query(pairs: pd.DataFrame, heldout_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    queries = np.sort(pairs["query"].unique())
    rng = np.random.default_rng(seed)
    held = set(rng.choice(queries, size=int(len(queries) * heldout_fraction), replace=False).tolist())
    mask = pairs["query"].isin(held)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def click_probability(relevance: np.ndarray, s: SimulatorSettings) -> np.ndarray:
    frac = (np.clip(relevance, 1, 3) - 1) / 2
    return s.click_low + (s.click_high - s.click_low) * frac ** 1.5


def simulate(pairs: pd.DataFrame, s: SimulatorSettings, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clickstream in the clickweight input schema, truth: event_id, relevance, is_noise_click)."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in pairs.groupby("query", sort=True) if len(g) >= 2]
    popularity = rng.zipf(1.6, size=len(groups)).astype(float)
    sessions = np.maximum(1, np.round(popularity / popularity.mean() * s.sessions_per_query)).astype(int)
    sessions = np.minimum(sessions, int(20 * s.sessions_per_query))
    start = pd.Timestamp(s.start_date, tz="UTC")
    span_us = s.days * 86_400_000_000
    parts = []
    sid = 0
    for g, n_sessions in zip(groups, sessions):
        rel = g["relevance"].to_numpy()
        for _ in range(n_sessions):
            order = np.argsort(-(rel + rng.normal(0, s.ranker_noise, len(rel))), kind="stable")
            k = np.arange(1, len(order) + 1)
            exam = (1.0 / k ** s.eta) if s.position_bias else np.ones(len(order))
            r = rel[order]
            clicked = (rng.random(len(order)) < exam) & (rng.random(len(order)) < click_probability(r, s))
            flip = rng.random(len(order)) < s.noise_rate
            label = np.where(flip, ~clicked, clicked).astype(np.int32)
            bought = (label == 1) & (r >= 2.67) & (rng.random(len(order)) < 0.3)
            ts = start + pd.to_timedelta(int(rng.integers(0, span_us)), unit="us")
            parts.append(pd.DataFrame({
                "session_id": f"s{sid:07d}", "user_id": f"u{int(rng.integers(0, 5000)):05d}",
                "event_ts": ts, "query": g["query"].iloc[0], "item_id": g["item_id"].to_numpy()[order].astype(str),
                "title": g["title"].to_numpy()[order], "position": k.astype(np.int32), "clicked": label,
                "added_to_cart": bought.astype(np.int32), "purchased": bought.astype(np.int32),
                "dwell_ms": pd.array(np.where(label == 1, rng.lognormal(9 + r, 0.5), np.nan).round(),
                                     dtype="Int64"),
                "true_relevance": r, "is_noise_click": flip,
            }))
            sid += 1
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "event_id", [f"e{i:09d}" for i in range(len(frame))])
    frame["event_ts"] = frame["event_ts"] + pd.to_timedelta(frame["position"], unit="ms")
    truth = frame[["event_id", "true_relevance", "is_noise_click"]].copy()
    return frame.drop(columns=["true_relevance", "is_noise_click"]), truth
