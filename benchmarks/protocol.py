"""The quality protocol's pure parts: the fixed dev/test query split, the click-model grid, and paired
differences with intervals (docs/quality.md explains how they are used).

- Queries are split once, by a hash of their text, into `dev` (every choice is made there) and
  `test` (each reported configuration runs there once). No seed, no file: the split is the same on
  every machine and for every future query set.
- Each seed draws its train and held-out queries from one side of the split only, so the seeds'
  held-out sets overlap (2,000 of the test side's 4,109 queries each: about half of them shared).
- A configuration is compared with the naive baseline on the same seed's held-out queries: the
  paired AUC difference, averaged over seeds, with two 95 % intervals beside it:
  - over held-out queries (`joint_bootstrap_auc_differences`, `combine_seeds`): each bootstrap draw
    is one set of counts over the union of the seeds' held-out queries, applied to every seed's rows
    and to every configuration (a query drawn twice counts twice on every seed that holds it), so the
    overlap between seeds is resampled once, not as if the seeds were independent;
  - over seeds (`t_interval`): mean +- t_{0.975, n-1} sd / sqrt(n) of the per-seed differences, the
    training's variance from seed to seed, which the query bootstrap does not see.
- A configuration's share of the headroom to the `truth` oracle has a percentile interval from the
  same joint draws (`share_interval`).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping, Sequence

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

# Probes of generality, outside the grid (not in `--click-models all`): click models whose examination is
# not the position-based one that clickweight's own click model fits. `cascade`: the user reads down and
# may stop after a click (the online-LTR literature's "informational" instantiation, Hofmann et al. 2011,
# on the 1..3 scale: click 0.4 to 0.9, stop 0.1 to 0.5), so a row's examination depends on the rows above
# it. `trust`: trust bias with Vardasbi et al. 2020's parameters (false clicks 0.65/k, examination 1/k), a
# noise floor that falls with position where clickweight fits one floor for all. Both added 2026-12-06,
# before any run of them; docs/quality_screens.md "Generality probes" has their rule. `good_ranker` (added the
# same day, after the first two's seed 0 and before any run of it): today's simulator with a logging
# ranker three times as sharp (noise sd 0.2 instead of 0.6 on the 1..3 scale), so a pair's position says
# much of its relevance and the position correction has more to take out with the bias (the demo's
# regime, where the default lost to naive, but at the grid's data size).
PROBE_CLICK_MODELS: dict[str, SimulatorSettings] = {
    "cascade": SimulatorSettings(click_model="cascade", noise_share=0.0, click_low=0.4, click_high=0.9,
                                 click_curve=1.0, stop_low=0.1, stop_high=0.5),
    "trust": SimulatorSettings(click_model="trust", noise_share=0.0, eta=1.0, trust_false_top=0.65),
    "good_ranker": SimulatorSettings(noise_share=0.15, ranker_noise=0.2),
}


def click_model_settings(name: str) -> SimulatorSettings:
    """A click model of the grid or a probe, by name."""
    known = {**CLICK_MODELS, **PROBE_CLICK_MODELS}
    if name not in known:
        raise ValueError(f"unknown click model {name!r}: the grid {list(CLICK_MODELS)}, "
                         f"the probes {list(PROBE_CLICK_MODELS)}")
    return known[name]


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
    """Per configuration: `replicates` bootstrap draws of AUC(config) - AUC(baseline) on ONE held-out
    set, resampling whole queries (the same resample for every configuration). Only for held-out sets
    that share no query (benchmarks/demo_seeds.py: each generator seed its own world); seeds that draw
    their held-out queries from one pool (benchmarks/quality.py) take joint_bootstrap_auc_differences."""
    _, members = _query_index(np.asarray(queries))
    rng = np.random.default_rng(seed)
    out = {name: np.empty(replicates) for name in scores if name != baseline}
    for b in range(replicates):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        base = auc(positive[rows], scores[baseline][rows])
        for name in out:
            out[name][b] = auc(positive[rows], scores[name][rows]) - base
    return out


# One seed's held-out rows: (query of each row, positive of each row, {configuration: score of each row}).
HeldOut = tuple[np.ndarray, np.ndarray, Mapping[str, np.ndarray]]


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's rank among the distinct scores (ties share one), and how many distinct scores."""
    uniques, inverse = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True)
    return inverse.reshape(-1), len(uniques)


def _counted_auc(groups: np.ndarray, n_groups: int, pos_weight: np.ndarray, neg_weight: np.ndarray) -> float:
    """ROC AUC with each row counted `weight` times (ties: half), as training.metrics.weighted_auc, from
    the rows' precomputed tie groups; nan when one class has no weight."""
    p = np.bincount(groups, pos_weight, n_groups)
    n = np.bincount(groups, neg_weight, n_groups)
    total_p, total_n = p.sum(), n.sum()
    if total_p <= 0 or total_n <= 0:
        return float("nan")
    below = np.cumsum(n) - n
    return float(p @ (below + 0.5 * n) / (total_p * total_n))


def joint_bootstrap_auc_differences(held: Mapping[Hashable, HeldOut], baseline: str, replicates: int,
                                    seed: int = 0) -> dict[str, dict[Hashable, np.ndarray]]:
    """{configuration: {seed: `replicates` draws of AUC(config) - AUC(baseline) on that seed's held-out
    rows}}, every configuration but the baseline, on the seeds it has. Each draw is ONE bootstrap
    resample of the union of every seed's held-out queries (as many queries drawn with replacement as
    the union holds): a query drawn k times has its rows counted k times on every seed that holds it and
    for every configuration (paired), so draw b of one seed and draw b of another are the same resample
    and may be averaged over seeds (combine_seeds, share_interval). Deterministic given `seed`."""
    if not held:
        return {}
    union = pd.Index(sorted(set().union(*(np.asarray(q, dtype=object).tolist() for q, _, _ in held.values()))))
    prepared = {}
    for key, (queries, positive, scores) in held.items():
        if baseline not in scores:
            raise ValueError(f"seed {key}: no {baseline!r} scores to pair the others with")
        positive = np.asarray(positive, dtype=bool)
        n_rows = len(positive)
        if len(queries) != n_rows or any(len(s) != n_rows for s in scores.values()):
            raise ValueError(f"seed {key}: queries, positives and scores differ in length")
        prepared[key] = (union.get_indexer(np.asarray(queries, dtype=object)), positive,
                         {name: _tie_groups(s) for name, s in scores.items()})
    out: dict[str, dict[Hashable, np.ndarray]] = {}
    for key, (_, _, groups) in prepared.items():
        for name in groups:
            if name != baseline:
                out.setdefault(name, {})[key] = np.empty(replicates)
    rng = np.random.default_rng(seed)
    size = len(union)
    for b in range(replicates):
        counts = np.bincount(rng.integers(0, size, size), minlength=size).astype(np.float64)
        for key, (codes, positive, groups) in prepared.items():
            w = counts[codes]
            pos_w, neg_w = np.where(positive, w, 0.0), np.where(positive, 0.0, w)
            base = _counted_auc(*groups[baseline], pos_w, neg_w)
            for name, g in groups.items():
                if name != baseline:
                    out[name][key][b] = _counted_auc(*g, pos_w, neg_w) - base
    return out


# t_{0.975, df} for df = 1..30 (scipy is not a dependency); beyond 30, the Cornish-Fisher expansion below.
T_975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def percentile_interval(point: float, draws: np.ndarray, level: float = 0.95) -> dict:
    """One held-out set's paired difference: its point estimate and the bootstrap draws' percentile interval."""
    tail = (1 - level) / 2
    return {"mean": point, "lo": float(np.quantile(draws, tail)), "hi": float(np.quantile(draws, 1 - tail))}


def t_quantile_975(df: int) -> float:
    """Student's t 97.5 % quantile with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError("a t interval needs at least two seeds (df >= 1)")
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def t_interval(point: Sequence[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """Over seeds: mean +- t_{0.975, n-1} sd / sqrt(n) of the per-seed differences (the training's
    seed-to-seed variance with the held-out queries' own); (None, None) with fewer than two seeds."""
    if level != 0.95:
        raise ValueError("only the 95 % t interval is tabulated")
    x = np.asarray(point, dtype=np.float64)
    if len(x) < 2:
        return None, None
    half = t_quantile_975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def combine_seeds(point: Sequence[float], draws: Sequence[np.ndarray], level: float = 0.95) -> dict:
    """Mean over seeds of the per-seed paired differences (`point`, one per seed) with two intervals:
    `lo`/`hi`, the percentile interval of the mean over seeds of draw b, and `t_lo`/`t_hi`, the t
    interval over seeds (t_interval; None with one seed). draws[i] is seed i's draws, and draw b must be
    the same resample on every seed: joint_bootstrap_auc_differences when the seeds' held-out queries
    overlap (quality), or bootstrap_auc_differences only when they share none (independent worlds)."""
    point = np.asarray(point, dtype=np.float64)
    if len(point) != len(draws):
        raise ValueError(f"{len(point)} seeds' differences, {len(draws)} seeds' draws")
    stacked = np.mean(np.vstack([np.asarray(d, dtype=np.float64) for d in draws]), axis=0)
    lo, hi = np.nanquantile(stacked, [(1 - level) / 2, 1 - (1 - level) / 2])
    t_lo, t_hi = t_interval(point, level)
    return {"mean": float(point.mean()), "lo": float(lo), "hi": float(hi), "seeds": int(len(point)),
            "wins": int(np.sum(point > 0)), "t_lo": t_lo, "t_hi": t_hi}


def headroom_share(config: Sequence[float], naive: Sequence[float], truth: Sequence[float]) -> float:
    """(AUC - naive) / (truth - naive), from the means over seeds (nan when truth is not above naive)."""
    gap = float(np.mean(truth) - np.mean(naive))
    return float((np.mean(config) - np.mean(naive)) / gap) if gap > 0 else float("nan")


def share_interval(numerator: Sequence[np.ndarray], denominator: Sequence[np.ndarray],
                   level: float = 0.95) -> dict:
    """Percentile interval of a share from joint draws: share_b = mean over seeds of numerator[s][b] /
    mean over seeds of denominator[s][b] (headroom: (config - naive)_b over (truth - naive)_b, the same
    draw b on every seed and for both). A draw whose denominator is <= 0 has no share (`undefined`);
    if more than (1 - level) / 2 of the draws are undefined, the interval is unbounded (lo, hi None)."""
    num = np.mean(np.vstack([np.asarray(d, dtype=np.float64) for d in numerator]), axis=0)
    den = np.mean(np.vstack([np.asarray(d, dtype=np.float64) for d in denominator]), axis=0)
    if num.shape != den.shape:
        raise ValueError("numerator and denominator draws differ in number")
    defined = den > 0
    undefined = int(len(den) - defined.sum())
    out = {"lo": None, "hi": None, "undefined": undefined, "replicates": int(len(den))}
    if len(den) == 0 or undefined > (1 - level) / 2 * len(den):
        return out
    lo, hi = np.quantile(num[defined] / den[defined], [(1 - level) / 2, 1 - (1 - level) / 2])
    return {**out, "lo": float(lo), "hi": float(hi)}
