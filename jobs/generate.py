"""Synthetic e-commerce search clickstream with a hidden true relevance (the demo data).

Used for demos, tests and benchmarks: the click log looks like a real search log (position bias,
an imperfect ranker, label noise, heavy (query, item) duplication, malformed rows), while the
ground truth that produced it is kept aside (truth.parquet, heldout.parquet) so weighting
strategies can be judged against true relevance instead of against noisy clicks.

The demo's parts live here: the query split, held-out pairs, fixed candidate pools, query
popularity and page lengths, malformed rows and writing. The catalog, queries and their true
relevance come from udfs/clickstream/synthetic_catalog.py; the clicks from the one click simulator,
udfs/clickstream/simulate.py (ranker, examination, clicks, carts, purchases, dwell, noise clicks), with the
demo's click model DEMO_CLICKS.

Deterministic for a seed: every random draw comes from one ``numpy.random.default_rng(seed)``
in a fixed order; nothing depends on wall-clock time, hash seeds or set iteration order.

    python -m jobs.generate --output runs/demo/raw --rows 20000 --days 3 --seed 7
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.outputs import MARKER, LocalFS, check_output, local_path, marker, replaced_as_a_whole
from udfs.clickstream.simulate import SimulatorSettings, clickstream_columns, clickstream_frame, ids, simulate_sessions
from udfs.clickstream.synthetic_catalog import World, candidate_pool, make_world
from udfs.errors import UserError

MALFORMED_KINDS = (
    "null_query", "empty_query", "null_title", "empty_title", "negative_position", "zero_position",
    "clicked_2", "clicked_negative", "long_title", "null_event_ts", "null_item_id", "duplicate_event_id",
)

# Hidden click model. Only the summary JSON carries it: downstream must estimate it from the log.
# Noise clicks are a share of all impressions here (generate's noise_click_rate), quick bounces.
DEMO_CLICKS = SimulatorSettings(
    eta=0.8,                                  # P(examined | position k) = 1 / k ** 0.8
    ranker_noise=0.5,                         # the production ranker sees relevance through this noise
    click_low=0.05, click_high=0.70, click_curve=1.0,            # P(click | examined), linear
    cart_low=0.05, cart_high=0.45, cart_min_relevance=1.0,       # P(cart | click)
    buy_low=0.20, buy_high=0.70,                                 # P(purchase | cart)
    dwell_log_ms=float(np.log(8000.0)), dwell_per_grade=0.8, dwell_sd=0.8,
    noise_dwell_log_ms=float(np.log(3000.0)),
)
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
# Queries, candidates, sessions
# ----------------------------------------------------------------------------------------------
def _split_queries(rng: np.random.Generator, n_queries: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, click) query indices: held-out queries never reach the clickstream."""
    order = rng.permutation(n_queries)
    n_held = int(round(n_queries * fraction))
    if fraction > 0:
        n_held = min(max(n_held, 1), n_queries - 1)
    return np.sort(order[:n_held]), np.sort(order[n_held:])


def _heldout(rng: np.random.Generator, w: World, held_q: np.ndarray) -> pd.DataFrame:
    """Graded (query, item) pairs of the held-out queries, 8..16 per query."""
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for q in held_q.tolist():
        size = int(rng.integers(8, 17))
        pool, rel = candidate_pool(rng, w, q, n_exact=2, n_type=size // 2, n_cat=2, n_rand=size, size=size)
        rows.append((np.full(len(pool), q), pool, rel))
    if rows:
        hq, hi, hr = (np.concatenate(x) for x in zip(*rows))
    else:
        hq, hi, hr = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return pd.DataFrame({"query": w.queries[hq], "item_id": w.item_ids[hi], "title": w.titles[hi],
                         "relevance": hr.astype(np.float64)})


def _click_pools(rng: np.random.Generator, w: World, click_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed candidates per click query (the same pairs recur across sessions): (items, relevance),
    each (queries, POOL_SIZE), padded with -1 / -inf."""
    items = np.full((len(click_q), POOL_SIZE), -1, dtype=np.int64)
    rel = np.full((len(click_q), POOL_SIZE), -np.inf)
    for j, q in enumerate(click_q.tolist()):
        pool, r = candidate_pool(rng, w, q, n_exact=4, n_type=10, n_cat=4, n_rand=8, size=POOL_SIZE)
        items[j, :len(pool)] = pool
        rel[j, :len(pool)] = r
    return items, rel


def _plan_sessions(rng: np.random.Generator, pool_len: np.ndarray, n_good: int,
                   days: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, page length) per session: Zipf-like query popularity, mostly full pages of 10,
    exactly n_good impressions in all."""
    nq = len(pool_len)
    q_pop = 1.0 / (np.arange(1, nq + 1) + 5.0) ** 1.0
    q_pop = q_pop[rng.permutation(nq)]
    q_pop /= q_pop.sum()
    # Tiny runs get shorter pages so there are at least `days` sessions to spread over the dates.
    page_cap = min(MAX_LIST, max(1, n_good // days))
    sess_q = np.zeros(0, dtype=np.int64)
    sess_len = np.zeros(0, dtype=np.int64)
    while sess_len.sum() < n_good:
        n_new = max(16, int((n_good - sess_len.sum()) / 8.5) + 16)
        new_q = rng.choice(nq, n_new, p=q_pop)
        new_len = np.where(rng.random(n_new) < 0.85, MAX_LIST, rng.integers(2, MAX_LIST, n_new))
        sess_q = np.concatenate([sess_q, new_q])
        sess_len = np.concatenate([sess_len, np.minimum(np.minimum(new_len, page_cap), pool_len[new_q])])
    cum = np.cumsum(sess_len)
    n_sess = int(np.searchsorted(cum, n_good) + 1)
    sess_q, sess_len = sess_q[:n_sess], sess_len[:n_sess].copy()
    sess_len[-1] -= int(cum[n_sess - 1] - n_good)   # trim the last page so the count is exact
    return sess_q, sess_len


# ----------------------------------------------------------------------------------------------
# Malformed rows: damaged copies of good rows, inserted at random places
# ----------------------------------------------------------------------------------------------
def _n_malformed(rows: int, fraction: float) -> int:
    if fraction <= 0 or rows < 2:
        return 0
    n = int(round(rows * fraction))
    if rows >= 500:
        n = max(n, len(MALFORMED_KINDS))   # every kind shows up at least once in any real-size run
    return min(n, rows // 2)


def _malformed_layout(rng: np.random.Generator, n_good: int,
                      n_mal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kind of each malformed row, the good row it copies, good row shown by each final row,
    final row of each combined row: good rows first, then the malformed ones)."""
    kinds = np.array([MALFORMED_KINDS[i % len(MALFORMED_KINDS)] for i in range(n_mal)], dtype=object)
    if n_mal > len(MALFORMED_KINDS):
        kinds[len(MALFORMED_KINDS):] = rng.choice(np.array(MALFORMED_KINDS, dtype=object),
                                                  n_mal - len(MALFORMED_KINDS))
    src = rng.integers(0, n_good, n_mal)
    keys = np.concatenate([np.arange(n_good, dtype=np.float64), rng.uniform(-0.5, n_good - 0.5, n_mal)])
    final = np.argsort(keys, kind="stable")            # final row r shows combined row final[r]
    where = np.empty(n_good + n_mal, dtype=np.int64)
    where[final] = np.arange(n_good + n_mal)           # combined row -> final position
    comb = np.concatenate([np.arange(n_good), src])    # combined row -> good row it copies
    return kinds, src, comb[final], where


def _damage(rng: np.random.Generator, cols: dict[str, np.ndarray], kinds: np.ndarray, src: np.ndarray,
            where: np.ndarray, n_good: int) -> tuple[np.ndarray, np.ndarray]:
    """Damage the malformed rows of cols in place; (malformed_kind per row, null event_ts mask)."""
    rows = len(cols["event_id"])
    ts_null = np.zeros(rows, dtype=bool)
    malformed_kind = np.full(rows, None, dtype=object)
    for k, kind in enumerate(kinds.tolist()):
        r = where[n_good + k]
        malformed_kind[r] = kind
        if kind in ("null_query", "null_title", "null_item_id"):
            cols[kind[len("null_"):]][r] = None
        elif kind == "empty_query":
            cols["query"][r] = "" if k % 2 == 0 else "   "
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
        elif kind == "duplicate_event_id":
            # A replayed event: an exact copy of its source row, id included.
            cols["event_id"][r] = cols["event_id"][where[src[k]]]
    return malformed_kind, ts_null


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------
def _hidden_click_model(s: SimulatorSettings) -> dict[str, Any]:
    return {
        "examination": f"1 / position ** {s.eta}", "exam_power": s.eta,
        "click_given_examined": f"{s.click_low} + {s.click_high - s.click_low:.2f} * (rel - 1) / 2",
        "cart_given_click": f"{s.cart_low} + {s.cart_high - s.cart_low:.2f} * (rel - 1) / 2",
        "purchase_given_cart": f"{s.buy_low} + {s.buy_high - s.buy_low:.2f} * (rel - 1) / 2",
        "noise_click_rate": s.noise_rate, "noise_clicks": "uniform on unclicked rows, never carted",
        "ranker_noise_sd": s.ranker_noise,
    }


def generate(rows: int, days: int, seed: int, heldout_query_fraction: float = 0.2,
             noise_click_rate: float = 0.05, malformed_fraction: float = 0.01,
             start_date: str = "2026-01-01", queries: int | None = None,
             items: int | None = None) -> GeneratedData:
    """Generate ``rows`` impressions over ``days`` UTC dates; identical output for identical args.

    The world (catalogue ``items``, ``queries``) is sized from ``rows`` unless given (rows // 20 items,
    rows // 40 queries: about 4 impressions a (query, item) pair). Given, more rows over the same world
    are more sessions of the same pairs: the same seed and sizes draw the same catalogue, queries and
    held-out pairs whatever ``rows`` is."""
    if rows < 1 or days < 1:
        raise UserError("rows and days must be >= 1")
    if not 0.0 <= heldout_query_fraction < 1.0:
        raise UserError("heldout_query_fraction must be in [0, 1)")
    if not 0.0 <= noise_click_rate <= 1.0 or not 0.0 <= malformed_fraction < 0.5:
        raise UserError("noise_click_rate must be in [0, 1] and malformed_fraction in [0, 0.5)")
    if (queries is not None and queries < 2) or (items is not None and items < 10):
        raise UserError("queries must be >= 2 and items >= 10 (or null: sized from rows)")
    rng = np.random.default_rng(seed)
    w = make_world(rng, n_items=int(np.clip(rows // 20, 200, 100_000)) if items is None else items,
                   n_queries=int(np.clip(rows // 40, 50, 50_000)) if queries is None else queries)
    held_q, click_q = _split_queries(rng, len(w.queries), heldout_query_fraction)
    heldout = _heldout(rng, w, held_q)
    pool_items, pool_rel = _click_pools(rng, w, click_q)

    n_mal = _n_malformed(rows, malformed_fraction)
    n_good = rows - n_mal
    sess_q, sess_len = _plan_sessions(rng, (pool_items >= 0).sum(axis=1), n_good, days)
    clicks = dataclasses.replace(DEMO_CLICKS, noise_rate=noise_click_rate, start_date=start_date, days=days)
    imp = simulate_sessions(pool_rel, sess_q, sess_len, clicks, rng)
    good = clickstream_columns(imp, w.queries[click_q], w.item_ids[pool_items], w.titles[pool_items])

    kinds, src, take, where = _malformed_layout(rng, n_good, n_mal)
    cols = {k: v[take] for k, v in good.items()}
    cols["event_id"] = ids("e", np.arange(rows), 9)
    malformed_kind, ts_null = _damage(rng, cols, kinds, src, where, n_good)
    clickstream = clickstream_frame(cols, dwell_null=~imp.clicked[take], ts_null=ts_null)
    truth = pd.DataFrame({
        "event_id": cols["event_id"].copy(),
        "true_relevance": imp.relevance[take].astype(np.float64),
        "is_noise_click": imp.noise[take].astype(bool),
        "malformed_kind": malformed_kind,
    })
    meta = {
        "seed": seed, "rows": rows, "days": days, "start_date": start_date,
        "heldout_query_fraction": heldout_query_fraction, "noise_click_rate": noise_click_rate,
        "malformed_fraction": malformed_fraction, "sessions": imp.sessions, "users": imp.users,
        "world": {"queries": len(w.queries), "items": len(w.catalog)},
        "hidden_click_model": _hidden_click_model(clicks),
    }
    return GeneratedData(clickstream=clickstream, catalog=w.catalog, heldout=heldout, truth=truth, meta=meta)


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


def write(data: GeneratedData, output_dir: str, overwrite: bool = False) -> dict[str, Any]:
    """Write all tables, replacing ``output_dir`` as a whole; returns the summary dict.

    An existing ``output_dir`` is replaced only if it is a `generate` output (or with overwrite).
    """
    out = Path(local_path(output_dir)).resolve()
    check_output(LocalFS(), str(out), "generate", (), overwrite)
    with replaced_as_a_whole(out) as tmp:
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
        (tmp / MARKER).write_text(marker("generate", tmp.name.rsplit("-", 1)[-1], str(out), rows=summary["rows"]))
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
    p.add_argument("--queries", type=int, help="distinct queries in the world (default: rows // 40)")
    p.add_argument("--items", type=int, help="catalogue items (default: rows // 20)")
    p.add_argument("--overwrite", action="store_true", help="replace --output even if it is not a generate output")
    a = p.parse_args(argv)
    data = generate(a.rows, a.days, a.seed, heldout_query_fraction=a.heldout_query_fraction,
                    noise_click_rate=a.noise_click_rate, malformed_fraction=a.malformed_fraction,
                    start_date=a.start_date, queries=a.queries, items=a.items)
    s = write(data, a.output, overwrite=a.overwrite)
    print(f"generated {s['rows']} rows ({s['malformed_rows']} malformed, {s['sessions']} sessions, "
          f"{s['distinct_queries']} queries, {s['distinct_items']} items, {s['days']} days, "
          f"click rate {s['click_rate']:.3f}) and {s['heldout_pairs']} held-out pairs -> {s['output']}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("generate", main))
