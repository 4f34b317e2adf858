"""The demo's synthetic world: a home-improvement catalog, search queries, and their true relevance.

jobs/generate.py builds one of these, then lets the click simulator (udfs/clickstream/simulate.py) show the
candidates of each query to simulated users. Relevance is word overlap between the query and the
item's attributes on the 1..3 scale: the product type dominates, attributes refine it, a
same-category item (drill vs drill bit set) is a plausible but weaker match.

Deterministic for a generator: every draw comes from the ``numpy.random.Generator`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
PAIR_NOISE_SD = 0.15        # pair-level deviation from the word-overlap relevance


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


@dataclass
class World:
    """Catalog items with their attributes, and queries with theirs (qa: the attributes, the source
    item it was written from). by_type / by_cat: item indices per product type / category."""

    catalog: pd.DataFrame
    item_ids: np.ndarray
    titles: np.ndarray
    attrs: dict[str, np.ndarray]
    by_type: list[np.ndarray]
    by_cat: list[np.ndarray]
    queries: np.ndarray
    qa: dict[str, np.ndarray]


def make_world(rng: np.random.Generator, n_items: int, n_queries: int) -> World:
    """A catalog of n_items and up to n_queries distinct queries (fewer only if the draws run dry)."""
    catalog, item_ids, attrs = _make_catalog(rng, n_items)
    q_texts, qa = _make_queries(rng, n_queries, attrs)
    return World(catalog=catalog, item_ids=item_ids, titles=catalog["title"].to_numpy(), attrs=attrs,
                 by_type=[np.flatnonzero(attrs["type"] == t) for t in range(len(_TYPES))],
                 by_cat=[np.flatnonzero(_TYPE_CAT[attrs["type"]] == c) for c in range(len(_CAT_NAMES))],
                 queries=np.array(q_texts, dtype=object), qa=qa)


def candidate_pool(rng: np.random.Generator, w: World, q: int, n_exact: int, n_type: int, n_cat: int,
                   n_rand: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `size` distinct candidate items for query q (best matches first, then same-type,
    same-category and random items) and their true relevance (1..3, with pair-level noise)."""
    qa, attrs, by_type, by_cat, n_items = w.qa, w.attrs, w.by_type, w.by_cat, len(w.item_ids)
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
