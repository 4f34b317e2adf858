"""Click simulator over real graded (query, title) pairs: a clickstream whose ground truth is known.

Each session shows one query's products ranked by a noisy ranker; examination decays with
position (P(exam | k) = 1 / k**eta); a click needs examination and is then likelier the more
relevant the product (graded 1..3); purchases follow clicks on the most relevant products.
Noise: extra clicks on rows drawn uniformly from the unclicked ones (whatever their position
or relevance: misclicks, curiosity), as many as make `noise_share` of all clicks. They get the
same dwell model as real clicks and never a purchase. Pairs repeat across sessions, as in real logs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SimulatorSettings:
    sessions_per_query: float = 6.0   # mean; per-query counts are lognormal-skewed around it
    eta: float = 0.8                  # position-bias exponent (hidden from clickweight)
    ranker_noise: float = 0.6         # sd of the ranker's error on the 1..3 scale
    noise_share: float = 0.2          # share of all clicks that are noise clicks, in [0, 1)
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
    """(clickstream in the clickweight input schema, truth: event_id, true_relevance, is_noise_click,
    examined: whether the user looked at the row; hidden from clickweight, known to the oracles)."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in pairs.groupby("query", sort=True) if len(g) >= 2]
    # Skewed popularity with the stated mean: lognormal (sigma 1) scaled to mean sessions_per_query.
    # (A Zipf draw with exponent < 2 has no finite mean: normalising by the sample mean left most
    # queries at the 1-session floor, about 1-3 impressions per pair instead of the stated 6.)
    popularity = rng.lognormal(-0.5, 1.0, size=len(groups))   # E = 1
    sessions = np.maximum(1, np.round(popularity * s.sessions_per_query)).astype(int)
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
            examined = rng.random(len(order)) < exam
            clicked = examined & (rng.random(len(order)) < click_probability(r, s))
            bought = clicked & (r >= 2.67) & (rng.random(len(order)) < 0.3)
            ts = start + pd.to_timedelta(int(rng.integers(0, span_us)), unit="us")
            parts.append(pd.DataFrame({
                "session_id": f"s{sid:07d}", "user_id": f"u{int(rng.integers(0, 5000)):05d}",
                "event_ts": ts, "query": g["query"].iloc[0], "item_id": g["item_id"].to_numpy()[order].astype(str),
                "title": g["title"].to_numpy()[order], "position": k.astype(np.int32),
                "clicked": clicked.astype(np.int32),
                "added_to_cart": bought.astype(np.int32), "purchased": bought.astype(np.int32),
                "true_relevance": r, "examined": examined,
            }))
            sid += 1
    frame = pd.concat(parts, ignore_index=True)
    if not 0.0 <= s.noise_share < 1.0:
        raise ValueError("noise_share must be in [0, 1)")
    true_clicks = int(frame["clicked"].sum())
    skips = np.flatnonzero(frame["clicked"].to_numpy() == 0)
    n_noise = min(len(skips), int(round(true_clicks * s.noise_share / (1.0 - s.noise_share))))
    noise = np.zeros(len(frame), dtype=bool)
    noise[rng.choice(skips, size=n_noise, replace=False)] = True
    frame["clicked"] = (frame["clicked"].to_numpy() | noise).astype(np.int32)
    frame["is_noise_click"] = noise
    r, clicked = frame["true_relevance"].to_numpy(), frame["clicked"].to_numpy() == 1
    frame["dwell_ms"] = pd.array(np.where(clicked, rng.lognormal(9 + r, 0.5), np.nan).round(), dtype="Int64")
    frame.insert(0, "event_id", [f"e{i:09d}" for i in range(len(frame))])
    frame["event_ts"] = frame["event_ts"] + pd.to_timedelta(frame["position"], unit="ms")
    truth = frame[["event_id", "true_relevance", "is_noise_click", "examined"]].copy()
    return frame.drop(columns=["true_relevance", "is_noise_click", "examined"]), truth
