"""The quality protocol's pure parts: the fixed dev/test query split, the click-model grid, and paired
differences with intervals (docs/quality.md explains how they are used).

- Queries are split once, by a hash of their text, into `dev` (every choice is made there) and
  `test` (each reported configuration runs there once). No seed, no file: the split is the same on
  every machine and for every future query set.
- Each seed draws its train and held-out queries from one side of the split only.
- A configuration is compared with the naive baseline on the same seed's held-out queries: the
  paired AUC difference, with a 95 % interval from a bootstrap over held-out queries (resampled
  within each seed, the same resample for both models), averaged over seeds.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from training.metrics import auc
from udfs.clickstream.simulate import SimulatorSettings

SPLITS = ("dev", "test")

# The grid of click models (issue 24). `graded` is the simulator the earlier benchmarks used; `pbm_*`
# the unbiased-LTR literature's position-based model, examination (1/k)^eta, click on an examined item
# epsilon + (1 - epsilon)(2^g - 1)/(2^g_max - 1), epsilon = 0.1, no noise clicks, carts after real
# clicks; `flip*` heavy noise: that share of impressions has its click replaced by a coin flip (clicks
# removed as well as added), stronger position bias, and no carts or purchases to tell flips apart.
CLICK_MODELS: dict[str, SimulatorSettings] = {
    "graded": SimulatorSettings(noise_share=0.15),
    "pbm_eta0.5": SimulatorSettings(click_model="pbm", eta=0.5, noise_share=0.0),
    "pbm_eta1": SimulatorSettings(click_model="pbm", eta=1.0, noise_share=0.0),
    "pbm_eta2": SimulatorSettings(click_model="pbm", eta=2.0, noise_share=0.0),
    "flip10": SimulatorSettings(noise_share=0.0, flip_rate=0.10, eta=1.2, cart_low=0.0, cart_high=0.0),
    "flip20": SimulatorSettings(noise_share=0.0, flip_rate=0.20, eta=1.2, cart_low=0.0, cart_high=0.0),
}


def query_split(query: str) -> str:
    """`dev` or `test` for a query, from a hash of its normalised text (fixed forever)."""
    digest = hashlib.sha256(" ".join(str(query).lower().split()).encode()).digest()
    return SPLITS[digest[0] & 1]


def split_queries(queries: Sequence[str], split: str) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    return np.array(sorted(q for q in set(queries) if query_split(q) == split), dtype=object)


def sample_split(pairs: pd.DataFrame, split: str, train_queries: int, heldout_queries: int, seed: int
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed's (train, held-out) graded pairs, both drawn from the `split` side's queries only
    (AUC is then taken over all held-out pairs together)."""
    queries = split_queries(pairs["query"].tolist(), split)
    need = train_queries + heldout_queries
    if need > len(queries):
        raise ValueError(f"the {split} split has {len(queries)} queries; {need} were asked for")
    rng = np.random.default_rng(7919 * (seed + 1) + SPLITS.index(split))
    chosen = rng.permutation(queries)[:need]
    train, held = set(chosen[:train_queries].tolist()), set(chosen[train_queries:].tolist())
    return (pairs[pairs["query"].isin(train)].reset_index(drop=True),
            pairs[pairs["query"].isin(held)].reset_index(drop=True))


def _query_index(queries: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    codes, uniques = pd.factorize(queries, sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return codes, [order[bounds[i]:bounds[i + 1]] for i in range(len(uniques))]


def bootstrap_auc_differences(queries: np.ndarray, positive: np.ndarray, scores: Mapping[str, np.ndarray],
                              baseline: str, replicates: int, seed: int) -> dict[str, np.ndarray]:
    """Per configuration: `replicates` bootstrap draws of AUC(config) - AUC(baseline) on one seed's
    held-out pairs, resampling whole queries (the same resample for every configuration)."""
    _, members = _query_index(np.asarray(queries))
    rng = np.random.default_rng(seed)
    out = {name: np.empty(replicates) for name in scores if name != baseline}
    for b in range(replicates):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        base = auc(positive[rows], scores[baseline][rows])
        for name in out:
            out[name][b] = auc(positive[rows], scores[name][rows]) - base
    return out


def combine_seeds(point: Sequence[float], draws: Sequence[np.ndarray], level: float = 0.95) -> dict[str, float]:
    """Mean over seeds of the per-seed paired differences, and a percentile interval from the mean of
    the seeds' bootstrap draws (seeds independent, so draw b of each seed is combined)."""
    point = np.asarray(point, dtype=np.float64)
    stacked = np.mean(np.vstack([np.asarray(d) for d in draws]), axis=0)
    lo, hi = np.quantile(stacked, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": float(point.mean()), "lo": float(lo), "hi": float(hi), "seeds": int(len(point)),
            "wins": int(np.sum(point > 0))}


def headroom_share(config: Sequence[float], naive: Sequence[float], truth: Sequence[float]) -> float:
    """(AUC - naive) / (truth - naive), from the means over seeds (nan when truth is not above naive)."""
    gap = float(np.mean(truth) - np.mean(naive))
    return float((np.mean(config) - np.mean(naive)) / gap) if gap > 0 else float("nan")
