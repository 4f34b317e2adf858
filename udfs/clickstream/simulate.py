"""The click simulator: a clickstream whose ground truth is known, over candidates with graded relevance.

One simulator for the demo data (jobs/generate.py, a synthetic catalog) and for the quality
benchmarks (benchmarks/*, real graded (query, title) pairs through `simulate`):

- Sessions: one query each, by one user (Zipf-like user activity), starting on one of `days`
  UTC dates (every date covered) at a daytime-heavy clock; impressions are logged 1 ms apart.
- Ranker: the query's candidates ordered by relevance + N(0, ranker_noise); the top n are shown.
- Examination: P(exam | position k) = 1 / k**eta (every row when position_bias is False).
- Click: needs examination, then (click_model "graded") P = click_low + (click_high - click_low) *
  ((rel - 1) / 2)**click_curve, or (click_model "pbm", the unbiased-LTR literature's standard
  position-based model) P = epsilon + (1 - epsilon) * (2**g - 1) / (2**g_max - 1), g = rel - 1, g_max = 2.
- Two click models outside the position-based family that clickweight's own click model assumes:
  "cascade" (Craswell et al. 2008, with the satisfaction of Chapelle and Zhang's DBN): the user reads
  from the top, clicks an item with the graded P above, and after a click stops with probability
  stop_low..stop_high (linear in (rel - 1) / 2); examination of a row then depends on the rows above
  it, not on its position alone (eta is not used). "trust" (trust bias, Agarwal et al. 2019, with the
  parameters of Vardasbi et al. 2020): examination (1/k)**eta, then P = eps-_k + (eps+_k - eps-_k) *
  (2**g - 1) / (2**g_max - 1), eps+_k = 1 - (min(k, 20) + 1) / 100, eps-_k = trust_false_top / k:
  users click more irrelevant items near the top, a noise floor that falls with position.
  Without position bias (the `clean` oracle) every row is examined and clicked with the P above
  (cascade: nobody stops; trust: P = (2**g - 1) / (2**g_max - 1), no false clicks).
- Cart and purchase follow real clicks on items with relevance >= cart_min_relevance, likelier the
  more relevant the item (linear in (rel - 1) / 2).
- Noise clicks: extra clicks on rows drawn uniformly from the unclicked ones (whatever their
  position or relevance: misclicks, curiosity); as many as make noise_share of all clicks, or,
  with noise_rate set, noise_rate of all impressions. They never lead to a cart or a purchase.
- Flipped clicks (flip_rate): that share of impressions has its click replaced by a fair coin flip,
  whatever the user did: noise that removes clicks as well as adds them. A flipped row keeps no cart
  or purchase, so nothing downstream tells a flipped click from a real one unless carts exist.
- Dwell (ms, after a click): lognormal, longer for relevant items; noise clicks optionally get
  their own (quick bounce) mean.

Relevance is on the 1..3 scale throughout. Deterministic for a seed / generator: every draw comes
from the one ``numpy.random.Generator`` passed in, in a fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

CLICK_MODEL_KINDS = ("graded", "pbm", "cascade", "trust")
CLICKSTREAM_COLUMNS = ("event_id", "event_ts", "user_id", "session_id", "query", "item_id", "title",
                       "position", "clicked", "added_to_cart", "purchased", "dwell_ms")


@dataclass(frozen=True)
class SimulatorSettings:
    """Hidden click model. Defaults are the benchmarks' (docs/weighting_quality.md)."""

    sessions_per_query: float = 6.0   # `simulate` only: mean; per-query counts are lognormal-skewed
    eta: float = 0.8                  # position-bias exponent (hidden from clickweight)
    ranker_noise: float = 0.6         # sd of the ranker's error on the 1..3 scale
    noise_share: float = 0.2          # share of all clicks that are noise clicks, in [0, 1)
    noise_rate: float | None = None   # if set: noise clicks are this share of all impressions instead
    click_low: float = 0.05           # click probability of an examined, irrelevant (1.0) item
    click_high: float = 0.75          # ... of an examined, perfect (3.0) item
    click_curve: float = 1.5          # exponent of the rise between them
    cart_low: float = 0.3             # P(cart | real click) at relevance cart_min_relevance..3: from
    cart_high: float = 0.3            # cart_low (relevance 1) to cart_high (relevance 3), linear
    cart_min_relevance: float = 2.67  # no cart (so no purchase) below this relevance
    buy_low: float = 1.0              # P(purchase | cart), likewise from relevance 1 to 3
    buy_high: float = 1.0
    dwell_log_ms: float = 10.0        # mean log dwell (ms) of a real click on a relevance-1 item
    dwell_per_grade: float = 1.0      # + this per relevance grade
    dwell_sd: float = 0.5             # sd of log dwell
    noise_dwell_log_ms: float | None = None   # noise clicks' mean log dwell; None: as real clicks
    position_bias: bool = True        # False: every position is examined (the unbiased reference)
    click_model: str = "graded"       # graded | pbm | cascade | trust (the module's docstring)
    pbm_epsilon: float = 0.1          # pbm: click probability of an examined, irrelevant item
    stop_low: float = 0.1             # cascade: P(stop after a click) on an irrelevant (1.0) item
    stop_high: float = 0.5            # ... on a perfect (3.0) item
    trust_false_top: float = 0.65     # trust: P(click | examined, irrelevant) at position 1; / k below
    flip_rate: float = 0.0            # share of impressions whose click is a fair coin flip
    start_date: str = "2026-02-01"
    days: int = 3

    def check(self) -> None:
        if not 0.0 <= self.noise_share < 1.0:
            raise ValueError("noise_share must be in [0, 1)")
        if self.noise_rate is not None and not 0.0 <= self.noise_rate <= 1.0:
            raise ValueError("noise_rate must be in [0, 1]")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.click_model not in CLICK_MODEL_KINDS:
            raise ValueError(f"click_model must be one of {CLICK_MODEL_KINDS}")
        if not 0.0 <= self.flip_rate <= 1.0 or not 0.0 <= self.pbm_epsilon < 1.0:
            raise ValueError("flip_rate must be in [0, 1] and pbm_epsilon in [0, 1)")

    def clean(self) -> SimulatorSettings:
        """The same click model with no noise clicks, no flips and no position bias (the `clean` oracle)."""
        return replace(self, noise_share=0.0, noise_rate=None, flip_rate=0.0, position_bias=False)


@dataclass
class Impressions:
    """Simulated impressions, one entry per shown row: sessions in start-time order, each one's
    rows contiguous at positions 1..n. `query` and `slot` index the caller's candidate pools."""

    session: np.ndarray        # 0..sessions-1, in start-time order
    user: np.ndarray           # 0..users-1
    event_ts_us: np.ndarray    # microseconds since the epoch, UTC
    query: np.ndarray          # row of the pool matrix
    slot: np.ndarray           # column of the pool matrix: which candidate was shown
    position: np.ndarray       # int32, 1-based
    relevance: np.ndarray      # true relevance, 1..3
    examined: np.ndarray
    clicked: np.ndarray        # real or noise click
    noise: np.ndarray          # noise click
    cart: np.ndarray
    purchased: np.ndarray
    dwell_ms: np.ndarray       # int64 >= 1; meaningful where clicked
    sessions: int
    users: int


def _graded(relevance: np.ndarray, low: float, high: float, curve: float = 1.0) -> np.ndarray:
    frac = (np.clip(relevance, 1.0, 3.0) - 1.0) / 2.0
    return low + (high - low) * frac ** curve


def _gain(relevance: np.ndarray) -> np.ndarray:
    """(2**g - 1) / (2**g_max - 1), g = rel - 1 on the 1..3 scale: the literature's graded gain in [0, 1]."""
    g = np.clip(np.asarray(relevance, dtype=np.float64), 1.0, 3.0) - 1.0
    return (2.0 ** g - 1.0) / (2.0 ** 2.0 - 1.0)


def click_probability(relevance: np.ndarray, s: SimulatorSettings) -> np.ndarray:
    """P(click | examined) of items with this true relevance (their attractiveness; the `truth`
    oracle's label). For trust bias, the position-free part: the gain, without the false clicks."""
    if s.click_model == "pbm":
        return s.pbm_epsilon + (1.0 - s.pbm_epsilon) * _gain(relevance)
    if s.click_model == "trust":
        return _gain(relevance)
    return _graded(relevance, s.click_low, s.click_high, s.click_curve)


def examination_probability(position: np.ndarray, s: SimulatorSettings) -> np.ndarray:
    """P(examined | position) (1-based positions). Not a function of position under the cascade."""
    position = np.asarray(position, dtype=np.float64)
    if s.click_model == "cascade" and s.position_bias:
        raise ValueError("under the cascade model examination depends on the rows above, not on the position")
    return 1.0 / position ** s.eta if s.position_bias else np.ones_like(position)


def trust_click_probability(relevance: np.ndarray, position: np.ndarray, s: SimulatorSettings) -> np.ndarray:
    """Trust bias: P(click | examined, position k) = eps-_k + (eps+_k - eps-_k) * gain (Vardasbi et al.
    2020's eps+_k = 1 - (min(k, 20) + 1) / 100, eps-_k = trust_false_top / k)."""
    k = np.asarray(position, dtype=np.float64)
    eps_plus = 1.0 - (np.minimum(k, 20.0) + 1.0) / 100.0
    eps_minus = s.trust_false_top / k
    return eps_minus + (eps_plus - eps_minus) * _gain(relevance)


def _examine_and_click(rng: np.random.Generator, rel: np.ndarray, position: np.ndarray, s_idx: np.ndarray,
                       n_sess: int, s: SimulatorSettings) -> tuple[np.ndarray, np.ndarray]:
    """(examined, clicked) per row; rows are session-major in position order."""
    n = len(rel)
    if s.click_model == "cascade" and s.position_bias:
        u_click, u_stop = rng.random(n), rng.random(n)
        attract = click_probability(rel, s)
        stop = _graded(rel, s.stop_low, s.stop_high)
        examined, clicked = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        reading = np.ones(n_sess, dtype=bool)            # the session's user has not stopped yet
        for k in range(1, int(position.max(initial=0)) + 1):
            at = np.flatnonzero(position == k)            # one row per session that shows position k
            who = s_idx[at]
            examined[at] = reading[who]
            clicked[at] = examined[at] & (u_click[at] < attract[at])
            reading[who] &= ~(clicked[at] & (u_stop[at] < stop[at]))
        return examined, clicked
    examined = rng.random(n) < examination_probability(position, s)
    if s.click_model == "trust":
        p = trust_click_probability(rel, position, s) if s.position_bias else click_probability(rel, s)
        return examined, examined & (rng.random(n) < p)
    return examined, examined & (rng.random(n) < click_probability(rel, s))


def _session_clock(rng: np.random.Generator, n_sess: int, s: SimulatorSettings) -> np.ndarray:
    """Start time (us) of each session: a uniform UTC date (each one covered when there are enough
    sessions), a daytime-heavy time of day."""
    day = rng.integers(0, s.days, n_sess)
    day[:min(s.days, n_sess)] = np.arange(min(s.days, n_sess))
    sod = np.clip(rng.normal(14 * 3600, 4 * 3600, n_sess) % 86400, 0, 86400 - 60)
    start_us = np.datetime64(s.start_date, "D").astype("datetime64[us]").astype(np.int64)
    return start_us + (day * 86400 + sod).astype(np.int64) * 1_000_000 + rng.integers(0, 1_000_000, n_sess)


def _noise_clicks(rng: np.random.Generator, clicked: np.ndarray, s: SimulatorSettings) -> np.ndarray:
    skips = np.flatnonzero(~clicked)
    if s.noise_rate is not None:
        wanted = int(round(s.noise_rate * len(clicked)))
    else:
        wanted = int(round(int(clicked.sum()) * s.noise_share / (1.0 - s.noise_share)))
    noise = np.zeros(len(clicked), dtype=bool)
    noise[rng.choice(skips, size=min(len(skips), wanted), replace=False)] = True
    return noise


def simulate_sessions(pool_rel: np.ndarray, sess_q: np.ndarray, sess_len: np.ndarray,
                      s: SimulatorSettings, rng: np.random.Generator) -> Impressions:
    """Simulate sessions over fixed candidate pools.

    pool_rel: (queries, width) true relevance of each query's candidates, -inf (or NaN) past the
    end of a shorter pool. Session i shows the top sess_len[i] candidates of query sess_q[i] as
    ranked by the noisy ranker; sess_len[i] must not exceed that query's pool.
    """
    s.check()
    pool_rel = np.where(np.isnan(pool_rel), -np.inf, pool_rel)
    sess_q, sess_len = np.asarray(sess_q, dtype=np.int64), np.asarray(sess_len, dtype=np.int64)
    if np.any(sess_len > np.isfinite(pool_rel).sum(axis=1)[sess_q]) or np.any(sess_len < 1):
        raise ValueError("every session must show between 1 and its pool's size candidates")
    n_sess, width = len(sess_q), pool_rel.shape[1]
    # Sessions in start-time order, so session numbers and rows run with the clock.
    sess_ts = _session_clock(rng, n_sess, s)
    order = np.argsort(sess_ts, kind="stable")
    sess_q, sess_len, sess_ts = sess_q[order], sess_len[order], sess_ts[order]
    users = max(10, n_sess // 4)
    user_pop = 1.0 / np.arange(1, users + 1) ** 0.9
    sess_user = rng.choice(users, n_sess, p=user_pop / user_pop.sum())

    # The ranker orders each session's pool by a noisy view of true relevance.
    scores = pool_rel[sess_q] + rng.normal(0.0, s.ranker_noise, (n_sess, width))
    top = np.argsort(-scores, axis=1, kind="stable")
    shown = np.arange(1, width + 1)[None, :] <= sess_len[:, None]
    s_idx, p_idx = np.nonzero(shown)            # row-major: session, then position order
    slot = top[s_idx, p_idx]
    q = sess_q[s_idx]
    rel = pool_rel[q, slot]
    position = (p_idx + 1).astype(np.int32)
    n = len(rel)

    examined, clicked = _examine_and_click(rng, rel, position, s_idx, n_sess, s)
    noise = _noise_clicks(rng, clicked, s)
    cart = clicked & (rel >= s.cart_min_relevance) & (rng.random(n) < _graded(rel, s.cart_low, s.cart_high))
    bought = cart & (rng.random(n) < _graded(rel, s.buy_low, s.buy_high))
    log_mu = s.dwell_log_ms + s.dwell_per_grade * (rel - 1.0)
    if s.noise_dwell_log_ms is not None:
        log_mu = np.where(noise, s.noise_dwell_log_ms, log_mu)
    dwell = np.maximum(1, np.round(np.exp(log_mu + rng.normal(0.0, s.dwell_sd, n)))).astype(np.int64)
    if s.flip_rate > 0:  # drawn last, so flip_rate = 0 reproduces earlier logs draw for draw
        flipped = rng.random(n) < s.flip_rate
        coin = rng.random(n) < 0.5
        clicked = clicked & ~flipped                       # the real clicks that survive
        noise = (noise & ~flipped) | (flipped & coin)      # a flipped row's click says nothing of relevance
        cart, bought = cart & clicked, bought & clicked
    return Impressions(
        session=s_idx, user=sess_user[s_idx], event_ts_us=sess_ts[s_idx] + p_idx.astype(np.int64) * 1000,
        query=q, slot=slot, position=position, relevance=rel, examined=examined, clicked=clicked | noise,
        noise=noise, cart=cart, purchased=bought, dwell_ms=dwell, sessions=n_sess, users=users)


def ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    """String ids such as e000000042 (object array)."""
    return np.array([f"{prefix}{i:0{width}d}" for i in np.asarray(idx).tolist()], dtype=object)


def clickstream_columns(imp: Impressions, query: np.ndarray, item_id: np.ndarray,
                        title: np.ndarray) -> dict[str, np.ndarray]:
    """The clickweight input columns of the impressions, in CLICKSTREAM_COLUMNS order, as plain
    arrays: event_ts as int64 microseconds, dwell_ms for every row (null it where not clicked).
    query: text per pool row; item_id, title: per (pool row, slot)."""
    return {
        "event_id": ids("e", np.arange(len(imp.position)), 9),
        "event_ts": imp.event_ts_us,
        "user_id": ids("u", np.arange(imp.users), 7)[imp.user],
        "session_id": ids("s", np.arange(imp.sessions), 8)[imp.session],
        "query": query[imp.query],
        "item_id": item_id[imp.query, imp.slot],
        "title": title[imp.query, imp.slot],
        "position": imp.position,
        "clicked": imp.clicked.astype(np.int32),
        "added_to_cart": imp.cart.astype(np.int32),
        "purchased": imp.purchased.astype(np.int32),
        "dwell_ms": imp.dwell_ms,
    }


def clickstream_frame(cols: dict[str, np.ndarray], dwell_null: np.ndarray,
                      ts_null: np.ndarray | None = None) -> pd.DataFrame:
    """DataFrame in the input schema's in-memory types from clickstream_columns' arrays."""
    event_ts = pd.Series(np.asarray(cols["event_ts"], dtype=np.int64).astype("datetime64[us]"))
    if ts_null is not None:
        event_ts[ts_null] = pd.NaT
    dwell_ms = pd.array(cols["dwell_ms"], dtype="Int64")
    dwell_ms[dwell_null] = pd.NA
    frame = pd.DataFrame({k: cols[k] for k in CLICKSTREAM_COLUMNS if k not in ("event_ts", "dwell_ms")})
    frame.insert(1, "event_ts", event_ts.dt.tz_localize("UTC"))
    frame["dwell_ms"] = dwell_ms
    return frame


def split_by_query(pairs: pd.DataFrame, heldout_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, held-out) pairs: a random heldout_fraction of the queries is held out whole."""
    queries = np.sort(pairs["query"].unique())
    rng = np.random.default_rng(seed)
    held = set(rng.choice(queries, size=int(len(queries) * heldout_fraction), replace=False).tolist())
    mask = pairs["query"].isin(held)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def simulate(pairs: pd.DataFrame, s: SimulatorSettings, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clickstream over graded pairs (query, item_id, title, relevance): every query with >= 2 pairs
    gets a lognormal number of sessions (mean sessions_per_query), each showing all its pairs.

    Returns (clickstream in the clickweight input schema, truth: event_id, true_relevance,
    is_noise_click, examined: whether the user looked at the row; hidden from clickweight, known
    to the oracles)."""
    s.check()
    rng = np.random.default_rng(seed)
    pairs = pairs.sort_values("query", kind="stable")
    size = pairs.groupby("query", sort=True)["query"].transform("size").to_numpy()
    pairs = pairs[size >= 2].reset_index(drop=True)
    q_code, q_text = pd.factorize(pairs["query"], sort=True)
    slot = pairs.groupby(q_code).cumcount().to_numpy()
    pool_len = np.bincount(q_code, minlength=len(q_text))
    width = int(pool_len.max()) if len(pool_len) else 1
    pool_rel = np.full((len(q_text), width), -np.inf)
    pool_rel[q_code, slot] = pairs["relevance"].to_numpy(dtype=np.float64)
    pair_row = np.zeros((len(q_text), width), dtype=np.int64)
    pair_row[q_code, slot] = np.arange(len(pairs))
    # Skewed popularity with the stated mean: lognormal (sigma 1) scaled to mean sessions_per_query.
    # (A Zipf draw with exponent < 2 has no finite mean: normalising by the sample mean left most
    # queries at the 1-session floor, about 1-3 impressions per pair instead of the stated 6.)
    popularity = rng.lognormal(-0.5, 1.0, size=len(q_text))   # E = 1
    sessions = np.maximum(1, np.round(popularity * s.sessions_per_query)).astype(np.int64)
    sessions = np.minimum(sessions, int(20 * s.sessions_per_query))
    sess_q = np.repeat(np.arange(len(q_text)), sessions)
    imp = simulate_sessions(pool_rel, sess_q, pool_len[sess_q], s, rng)
    cols = clickstream_columns(imp, np.asarray(q_text, dtype=object),
                               pairs["item_id"].astype(str).to_numpy(dtype=object)[pair_row],
                               pairs["title"].to_numpy(dtype=object)[pair_row])
    frame = clickstream_frame(cols, dwell_null=~imp.clicked)
    truth = pd.DataFrame({"event_id": cols["event_id"], "true_relevance": imp.relevance,
                          "is_noise_click": imp.noise, "examined": imp.examined})
    return frame, truth
