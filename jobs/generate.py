"""Synthetic e-commerce search clickstream with a hidden true relevance.

Used for demos, tests and benchmarks: the click log looks like a real search log (position bias,
an imperfect ranker, label noise, heavy (query, item) duplication, malformed rows), while the
ground truth that produced it is kept aside (truth.parquet, heldout.parquet) so weighting
strategies can be judged against true relevance instead of against noisy clicks.

Deterministic for a seed: every random draw comes from one ``numpy.random.default_rng(seed)``
in a fixed order; nothing depends on wall-clock time, hash seeds or set iteration order.

    python -m jobs.generate --output runs/demo/raw --rows 20000 --days 3 --seed 7
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# ----------------------------------------------------------------------------------------------
# Vocabularies. Types are grouped in categories: a same-category item (drill vs drill bit set)
# is a plausible but weaker match, which gives the relevance scale its middle grades.
# ----------------------------------------------------------------------------------------------
CATEGORIES: dict[str, list[str]] = {
    "tools": ["drill", "hammer", "screwdriver set", "circular saw", "miter saw", "tape measure",
              "utility knife", "drill bit set", "wrench set", "shop vacuum", "level"],
    "paint": ["interior paint", "exterior paint", "spray paint", "paint roller", "paint brush",
              "primer", "wood stain", "caulk"],
    "plumbing": ["faucet", "shower head", "toilet", "vanity sink", "garbage disposal", "water heater",
                 "pipe fitting", "toilet seat"],
    "lighting": ["ceiling fan", "light bulb", "pendant light", "flood light", "light switch", "outlet",
                 "extension cord", "vanity light"],
    "hardware": ["door knob", "deadbolt", "cabinet hinge", "drawer pull", "wood screws", "wall anchor",
                 "door hinge"],
    "storage": ["shelf", "storage bin", "garage cabinet", "closet organizer", "tool chest"],
    "outdoor": ["lawn mower", "garden hose", "leaf blower", "string trimmer", "patio umbrella", "grill",
                "planter"],
    "flooring": ["vinyl flooring", "carpet tile", "area rug", "floor tile", "laminate flooring"],
}
# Sizes are category-specific so titles read like real listings ("5 gal." paint, "60-watt" bulbs).
SIZES: dict[str, list[str]] = {
    "tools": ["20-volt", "18-volt", "12-volt", "25 ft.", "7-1/4 in.", "10 in.", "1/2 in."],
    "paint": ["1 gal.", "5 gal.", "1 qt.", "12 oz.", "9 in.", "2 in."],
    "plumbing": ["1/2 in.", "3/4 in.", "40 gal.", "50 gal.", "1.28 gpf", "1/3 hp"],
    "lighting": ["60-watt", "100-watt", "40-watt", "52 in.", "44 in.", "25 ft.", "15 amp"],
    "hardware": ["2-1/2 in.", "3-1/2 in.", "#8 x 1-1/4 in.", "3 in.", "5 in."],
    "storage": ["36 in.", "48 in.", "72 in.", "24 in.", "16 qt."],
    "outdoor": ["21 in.", "50 ft.", "100 ft.", "40-volt", "9 ft.", "12 in."],
    "flooring": ["12 in. x 24 in.", "8 ft. x 10 ft.", "5 ft. x 7 ft.", "6 in. x 36 in.", "24 in. x 24 in."],
}
BRANDS = ["ryobi", "dewalt", "milwaukee", "husky", "behr", "glidden", "moen", "delta", "kohler",
          "hampton bay", "ge", "philips", "kwikset", "schlage", "everbilt", "glacier bay", "rubbermaid",
          "hdx", "ego", "lifeproof", "home decorators collection", "makita"]
COLORS = ["white", "black", "gray", "silver", "bronze", "brown", "beige", "blue", "green", "red",
          "almond", "espresso", "natural", "clear"]
MATERIALS = ["steel", "stainless steel", "aluminum", "brass", "wood", "plastic", "vinyl", "glass",
             "ceramic", "copper", "fiberglass"]
FINISHES = ["satin", "matte", "semi-gloss", "brushed nickel", "oil-rubbed bronze", "chrome", "polished",
            "textured"]
EXTRAS = ["with battery", "kit", "(2-pack)", "(4-pack)", "(10-pack)", "for indoor use", "for outdoor use",
          "heavy duty", "cordless", "energy efficient", "replacement", "with remote control", "dimmable",
          "water resistant", "contractor grade", "easy install", "low profile", "smart", "soft close",
          "quick connect", "commercial", "mildew resistant", "tool-free assembly", "set", "with led light",
          "with storage bag", "for bathroom", "for kitchen", "with mounting hardware", "pro series"]

MALFORMED_KINDS = (
    "null_query", "empty_query", "null_title", "empty_title", "negative_position", "zero_position",
    "clicked_2", "clicked_negative", "long_title", "null_event_ts", "null_item_id", "duplicate_event_id",
)

# Hidden click model. Only the summary JSON carries it: downstream must estimate it from the log.
EXAM_POWER = 0.8            # P(examined | position k) = 1 / k ** EXAM_POWER
CLICK_P_MIN, CLICK_P_MAX = 0.05, 0.70     # P(click | examined) at relevance 1 and 3
CART_P_MIN, CART_P_MAX = 0.05, 0.45       # P(cart | click)
BUY_P_MIN, BUY_P_MAX = 0.20, 0.70         # P(purchase | cart)
RANKER_NOISE_SD = 0.5       # the production ranker sees relevance through this much noise
PAIR_NOISE_SD = 0.15        # pair-level deviation from the word-overlap relevance
MAX_LIST = 10
POOL_SIZE = 24              # fixed candidate pool per query -> heavy (query, item) duplication

CLICKSTREAM_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_ts", pa.timestamp("us", tz="UTC")), ("user_id", pa.string()),
    ("session_id", pa.string()), ("query", pa.string()), ("item_id", pa.string()), ("title", pa.string()),
    ("position", pa.int32()), ("clicked", pa.int32()), ("added_to_cart", pa.int32()),
    ("purchased", pa.int32()), ("dwell_ms", pa.int64()),
])
CATALOG_SCHEMA = pa.schema([("item_id", pa.string()), ("title", pa.string())])
HELDOUT_SCHEMA = pa.schema([("query", pa.string()), ("item_id", pa.string()), ("title", pa.string()),
                            ("relevance", pa.float64())])
TRUTH_SCHEMA = pa.schema([("event_id", pa.string()), ("true_relevance", pa.float64()),
                          ("is_noise_click", pa.bool_()), ("malformed_kind", pa.string())])
ROWS_PER_FILE = 1_000_000


@dataclass
class GeneratedData:
    """One generated data set. truth is row-aligned with clickstream (same length and order)."""

    clickstream: pd.DataFrame
    catalog: pd.DataFrame
    heldout: pd.DataFrame
    truth: pd.DataFrame
    # Generation parameters and the hidden click model, for the summary JSON.
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------------
_TYPES = [t for ts in CATEGORIES.values() for t in ts]
_TYPE_CAT = np.array([ci for ci, ts in enumerate(CATEGORIES.values()) for _ in ts])
_CAT_NAMES = list(CATEGORIES)
# Attribute slots shared by items and queries; -1 = absent. Size indexes its category's list.
_SLOTS = ("brand", "color", "finish", "material", "size")
_SLOT_P = {"brand": 1.0, "color": 0.7, "finish": 0.4, "material": 0.6, "size": 0.7}


def _slot_vocab(slot: str, cat: int) -> list[str]:
    return {"brand": BRANDS, "color": COLORS, "finish": FINISHES, "material": MATERIALS,
            "size": SIZES[_CAT_NAMES[cat]]}[slot]


def _words(s: str) -> int:
    return len(s.split())


_ACRONYMS = {"ge": "GE", "hdx": "HDX", "ego": "EGO", "led": "LED"}


def _title_case(s: str) -> str:
    # Listing style: capitalised words, brand acronyms upper case, sizes and "(2-pack)" left alone.
    return " ".join(_ACRONYMS.get(w) or (w if w[0].isdigit() or w[0] in "#(" else w[:1].upper() + w[1:])
                    for w in s.split())


def _make_catalog(rng: np.random.Generator, n_items: int) -> tuple[pd.DataFrame, np.ndarray, dict]:
    n_types = len(_TYPES)
    # Every type gets at least one item so every query has a true match; popular types get more.
    type_w = rng.pareto(1.5, n_types) + 1.0
    extra_types = rng.choice(n_types, n_items - n_types, p=type_w / type_w.sum())
    types = np.concatenate([np.arange(n_types), extra_types])
    rng.shuffle(types)
    attrs = {"type": types}
    for slot in _SLOTS:
        sizes = np.array([len(_slot_vocab(slot, c)) for c in range(len(_CAT_NAMES))])
        vals = (rng.random(n_items) * sizes[_TYPE_CAT[types]]).astype(np.int64)
        attrs[slot] = np.where(rng.random(n_items) < _SLOT_P[slot], vals, -1)
    n_extra = rng.integers(0, 4, n_items)
    extra_pick = rng.integers(0, len(EXTRAS), (n_items, 8))

    extra_words = [_words(e) for e in EXTRAS]
    extra_pack = ["pack)" in e for e in EXTRAS]
    types_l = types.tolist()
    slot_vals = {s: attrs[s].tolist() for s in _SLOTS}
    titles = []
    for i in range(n_items):
        t = types_l[i]
        cat = int(_TYPE_CAT[t])
        parts = {s: _slot_vocab(s, cat)[slot_vals[s][i]] if slot_vals[s][i] >= 0 else "" for s in _SLOTS}
        n_words = sum(_words(p) for p in parts.values()) + _words(_TYPES[t])
        # Long attribute combinations would break the 15-word budget: drop finish, then material,
        # and forget them in attrs too so relevance stays consistent with the visible title.
        for s in ("finish", "material"):
            if n_words > 12 and parts[s]:
                n_words -= _words(parts[s])
                parts[s] = ""
                attrs[s][i] = -1
        base = " ".join(p for p in (parts["brand"], parts["size"], parts["color"], parts["finish"],
                                    parts["material"], _TYPES[t]) if p)
        picked: list[int] = []
        has_pack = False
        for e in extra_pick[i].tolist():
            # One pack size per title at most; keep within the 15-word budget.
            if e in picked or (extra_pack[e] and has_pack) or n_words + extra_words[e] > 15:
                continue
            if len(picked) < n_extra[i] or n_words < 6:
                picked.append(e)
                n_words += extra_words[e]
                has_pack = has_pack or extra_pack[e]
        titles.append(_title_case(" ".join([base, *(EXTRAS[e] for e in picked)])))
    item_ids = np.array([f"i{i:07d}" for i in range(n_items)], dtype=object)
    catalog = pd.DataFrame({"item_id": item_ids, "title": np.array(titles, dtype=object)})
    return catalog, item_ids, attrs


# ----------------------------------------------------------------------------------------------
# Queries and relevance
# ----------------------------------------------------------------------------------------------
def _misspell(rng: np.random.Generator, text: str) -> str:
    words = text.split()
    long_idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long_idx:
        return text
    i = long_idx[int(rng.integers(len(long_idx)))]
    w = words[i]
    k = int(rng.integers(1, len(w) - 1))
    kind = int(rng.integers(4))
    if kind == 0:
        w = w[:k] + w[k + 1:]                       # dropped letter
    elif kind == 1:
        w = w[:k - 1] + w[k] + w[k - 1] + w[k + 1:]  # swapped letters
    elif kind == 2:
        w = w[:k] + w[k] + w[k:]                    # doubled letter
    else:
        w = w[:max(3, k + 1)]                       # partial word (typed query cut short)
    words[i] = w
    return " ".join(words)


def _make_queries(rng: np.random.Generator, n_queries: int, attrs: dict) -> tuple[list[str], dict]:
    n_items = len(attrs["type"])
    texts: list[str] = []
    seen: set[str] = set()
    qa: dict[str, list[int]] = {k: [] for k in ("type", "src", *_SLOTS)}
    item_slots = np.stack([attrs[s] for s in _SLOTS], axis=1)
    for _ in range(20):     # batches of draws; duplicates are skipped, so a few rounds may be needed
        if len(texts) >= n_queries:
            break
        b = 2 * (n_queries - len(texts)) + 16
        # Take attributes from a real item, so every query has at least one exact match.
        src = rng.integers(0, n_items, b)
        n_attr = rng.choice(4, b, p=[0.35, 0.4, 0.2, 0.05])
        # Random slot order; absent slots sort last, then the first n_attr present ones are used.
        key = rng.random((b, len(_SLOTS))) + (item_slots[src] < 0)
        rank = np.argsort(np.argsort(key, axis=1), axis=1)
        use = (rank < n_attr[:, None]) & (item_slots[src] >= 0)
        vals = np.where(use, item_slots[src], -1).tolist()
        typo = (rng.random(b) < 0.06).tolist()
        for k, i in enumerate(src.tolist()):
            t = int(attrs["type"][i])
            cat = int(_TYPE_CAT[t])
            v = dict(zip(_SLOTS, vals[k]))
            words = [_slot_vocab(s, cat)[v[s]] for s in ("brand", "color", "finish", "material") if v[s] >= 0]
            words.append(_TYPES[t])
            if v["size"] >= 0:
                words.append(_slot_vocab("size", cat)[v["size"]])
            text = " ".join(words)
            if typo[k]:
                text = _misspell(rng, text)
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            qa["type"].append(t)
            qa["src"].append(i)
            for s in _SLOTS:
                qa[s].append(v[s])
            if len(texts) >= n_queries:
                break
    return texts, {k: np.array(v, dtype=np.int64) for k, v in qa.items()}


def _structural_relevance(qa: dict, q: int, attrs: dict, items: np.ndarray) -> np.ndarray:
    """Word-overlap relevance: the product type dominates, attributes refine it."""
    q_slots = [s for s in _SLOTS if qa[s][q] >= 0]
    matched = np.zeros(len(items))
    for s in q_slots:
        # Size values are per-category indices: they only mean the same words inside one category.
        same = attrs[s][items] == qa[s][q]
        if s == "size":
            same &= _TYPE_CAT[attrs["type"][items]] == _TYPE_CAT[qa["type"][q]]
        matched += same
    frac = matched / len(q_slots) if q_slots else np.ones(len(items))
    item_type = attrs["type"][items]
    type_match = item_type == qa["type"][q]
    cat_match = _TYPE_CAT[item_type] == _TYPE_CAT[qa["type"][q]]
    has_attr = 1.0 if q_slots else 0.0
    return np.where(type_match, 2.0 + frac,
                    np.where(cat_match, 1.25 + 0.5 * frac * has_attr, 1.0 + 0.5 * frac * has_attr))


def _candidate_pool(rng: np.random.Generator, qa: dict, q: int, attrs: dict, by_type: list[np.ndarray],
                    by_cat: list[np.ndarray], n_items: int, n_exact: int, n_type: int, n_cat: int,
                    n_rand: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    t = qa["type"][q]
    same_type = by_type[t]
    # A bounded sample of same-type items (with replacement: cheap; duplicates are dropped below).
    sample = np.concatenate([[qa["src"][q]], same_type[rng.integers(0, len(same_type), 256)]])
    struct = _structural_relevance(qa, q, attrs, sample)
    exact = sample[np.argsort(-struct, kind="stable")[:n_exact]]   # best matches, the source first
    typed = sample[1:n_type + 1]
    cat_items = by_cat[_TYPE_CAT[t]]
    cat_items = cat_items[rng.integers(0, len(cat_items), 4 * n_cat)]
    related = cat_items[attrs["type"][cat_items] != t][:n_cat]
    rand = rng.integers(0, n_items, n_rand)
    pool = np.concatenate([exact, typed, related, rand])
    _, first = np.unique(pool, return_index=True)
    pool = pool[np.sort(first)][:size]
    rel = _structural_relevance(qa, q, attrs, pool) + rng.normal(0.0, PAIR_NOISE_SD, len(pool))
    return pool, np.clip(rel, 1.0, 3.0)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------
def _ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in idx.tolist()], dtype=object)


def _n_malformed(rows: int, fraction: float) -> int:
    if fraction <= 0 or rows < 2:
        return 0
    n = int(round(rows * fraction))
    if rows >= 500:
        n = max(n, len(MALFORMED_KINDS))   # every kind shows up at least once in any real-size run
    return min(n, rows // 2)


def generate(rows: int, days: int, seed: int, heldout_query_fraction: float = 0.2,
             noise_click_rate: float = 0.05, malformed_fraction: float = 0.01,
             start_date: str = "2026-01-01") -> GeneratedData:
    """Generate ``rows`` impressions over ``days`` UTC dates; identical output for identical args."""
    if rows < 1 or days < 1:
        raise ValueError("rows and days must be >= 1")
    if not 0.0 <= heldout_query_fraction < 1.0:
        raise ValueError("heldout_query_fraction must be in [0, 1)")
    if not 0.0 <= noise_click_rate <= 1.0 or not 0.0 <= malformed_fraction < 0.5:
        raise ValueError("noise_click_rate must be in [0, 1] and malformed_fraction in [0, 0.5)")
    rng = np.random.default_rng(seed)

    n_items = int(np.clip(rows // 20, 200, 100_000))
    catalog, item_ids, attrs = _make_catalog(rng, n_items)
    titles = catalog["title"].to_numpy()
    by_type = [np.flatnonzero(attrs["type"] == t) for t in range(len(_TYPES))]
    by_cat = [np.flatnonzero(_TYPE_CAT[attrs["type"]] == c) for c in range(len(_CAT_NAMES))]

    n_queries = int(np.clip(rows // 40, 50, 50_000))
    q_texts, qa = _make_queries(rng, n_queries, attrs)
    n_queries = len(q_texts)
    q_text_arr = np.array(q_texts, dtype=object)

    # Split by query: held-out queries never reach the clickstream (no leakage into evaluation).
    order = rng.permutation(n_queries)
    n_held = int(round(n_queries * heldout_query_fraction))
    if heldout_query_fraction > 0:
        n_held = min(max(n_held, 1), n_queries - 1)
    held_q, click_q = np.sort(order[:n_held]), np.sort(order[n_held:])

    # --- held-out graded pairs -------------------------------------------------------------
    held_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for q in held_q.tolist():
        size = int(rng.integers(8, 17))
        pool, rel = _candidate_pool(rng, qa, q, attrs, by_type, by_cat, n_items,
                                    n_exact=2, n_type=size // 2, n_cat=2, n_rand=size, size=size)
        held_rows.append((np.full(len(pool), q), pool, rel))
    if held_rows:
        hq, hi, hr = (np.concatenate(x) for x in zip(*held_rows))
    else:
        hq, hi, hr = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    heldout = pd.DataFrame({"query": q_text_arr[hq], "item_id": item_ids[hi], "title": titles[hi],
                            "relevance": hr.astype(np.float64)})

    # --- clickstream query pools (fixed per query: the same pairs recur across sessions) ----
    nq_click = len(click_q)
    pool_items = np.full((nq_click, POOL_SIZE), -1, dtype=np.int64)
    pool_rel = np.full((nq_click, POOL_SIZE), -np.inf)
    for j, q in enumerate(click_q.tolist()):
        pool, rel = _candidate_pool(rng, qa, q, attrs, by_type, by_cat, n_items,
                                    n_exact=4, n_type=10, n_cat=4, n_rand=8, size=POOL_SIZE)
        pool_items[j, :len(pool)] = pool
        pool_rel[j, :len(pool)] = rel
    pool_len = (pool_items >= 0).sum(axis=1)

    # --- sessions: Zipf-like query popularity, mostly full pages of 10 -----------------------
    n_mal = _n_malformed(rows, malformed_fraction)
    n_good = rows - n_mal
    q_pop = 1.0 / (np.arange(1, nq_click + 1) + 5.0) ** 1.0
    q_pop = q_pop[rng.permutation(nq_click)]
    q_pop /= q_pop.sum()
    # Tiny runs get shorter pages so there are at least `days` sessions to spread over the dates.
    page_cap = min(MAX_LIST, max(1, n_good // days))
    sess_q = np.zeros(0, dtype=np.int64)
    sess_len = np.zeros(0, dtype=np.int64)
    while sess_len.sum() < n_good:
        n_new = max(16, int((n_good - sess_len.sum()) / 8.5) + 16)
        new_q = rng.choice(nq_click, n_new, p=q_pop)
        new_len = np.where(rng.random(n_new) < 0.85, MAX_LIST, rng.integers(2, MAX_LIST, n_new))
        sess_q = np.concatenate([sess_q, new_q])
        sess_len = np.concatenate([sess_len, np.minimum(np.minimum(new_len, page_cap), pool_len[new_q])])
    cum = np.cumsum(sess_len)
    n_sess = int(np.searchsorted(cum, n_good) + 1)
    sess_q, sess_len = sess_q[:n_sess], sess_len[:n_sess].copy()
    sess_len[-1] -= int(cum[n_sess - 1] - n_good)   # trim the last page so the count is exact

    # The ranker orders each session's pool by a noisy view of true relevance.
    scores = pool_rel[sess_q] + rng.normal(0.0, RANKER_NOISE_SD, (n_sess, POOL_SIZE))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :MAX_LIST]
    ranked_items = np.take_along_axis(pool_items[sess_q], top, axis=1)
    ranked_rel = np.take_along_axis(pool_rel[sess_q], top, axis=1)
    mask = np.arange(1, MAX_LIST + 1)[None, :] <= sess_len[:, None]

    # Session start times: one UTC day each (every day covered), daytime-heavy clock.
    sess_day = rng.integers(0, days, n_sess)
    sess_day[:min(days, n_sess)] = np.arange(min(days, n_sess))
    sod = np.clip(rng.normal(14 * 3600, 4 * 3600, n_sess) % 86400, 0, 86400 - 60)
    start_us = np.datetime64(start_date, "D").astype("datetime64[us]").astype(np.int64)
    sess_ts = start_us + (sess_day * 86400 + sod).astype(np.int64) * 1_000_000 \
        + rng.integers(0, 1_000_000, n_sess)
    t_order = np.argsort(sess_ts, kind="stable")
    sess_q, sess_ts = sess_q[t_order], sess_ts[t_order]
    ranked_items, ranked_rel, mask = ranked_items[t_order], ranked_rel[t_order], mask[t_order]
    n_users = max(10, n_sess // 4)
    user_pop = 1.0 / np.arange(1, n_users + 1) ** 0.9
    sess_user = rng.choice(n_users, n_sess, p=user_pop / user_pop.sum())

    # Flatten to impressions (row-major keeps session then position order).
    s_idx, p_idx = np.nonzero(mask)
    item = ranked_items[s_idx, p_idx]
    rel = ranked_rel[s_idx, p_idx]
    position = (p_idx + 1).astype(np.int32)
    ts_us = sess_ts[s_idx] + p_idx.astype(np.int64) * 1000   # impressions logged 1 ms apart

    # --- click model -------------------------------------------------------------------------
    g = (rel - 1.0) / 2.0
    examined = rng.random(n_good) < 1.0 / position ** EXAM_POWER
    clicked = examined & (rng.random(n_good) < CLICK_P_MIN + (CLICK_P_MAX - CLICK_P_MIN) * g)
    noise = rng.random(n_good) < noise_click_rate
    clicked = clicked ^ noise
    cart = clicked & (rng.random(n_good) < CART_P_MIN + (CART_P_MAX - CART_P_MIN) * g)
    bought = cart & (rng.random(n_good) < BUY_P_MIN + (BUY_P_MAX - BUY_P_MIN) * g)
    # Relevant items hold attention longer; noise clicks are mostly quick bounces.
    log_mu = np.where(noise, np.log(3000.0), np.log(8000.0) + 0.8 * (rel - 1.0))
    dwell = np.round(np.exp(log_mu + rng.normal(0.0, 0.8, n_good))).astype(np.int64)

    # --- malformed rows: damaged copies of good rows, inserted at random places ---------------
    kinds = np.array([MALFORMED_KINDS[i % len(MALFORMED_KINDS)] for i in range(n_mal)], dtype=object)
    if n_mal > len(MALFORMED_KINDS):
        kinds[len(MALFORMED_KINDS):] = rng.choice(np.array(MALFORMED_KINDS, dtype=object),
                                                  n_mal - len(MALFORMED_KINDS))
    src = rng.integers(0, n_good, n_mal)
    keys = np.concatenate([np.arange(n_good, dtype=np.float64), rng.uniform(-0.5, n_good - 0.5, n_mal)])
    final = np.argsort(keys, kind="stable")            # final row r shows combined row final[r]
    where = np.empty(rows, dtype=np.int64)
    where[final] = np.arange(rows)                     # combined row -> final position
    comb = np.concatenate([np.arange(n_good), src])    # combined row -> good row it copies

    def take(a: np.ndarray) -> np.ndarray:
        return a[comb][final]

    sess_ids = _ids("s", np.arange(n_sess), 8)
    user_ids = _ids("u", np.arange(n_users), 7)
    event_id = _ids("e", np.arange(rows), 9)
    cols: dict[str, np.ndarray] = {
        "event_ts": take(ts_us),
        "user_id": take(user_ids[sess_user][s_idx]),
        "session_id": take(sess_ids[s_idx]),
        "query": take(q_text_arr[click_q][sess_q][s_idx]),
        "item_id": take(item_ids[item]),
        "title": take(titles[item]),
        "position": take(position),
        "clicked": take(clicked.astype(np.int32)),
        "added_to_cart": take(cart.astype(np.int32)),
        "purchased": take(bought.astype(np.int32)),
        "dwell_ms": take(dwell),
    }
    dwell_null = take(~clicked)
    ts_null = np.zeros(rows, dtype=bool)
    malformed_kind = np.full(rows, None, dtype=object)
    for k in range(n_mal):
        r = where[n_good + k]
        kind = kinds[k]
        malformed_kind[r] = kind
        if kind == "null_query":
            cols["query"][r] = None
        elif kind == "empty_query":
            cols["query"][r] = "" if k % 2 == 0 else "   "
        elif kind == "null_title":
            cols["title"][r] = None
        elif kind == "empty_title":
            cols["title"][r] = ""
        elif kind == "negative_position":
            cols["position"][r] = -int(rng.integers(1, MAX_LIST + 1))
        elif kind == "zero_position":
            cols["position"][r] = 0
        elif kind == "clicked_2":
            cols["clicked"][r] = 2
        elif kind == "clicked_negative":
            cols["clicked"][r] = -1
        elif kind == "long_title":
            t = cols["title"][r]
            cols["title"][r] = (t + " ") * (5200 // (len(t) + 1) + 1) + "x" * 100
        elif kind == "null_event_ts":
            ts_null[r] = True
        elif kind == "null_item_id":
            cols["item_id"][r] = None
        elif kind == "duplicate_event_id":
            # A replayed event: an exact copy of its source row, id included.
            event_id[r] = event_id[where[src[k]]]

    event_ts = pd.Series(cols.pop("event_ts").astype("datetime64[us]"))
    event_ts[ts_null] = pd.NaT
    dwell_ms = pd.array(cols.pop("dwell_ms"), dtype="Int64")
    dwell_ms[dwell_null] = pd.NA
    clickstream = pd.DataFrame({
        "event_id": event_id,
        "event_ts": event_ts.dt.tz_localize("UTC"),
        **{k: cols[k] for k in ("user_id", "session_id", "query", "item_id", "title", "position",
                                "clicked", "added_to_cart", "purchased")},
        "dwell_ms": dwell_ms,
    })
    truth = pd.DataFrame({
        "event_id": event_id.copy(),
        "true_relevance": take(rel).astype(np.float64),
        "is_noise_click": take(noise).astype(bool),
        "malformed_kind": malformed_kind,
    })
    meta = {
        "seed": seed, "rows": rows, "days": days, "start_date": start_date,
        "heldout_query_fraction": heldout_query_fraction, "noise_click_rate": noise_click_rate,
        "malformed_fraction": malformed_fraction, "sessions": n_sess, "users": n_users,
        "hidden_click_model": {
            "examination": f"1 / position ** {EXAM_POWER}", "exam_power": EXAM_POWER,
            "click_given_examined": f"{CLICK_P_MIN} + {CLICK_P_MAX - CLICK_P_MIN:.2f} * (rel - 1) / 2",
            "cart_given_click": f"{CART_P_MIN} + {CART_P_MAX - CART_P_MIN:.2f} * (rel - 1) / 2",
            "purchase_given_cart": f"{BUY_P_MIN} + {BUY_P_MAX - BUY_P_MIN:.2f} * (rel - 1) / 2",
            "noise_click_rate": noise_click_rate, "ranker_noise_sd": RANKER_NOISE_SD,
        },
    }
    return GeneratedData(clickstream=clickstream, catalog=catalog, heldout=heldout, truth=truth, meta=meta)


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def summarize(data: GeneratedData) -> dict[str, Any]:
    """Counts for the summary JSON; click rates are over good (non-malformed) rows only."""
    cs, truth = data.clickstream, data.truth
    good = truth["malformed_kind"].isna().to_numpy()
    g = cs[good]
    kinds = truth.loc[~good, "malformed_kind"].value_counts().sort_index()
    return {
        **{k: data.meta[k] for k in ("seed", "days", "start_date", "heldout_query_fraction",
                                     "noise_click_rate", "malformed_fraction") if k in data.meta},
        "rows": int(len(cs)),
        "good_rows": int(good.sum()),
        "malformed_rows": int((~good).sum()),
        "malformed_by_kind": {str(k): int(v) for k, v in kinds.items()},
        "sessions": int(g["session_id"].nunique()),
        "users": int(g["user_id"].nunique()),
        "distinct_queries": int(g["query"].nunique()),
        "distinct_items": int(g["item_id"].nunique()),
        "distinct_pairs": int(len(g[["query", "item_id"]].drop_duplicates())),
        "catalog_items": int(len(data.catalog)),
        "heldout_queries": int(data.heldout["query"].nunique()),
        "heldout_pairs": int(len(data.heldout)),
        "click_rate": float(g["clicked"].mean()) if len(g) else 0.0,
        "cart_rate": float(g["added_to_cart"].mean()) if len(g) else 0.0,
        "purchase_rate": float(g["purchased"].mean()) if len(g) else 0.0,
        "noise_clicks": int(truth.loc[good, "is_noise_click"].sum()),
        "hidden_click_model": data.meta.get("hidden_click_model", {}),
    }


def _write_parquet(df: pd.DataFrame, schema: pa.Schema, path: Path) -> None:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path, row_group_size=128 * 1024)


def write(data: GeneratedData, output_dir: str) -> dict[str, Any]:
    """Write all tables, replacing ``output_dir`` as a whole; returns the summary dict."""
    out = Path(output_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    # Build beside the target so the final renames stay on one filesystem.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        cs_dir = tmp / "clickstream"
        cs_dir.mkdir()
        n_files = max(1, -(-len(data.clickstream) // ROWS_PER_FILE))
        bounds = np.linspace(0, len(data.clickstream), n_files + 1).astype(int)
        for i in range(n_files):
            _write_parquet(data.clickstream.iloc[bounds[i]:bounds[i + 1]], CLICKSTREAM_SCHEMA,
                           cs_dir / f"part-{i:05d}.parquet")
        _write_parquet(data.catalog, CATALOG_SCHEMA, tmp / "catalog.parquet")
        _write_parquet(data.heldout, HELDOUT_SCHEMA, tmp / "heldout.parquet")
        _write_parquet(data.truth, TRUTH_SCHEMA, tmp / "truth.parquet")
        summary = {**summarize(data), "output": str(out), "clickstream_files": n_files}
        with open(tmp / "_generate_summary.json", "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        # Swap: old away, new in, then delete old, so readers never see a half-written folder.
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "data")
        os.rename(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.rename(old / "data", out)    # put the previous data set back
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: generate a data set and write it to --output."""
    p = argparse.ArgumentParser(prog="python -m jobs.generate", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--output", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--rows", type=int, default=20000, help="clickstream rows, malformed included")
    p.add_argument("--days", type=int, default=3, help="consecutive UTC dates covered")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--heldout-query-fraction", type=float, default=0.2)
    p.add_argument("--noise-click-rate", type=float, default=0.05)
    p.add_argument("--malformed-fraction", type=float, default=0.01)
    p.add_argument("--start-date", default="2026-01-01")
    a = p.parse_args(argv)
    data = generate(a.rows, a.days, a.seed, heldout_query_fraction=a.heldout_query_fraction,
                    noise_click_rate=a.noise_click_rate, malformed_fraction=a.malformed_fraction,
                    start_date=a.start_date)
    s = write(data, a.output)
    print(f"generated {s['rows']} rows ({s['malformed_rows']} malformed, {s['sessions']} sessions, "
          f"{s['distinct_queries']} queries, {s['distinct_items']} items, {s['days']} days, "
          f"click rate {s['click_rate']:.3f}) and {s['heldout_pairs']} held-out pairs -> {s['output']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
