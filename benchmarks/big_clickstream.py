"""A large synthetic clickstream, fast: 10M rows in minutes, in the input contract `clickweight score` reads.

jobs/generate.py builds its data set in memory with a per-item Python catalog (fine up to ~1M rows);
this one is fully vectorised and writes one Parquet file per chunk, so memory stays bounded by the chunk.

- Queries: the most generic ones of a vocabulary product space (product type, then brand, colour,
  size, material: "drill", "ryobi drill", "white ceiling fan 52 in."), popularity Zipf(--zipf) over
  --queries distinct queries; generic queries sit in the head.
- Items: each query has a fixed pool of --pool candidates (exact matches, same type, same category,
  random), shown by a noisy ranker in pages of up to 10. An item is its attribute tuple, so the same
  item (item_id, title) recurs across queries; titles read like listings ("Ryobi 18-volt Drill Kit").
- True relevance per (query, item): the word-overlap grade of udfs/clickstream/synthetic_catalog.py
  (1..3) plus pair noise. Clicks, carts, purchases and dwell come from the one click simulator
  (udfs/clickstream/simulate.py) with the demo's hidden click model (jobs/generate.py DEMO_CLICKS):
  P(click) = 1 / position ** 0.8 * P(click | examined, relevance), plus noise clicks on a share of impressions.
- Deterministic for (seed, parameters, --rows-per-file): the world comes from one generator, chunk
  i from its own generator seeded by (seed, i). No malformed rows: every row passes validation.

    .venv/bin/python -m benchmarks.big_clickstream --output /tmp/big --rows 10000000 --seed 0
    .venv/bin/python -m benchmarks.big_clickstream --output /tmp/big --rows 1000000 --queries 20000 --zipf 1.2

Writes, into --output (replaced as a whole, atomically; see jobs/outputs.py check_output):
clickstream/part-NNNNN.parquet (the input for `clickweight score --input <output>/clickstream`),
truth.parquet (query, item_id, title, true_relevance, impressions, clicks per shown pair),
_summary.json (the parameters and realised counts) and the clickweight output marker.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.generate import CLICKSTREAM_SCHEMA, DEMO_CLICKS, MAX_LIST
from jobs.outputs import MARKER, LocalFS, check_output, local_path, marker, replaced_as_a_whole
from udfs.clickstream import synthetic_catalog as sc
from udfs.clickstream.simulate import SimulatorSettings, simulate_sessions
from udfs.errors import UserError

KIND = "big_clickstream"
TRUTH_SCHEMA = pa.schema([("query", pa.string()), ("item_id", pa.string()), ("title", pa.string()),
                          ("true_relevance", pa.float64()), ("impressions", pa.int64()), ("clicks", pa.int64())])
ROWS_PER_FILE = 1_000_000
ROWS_PER_QUERY = 200        # default --queries = rows / 200: about 10-30 impressions per shown pair

# Vocabularies (the demo catalog's); index 0 of every attribute slot means "absent".
TYPES = [t for ts in sc.CATEGORIES.values() for t in ts]
TYPE_CAT = np.array([ci for ci, ts in enumerate(sc.CATEGORIES.values()) for _ in ts])
CAT_START = np.searchsorted(TYPE_CAT, np.arange(len(sc.CATEGORIES)))
CAT_COUNT = np.bincount(TYPE_CAT)
SIZE_COUNT = np.array([len(sc.SIZES[c]) for c in sc.CATEGORIES])
SIZE_START = np.concatenate([[0], np.cumsum(SIZE_COUNT)[:-1]])
SIZE_WORDS = [s for c in sc.CATEGORIES for s in sc.SIZES[c]]   # per category, at SIZE_START[cat]
# Item attribute tuple (type, brand, color, size, material, finish): its index is the item id, so
# one tuple is one item (and one title) wherever it appears.
ITEM_DIMS = (len(TYPES), len(sc.BRANDS) + 1, len(sc.COLORS) + 1, int(SIZE_COUNT.max()) + 1,
             len(sc.MATERIALS) + 1, len(sc.FINISHES) + 1)
# Share of items showing each optional attribute (synthetic_catalog's _SLOT_P); every item has a brand.
ATTR_P = {"color": 0.7, "size": 0.7, "material": 0.6, "finish": 0.4}
QUERY_SLOTS = ("brand", "color", "size", "material")  # what a query may name besides the type


@dataclass
class World:
    """Queries (row q = popularity rank q) and their candidate pools, flattened as q * pool + slot."""

    query_text: pa.Array        # string, one per query
    pool_item_id: pa.Array      # string, (queries * pool)
    pool_title: pa.Array        # string, (queries * pool)
    pool_rel: np.ndarray        # (queries, pool) true relevance; -inf where a duplicate item was dropped
    popularity_cdf: np.ndarray  # Zipf over the query ranks


# ----------------------------------------------------------------------------------------------
# Text, built column-wise in Arrow (no Python object per row)
# ----------------------------------------------------------------------------------------------
def _words(vocab: list[str], idx: np.ndarray) -> pa.Array:
    """vocab[idx - 1] per row; null where idx == 0 (absent)."""
    return pa.array(vocab).take(pa.array(np.maximum(idx - 1, 0), mask=idx == 0))


def _join(*parts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*parts, " ", null_handling="skip")


def numbered(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Ids such as e0000000042, formatted in Arrow."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _size_words(size: np.ndarray, cat: np.ndarray) -> pa.Array:
    """Sizes are per category (synthetic_catalog's SIZES): index 1..count of the item's category."""
    flat = np.where(size > 0, SIZE_START[cat] + size, 0)
    return _words(SIZE_WORDS, flat)


# ----------------------------------------------------------------------------------------------
# The world: queries, pools, relevance
# ----------------------------------------------------------------------------------------------
def _queries(rng: np.random.Generator, n_queries: int) -> dict[str, np.ndarray]:
    """The n_queries most generic distinct queries (attributes in QUERY_SLOTS, 0 = absent), in
    popularity order: fewer attributes rank first, with some mixing so the head is not only bare types."""
    dims = ITEM_DIMS[:5]   # type, brand, color, size, material: what a query names
    space = int(np.prod(dims))
    t, b, c, s, m = np.unravel_index(np.arange(space, dtype=np.int64), dims)
    valid = s <= SIZE_COUNT[TYPE_CAT[t]]
    if n_queries > int(valid.sum()):
        raise UserError(f"--queries {n_queries}: the vocabulary makes {int(valid.sum())} distinct queries at most")
    level = (b > 0).astype(np.int64) + (c > 0) + (s > 0) + (m > 0)
    key = np.where(valid, level + rng.uniform(0.0, 1.5, space), np.inf)
    pick = np.argpartition(key, n_queries - 1)[:n_queries] if n_queries < space else np.arange(space)
    pick = pick[np.argsort(key[pick], kind="stable")]
    return {"type": t[pick], "brand": b[pick], "color": c[pick], "size": s[pick], "material": m[pick]}


def _random_attr(rng: np.random.Generator, shape: tuple[int, ...], n_values: np.ndarray | int, p: float) -> np.ndarray:
    """1..n_values with probability p, else 0 (absent)."""
    value = 1 + (rng.random(shape) * n_values).astype(np.int64)
    return np.where(rng.random(shape) < p, value, 0)


def _pool_items(rng: np.random.Generator, qa: dict[str, np.ndarray], pool: int) -> dict[str, np.ndarray]:
    """(queries, pool) item attributes: exact matches (the query's attributes kept, the rest drawn),
    same type, same category (another type) and random items, in that order of slots."""
    n_q = len(qa["type"])
    # 24 slots: 4 exact, 10 same type, 4 same category, 6 random (the demo's pool mix).
    n_exact, n_cat, n_rand = max(1, pool // 6), pool // 6, pool // 4
    n_type = pool - n_exact - n_cat - n_rand
    slot = np.arange(pool)[None, :]
    shape = (n_q, pool)
    qt = qa["type"][:, None]
    # Same category, another type: the category's types but the query's own, picked uniformly.
    cat = TYPE_CAT[qt]
    other = (rng.random(shape) * (CAT_COUNT[cat] - 1)).astype(np.int64)
    other = CAT_START[cat] + other + (CAT_START[cat] + other >= qt)
    typ = np.where(slot < n_exact + n_type, qt,
                   np.where(slot < n_exact + n_type + n_cat, other, rng.integers(0, len(TYPES), shape)))
    item_cat = TYPE_CAT[typ]
    items = {
        "type": typ,
        "brand": 1 + rng.integers(0, len(sc.BRANDS), shape),
        "color": _random_attr(rng, shape, len(sc.COLORS), ATTR_P["color"]),
        "size": _random_attr(rng, shape, SIZE_COUNT[item_cat], ATTR_P["size"]),
        "material": _random_attr(rng, shape, len(sc.MATERIALS), ATTR_P["material"]),
        "finish": _random_attr(rng, shape, len(sc.FINISHES), ATTR_P["finish"]),
    }
    exact = slot < n_exact
    for name in QUERY_SLOTS:   # an exact match carries what the query names
        items[name] = np.where(exact & (qa[name][:, None] > 0), qa[name][:, None], items[name])
    return items


def _relevance(rng: np.random.Generator, qa: dict[str, np.ndarray], items: dict[str, np.ndarray]) -> np.ndarray:
    """synthetic_catalog's word-overlap relevance, for all pairs at once: the product type dominates
    (2 + share of the query's attributes matched), a same-category item is a weaker match; plus pair noise."""
    named = np.stack([qa[s] > 0 for s in QUERY_SLOTS]).sum(axis=0)[:, None]
    qt = qa["type"][:, None]
    same_cat = TYPE_CAT[items["type"]] == TYPE_CAT[qt]
    matched = np.zeros(items["type"].shape)
    for s in QUERY_SLOTS:
        hit = (qa[s][:, None] > 0) & (items[s] == qa[s][:, None])
        matched += hit & same_cat if s == "size" else hit   # a size index means the same words only within a category
    has_attr = named > 0
    frac = np.where(has_attr, matched / np.maximum(named, 1), 1.0)
    rel = np.where(items["type"] == qt, 2.0 + frac,
                   np.where(same_cat, 1.25 + 0.5 * frac * has_attr, 1.0 + 0.5 * frac * has_attr))
    return np.clip(rel + rng.normal(0.0, sc.PAIR_NOISE_SD, rel.shape), 1.0, 3.0)


def _titles(items: dict[str, np.ndarray], code: np.ndarray) -> pa.Array:
    """Listing-style titles; the extras ("Kit", "(2-pack)") are a hash of the item code, so an item's
    title is the same in every pool."""
    h = (code.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)   # wraps: a cheap hash
    n_extra = ((h >> np.uint64(60)) % np.uint64(3)).astype(np.int64)
    e1 = ((h >> np.uint64(8)) % np.uint64(len(sc.EXTRAS))).astype(np.int64)
    e2 = (e1 + 1 + ((h >> np.uint64(24)) % np.uint64(len(sc.EXTRAS) - 1)).astype(np.int64)) % len(sc.EXTRAS)
    cased = {k: [sc._title_case(w) for w in v] for k, v in (
        ("brand", sc.BRANDS), ("color", sc.COLORS), ("finish", sc.FINISHES), ("material", sc.MATERIALS),
        ("type", TYPES), ("extra", sc.EXTRAS))}
    return _join(_words(cased["brand"], items["brand"]), _size_words(items["size"], TYPE_CAT[items["type"]]),
                 _words(cased["color"], items["color"]), _words(cased["finish"], items["finish"]),
                 _words(cased["material"], items["material"]), _words(cased["type"], items["type"] + 1),
                 _words(cased["extra"], np.where(n_extra >= 1, e1 + 1, 0)),
                 _words(cased["extra"], np.where(n_extra >= 2, e2 + 1, 0)))


def make_world(rng: np.random.Generator, n_queries: int, pool: int, zipf: float) -> World:
    """Queries, their fixed candidate pools and true relevance; one draw order for a generator."""
    if pool < 2:
        raise UserError("--pool must be >= 2")
    qa = _queries(rng, n_queries)
    items = _pool_items(rng, qa, pool)
    rel = _relevance(rng, qa, items)
    code = np.ravel_multi_index(tuple(items[k] for k in ("type", "brand", "color", "size", "material", "finish")),
                                ITEM_DIMS)
    # One item at most once per pool: later copies of a tuple are dropped (as pools padded with -inf).
    order = np.argsort(code, axis=1, kind="stable")
    ranked = np.take_along_axis(code, order, axis=1)
    dup = np.zeros(code.shape, dtype=bool)
    np.put_along_axis(dup, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
    rel[dup] = -np.inf
    # Queries are typed in lower case: brand, colour, material, type, size ("ryobi drill 18-volt").
    query_text = _join(_words(sc.BRANDS, qa["brand"]), _words(sc.COLORS, qa["color"]),
                       _words(sc.MATERIALS, qa["material"]), _words(TYPES, qa["type"] + 1),
                       _size_words(qa["size"], TYPE_CAT[qa["type"]]))
    flat = {k: v.ravel() for k, v in items.items()}
    weight = np.arange(1, n_queries + 1, dtype=np.float64) ** -zipf
    return World(query_text=query_text, pool_item_id=numbered("i", code.ravel(), 8),
                 pool_title=_titles(flat, code.ravel()), pool_rel=rel,
                 popularity_cdf=np.cumsum(weight) / weight.sum())


# ----------------------------------------------------------------------------------------------
# Chunks
# ----------------------------------------------------------------------------------------------
def _plan(rng: np.random.Generator, w: World, rows: int, max_list: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, page length) per session, exactly `rows` impressions: mostly full pages."""
    pool_len = np.isfinite(w.pool_rel).sum(axis=1)
    qs, lens, total = [], [], 0
    while total < rows:
        n = (rows - total) // (max_list - 1) + 16
        q = np.minimum(np.searchsorted(w.popularity_cdf, rng.random(n), side="right"), len(pool_len) - 1)
        page = np.where(rng.random(n) < 0.85, max_list, rng.integers(2, max_list + 1, n))
        page = np.minimum(page, pool_len[q])
        qs.append(q)
        lens.append(page)
        total += int(page.sum())
    sess_q, sess_len = np.concatenate(qs), np.concatenate(lens)
    cum = np.cumsum(sess_len)
    n_sess = int(np.searchsorted(cum, rows) + 1)
    sess_q, sess_len = sess_q[:n_sess], sess_len[:n_sess].copy()
    sess_len[-1] -= int(cum[n_sess - 1] - rows)   # the last page ends the chunk exactly
    return sess_q, sess_len


def chunk_table(w: World, rows: int, first_row: int, first_session: int, settings: SimulatorSettings,
                rng: np.random.Generator, max_list: int = MAX_LIST) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """One chunk in CLICKSTREAM_SCHEMA, and its (pair, query) indices and clicks for the counts."""
    sess_q, sess_len = _plan(rng, w, rows, max_list)
    imp = simulate_sessions(w.pool_rel, sess_q, sess_len, settings, rng)
    pair = imp.query * w.pool_rel.shape[1] + imp.slot
    take = pa.array(pair)
    table = pa.Table.from_arrays([
        numbered("e", first_row + np.arange(rows), 10),
        pa.array(imp.event_ts_us, type=pa.timestamp("us", tz="UTC")),
        numbered("u", imp.user, 7),
        numbered("s", first_session + imp.session, 9),
        w.query_text.take(pa.array(imp.query)),
        w.pool_item_id.take(take),
        w.pool_title.take(take),
        pa.array(imp.position, type=pa.int32()),
        pa.array(imp.clicked.astype(np.int32)),
        pa.array(imp.cart.astype(np.int32)),
        pa.array(imp.purchased.astype(np.int32)),
        pa.array(imp.dwell_ms, type=pa.int64(), mask=~imp.clicked),   # dwell only after a click, as generate
    ], schema=CLICKSTREAM_SCHEMA)
    return table, {"pair": pair, "query": imp.query, "position": imp.position, "clicked": imp.clicked,
                   "sessions": np.array(imp.sessions)}


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def default_queries(rows: int) -> int:
    return max(100, rows // ROWS_PER_QUERY)


def _counts(pair_imp: np.ndarray, query_imp: np.ndarray, pos_imp: np.ndarray, pos_clicks: np.ndarray,
            rows: int) -> dict[str, Any]:
    shown = pair_imp[pair_imp > 0]
    per_query = np.sort(query_imp[query_imp > 0])[::-1]
    top = max(1, int(np.ceil(0.01 * len(per_query))))
    return {
        "rows": rows,
        "distinct_queries": int(len(per_query)),
        "distinct_pairs": int(len(shown)),
        "impressions_per_pair": round(rows / max(1, len(shown)), 3),
        "impressions_per_pair_median": float(np.median(shown)) if len(shown) else 0.0,
        "top_1pct_query_share": round(float(per_query[:top].sum() / max(1, rows)), 4),
        "click_rate": round(float(pos_clicks.sum() / max(1, rows)), 4),
        "click_rate_by_position": {str(k): round(float(pos_clicks[k] / pos_imp[k]), 4)
                                   for k in range(1, len(pos_imp)) if pos_imp[k]},
    }


def generate(output: str, rows: int = 10_000_000, seed: int = 0, queries: int | None = None, zipf: float = 1.1,
             pool: int = 24, days: int = 7, start_date: str = "2026-01-01", noise_click_rate: float = 0.05,
             rows_per_file: int = ROWS_PER_FILE, overwrite: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Write the data set to `output` (replaced as a whole, atomically); returns the summary dict."""
    started = time.perf_counter()
    queries = default_queries(rows) if queries is None else queries
    if rows < 1 or days < 1 or queries < 1 or rows_per_file < 1:
        raise UserError("--rows, --days, --queries and --rows-per-file must be >= 1")
    if zipf <= 0:
        raise UserError("--zipf must be > 0")
    out = Path(local_path(output)).resolve()
    check_output(LocalFS(), str(out), KIND, (), overwrite)   # refuse before any work
    settings = dataclasses.replace(DEMO_CLICKS, noise_rate=noise_click_rate, start_date=start_date, days=days)
    settings.check()
    w = make_world(np.random.default_rng([seed, 0]), queries, pool, zipf)
    n_files = -(-rows // rows_per_file)
    params = {"seed": seed, "rows": rows, "queries": queries, "zipf": zipf, "pool": pool, "days": days,
              "start_date": start_date, "noise_click_rate": noise_click_rate, "rows_per_file": rows_per_file,
              "max_list": MAX_LIST}

    with replaced_as_a_whole(out) as tmp:
        (tmp / "clickstream").mkdir()
        pair_imp = np.zeros(w.pool_rel.size, dtype=np.int64)
        pair_clicks = np.zeros(w.pool_rel.size, dtype=np.int64)
        query_imp = np.zeros(queries, dtype=np.int64)
        pos_imp = np.zeros(MAX_LIST + 1, dtype=np.int64)
        pos_clicks = np.zeros(MAX_LIST + 1, dtype=np.int64)
        sessions = 0
        for i in range(n_files):
            first = i * rows_per_file
            n = min(rows_per_file, rows - first)
            table, c = chunk_table(w, n, first, sessions, settings, np.random.default_rng([seed, 1, i]))
            pq.write_table(table, tmp / "clickstream" / f"part-{i:05d}.parquet", row_group_size=128 * 1024)
            sessions += int(c["sessions"])
            pair_imp += np.bincount(c["pair"], minlength=len(pair_imp))
            pair_clicks += np.bincount(c["pair"], weights=c["clicked"], minlength=len(pair_imp)).astype(np.int64)
            query_imp += np.bincount(c["query"], minlength=queries)
            pos_imp += np.bincount(c["position"], minlength=MAX_LIST + 1)
            pos_clicks += np.bincount(c["position"], weights=c["clicked"], minlength=MAX_LIST + 1).astype(np.int64)
            if verbose:
                done = first + n
                print(f"  part {i + 1}/{n_files}: {done} rows, {done / (time.perf_counter() - started):,.0f} rows/s",
                      flush=True)
        shown = np.flatnonzero(pair_imp)
        take = pa.array(shown)
        truth = pa.Table.from_arrays([
            w.query_text.take(pa.array(shown // pool)), w.pool_item_id.take(take), w.pool_title.take(take),
            pa.array(w.pool_rel.ravel()[shown]), pa.array(pair_imp[shown]), pa.array(pair_clicks[shown]),
        ], schema=TRUTH_SCHEMA)
        pq.write_table(truth, tmp / "truth.parquet", row_group_size=128 * 1024)
        seconds = time.perf_counter() - started
        summary = {**params, **_counts(pair_imp, query_imp, pos_imp, pos_clicks, rows), "sessions": sessions,
                   "clickstream_files": n_files, "output": str(out), "seconds": round(seconds, 2),
                   "rows_per_s": round(rows / seconds), "hidden_click_model": dataclasses.asdict(settings)}
        with open(tmp / "_summary.json", "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        (tmp / MARKER).write_text(marker(KIND, tmp.name.rsplit("-", 1)[-1], str(out), rows=rows))
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: write the data set to --output and print what was realised."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.big_clickstream", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--output", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=None,
                   help=f"distinct queries (default: rows / {ROWS_PER_QUERY}, at least 100)")
    p.add_argument("--zipf", type=float, default=1.1, help="exponent of the query popularity")
    p.add_argument("--pool", type=int, default=24, help="candidate items per query")
    p.add_argument("--days", type=int, default=7, help="consecutive UTC dates covered")
    p.add_argument("--start-date", default="2026-01-01")
    p.add_argument("--noise-click-rate", type=float, default=0.05, help="noise clicks, as a share of impressions")
    p.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE, help="rows per chunk and Parquet file")
    p.add_argument("--overwrite", action="store_true", help="replace --output even if it is not this tool's output")
    a = p.parse_args(argv)
    s = generate(a.output, rows=a.rows, seed=a.seed, queries=a.queries, zipf=a.zipf, pool=a.pool, days=a.days,
                 start_date=a.start_date, noise_click_rate=a.noise_click_rate, rows_per_file=a.rows_per_file,
                 overwrite=a.overwrite)
    print(f"wrote {s['rows']} rows in {s['seconds']:.1f} s ({s['rows_per_s']:,} rows/s): {s['distinct_queries']} "
          f"queries, {s['distinct_pairs']} distinct (query, item) pairs, {s['impressions_per_pair']:.1f} "
          f"impressions per pair (median {s['impressions_per_pair_median']:g}), top 1% of queries "
          f"{100 * s['top_1pct_query_share']:.1f}% of rows, click rate {s['click_rate']:.3f} -> {s['output']}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job(KIND, main))
