"""Examination slots: the click model's "position" when examination depends on the click context.

With weighting.em_click_context > 0 the EM's cells are keyed by an examination slot, position +
SLOT_STRIDE x the row's click context in its search, capped at em_click_context (em_click_context_by:
how many positions below the last click above it, 0 with none, the user browsing model of Dupret and
Piwowarski (2008); or the count of clicks above it), so that each click context has its own examination
curve. A cascade user who stops after a click examines little below it;
a position-based model averages that over queries, under-correcting the pairs below a click in good
queries and over-correcting those deep in poor ones. Context 0's slots are the positions themselves, so
a log read position by position (em_click_context 0) keeps its keys. Logged positions must be below
SLOT_STRIDE: validation quarantines rows past input.max_position (default 1000), and the config check
refuses a max_position of SLOT_STRIDE or more while the click context is read (jobs/config.py).
"""
from __future__ import annotations

import numpy as np

SLOT_STRIDE = 1_000_000


def slot_context(slots) -> np.ndarray:
    """The click context of each examination slot (0: no click above the row in its search)."""
    return np.asarray(slots, dtype=np.int64) // SLOT_STRIDE


def slot_position(slots) -> np.ndarray:
    """The logged position of each examination slot."""
    return np.asarray(slots, dtype=np.int64) % SLOT_STRIDE


def position_theta(theta: dict[int, float]) -> dict[int, float]:
    """Context 0's part of a per-slot table (the examination of a row with no click above it), by position."""
    return {k: v for k, v in theta.items() if k < SLOT_STRIDE}


def marginal_by_position(theta: dict[int, float], rows: dict[int, float]) -> dict[int, float]:
    """Each position's examination averaged over its click contexts, weighted by the rows of each slot
    (a slot without rows, or absent from `theta`, counts for nothing)."""
    num: dict[int, float] = {}
    den: dict[int, float] = {}
    for slot, n in rows.items():
        if slot in theta and n > 0:
            k = slot % SLOT_STRIDE
            num[k] = num.get(k, 0.0) + n * theta[slot]
            den[k] = den.get(k, 0.0) + n
    return {k: num[k] / den[k] for k in sorted(num)}


def theta_by_context(theta: dict[int, float]) -> dict[str, dict[int, float]]:
    """A per-slot table as {context: {position: value}} (the run summary's description)."""
    out: dict[str, dict[int, float]] = {}
    for k, v in sorted(theta.items()):
        out.setdefault(str(k // SLOT_STRIDE), {})[k % SLOT_STRIDE] = v
    return out
