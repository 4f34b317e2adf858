"""Training inputs built from token ids the scorer already has, so each distinct text of an Arrow
batch is tokenised once instead of three more times (the query alone, the title alone, the pair).

On a GPU the tokenizer, not BERT, is most of the score UDF's time (docs/performance.md): for 20k
distinct pairs the three training-input calls took 5.1 s against 0.35 s of forward passes. The
builders here reproduce the tokenizer's own output exactly (its special-token layout read off a
probe, and its `longest_first` pair truncation); `pair_template` refuses any tokenizer the probe
cannot vouch for, and the caller then tokenises as before.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens (and which token type each part gets)."""
    single_prefix: tuple[int, ...]
    single_suffix: tuple[int, ...]
    pair_parts: tuple[tuple[int, ...], ...]   # before A, between A and B, after B
    pair_part_types: tuple[tuple[int, ...], ...]
    type_a: int
    type_b: int
    pad_id: int
    pad_type: int


def _split(ids: list[int], marks: list[int]) -> list[list[int]] | None:
    """ids cut at each mark (each must occur exactly once, in order): the pieces between them."""
    pos = [ids.index(m) if ids.count(m) == 1 else -1 for m in marks]
    if min(pos) < 0 or pos != sorted(pos):
        return None
    bounds = [-1, *pos, len(ids)]
    return [ids[bounds[i] + 1:bounds[i + 1]] for i in range(len(bounds) - 1)]


def pair_template(tokenizer) -> PairTemplate | None:
    """The tokenizer's layout from a probe pair, or None where the builders would not match it."""
    if "left" in (getattr(tokenizer, "truncation_side", "right"), getattr(tokenizer, "padding_side", "right")):
        return None
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    if len(a) != 1 or len(b) != 1 or a == b:
        return None
    single = _split(tokenizer("a")["input_ids"], a)
    enc = tokenizer("a", "b", return_token_type_ids=True)
    parts = _split(enc["input_ids"], a + b)
    if single is None or parts is None or "token_type_ids" not in enc:
        return None
    types, i, part_types = enc["token_type_ids"], 0, []
    for k, part in enumerate(parts):
        part_types.append(tuple(types[i:i + len(part)]))
        i += len(part) + (1 if k < 2 else 0)
    ia, ib = len(parts[0]), len(parts[0]) + 1 + len(parts[1])
    return PairTemplate(tuple(single[0]), tuple(single[1]), tuple(tuple(p) for p in parts), tuple(part_types),
                        types[ia], types[ib], tokenizer.pad_token_id or 0, getattr(tokenizer, "pad_token_type_id", 0))


def reuse_template(scorer_tokenizer, train_tokenizer, scorer_max_length: int,
                   train_max_length: int) -> PairTemplate | None:
    """The layout to build training inputs from the scorer's token ids with, or None where that
    would not be exact: another tokenizer, or training texts longer than the scorer's."""
    if train_max_length > scorer_max_length or not same_tokenizer(scorer_tokenizer, train_tokenizer):
        return None
    return pair_template(scorer_tokenizer)


def contents(ids: list[list[int]], t: PairTemplate) -> tuple[np.ndarray, np.ndarray]:
    """The texts' tokens without specials, right-padded (rows x longest), and their counts."""
    lo, hi = len(t.single_prefix), len(t.single_suffix)
    n = np.fromiter((len(x) - lo - hi for x in ids), dtype=np.int64, count=len(ids))
    out = np.zeros((len(ids), max(1, int(n.max(initial=0)))), dtype=np.int64)
    if len(ids):
        out[np.arange(out.shape[1])[None, :] < n[:, None]] = np.fromiter(
            (tok for x in ids for tok in x[lo:len(x) - hi]), dtype=np.int64, count=int(n.sum()))
    return out, n


def _place(out: np.ndarray, start: np.ndarray, values: np.ndarray, count: np.ndarray) -> None:
    """out[r, start[r] + j] = values[r, j] for j < count[r], every row at once."""
    j = np.arange(out.shape[1])[None, :] - start[:, None]
    mask = (j >= 0) & (j < count[:, None])
    cols = np.clip(j, 0, values.shape[1] - 1)
    out[mask] = np.take_along_axis(values, cols, axis=1)[mask]


def _place_const(out: np.ndarray, start: np.ndarray, values: tuple[int, ...]) -> None:
    rows = np.arange(out.shape[0])
    for k, v in enumerate(values):
        out[rows, start + k] = v


def single_inputs(content: np.ndarray, n: np.ndarray, t: PairTemplate,
                  max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """prefix + text + suffix, truncated and padded to max_length: the tokenizer's
    (text, truncation=True, padding='max_length'). int32 ids and lengths."""
    keep = np.minimum(n, max_length - len(t.single_prefix) - len(t.single_suffix))
    ids = np.full((len(n), max_length), t.pad_id, dtype=np.int64)
    zero = np.zeros(len(n), dtype=np.int64)
    _place_const(ids, zero, t.single_prefix)
    _place(ids, zero + len(t.single_prefix), content, keep)
    _place_const(ids, keep + len(t.single_prefix), t.single_suffix)
    return ids.astype(np.int32), (keep + len(t.single_prefix) + len(t.single_suffix)).astype(np.int32)


def longest_first(na: np.ndarray, nb: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens kept of each text under the tokenizers library's `longest_first` pair truncation
    (tokenizers/src/utils/truncation.rs): the shorter text is kept whole if it fits in half the
    budget and the longer gets the rest; otherwise both get half (the longer one the odd token)."""
    short = np.minimum(na, nb)
    n2 = np.where(short > budget, short, np.maximum(short, budget - short))
    n1 = short.copy()
    halve = n1 + n2 > budget
    n1 = np.where(halve, budget // 2, n1)
    n2 = np.where(halve, budget // 2 + budget % 2, n2)
    swap = na > nb
    ka, kb = np.where(swap, n2, n1), np.where(swap, n1, n2)
    fits = na + nb <= budget
    return np.where(fits, na, np.minimum(ka, na)), np.where(fits, nb, np.minimum(kb, nb))


def pair_inputs(qa: np.ndarray, na: np.ndarray, tb: np.ndarray, nb: np.ndarray, t: PairTemplate,
                max_length: int) -> dict[str, np.ndarray]:
    """prefix + A + mid + B + suffix per row, as the tokenizer's (a, b, truncation=True,
    padding='max_length'): int32 input_ids, token_type_ids (rows x max_length) and input_len."""
    pre, mid, suf = t.pair_parts
    ka, kb = longest_first(na, nb, max_length - len(pre) - len(mid) - len(suf))
    ids = np.full((len(na), max_length), t.pad_id, dtype=np.int64)
    types = np.full_like(ids, t.pad_type)
    start = np.zeros(len(na), dtype=np.int64)
    for part, part_types, text, kept, text_type in ((pre, t.pair_part_types[0], qa, ka, t.type_a),
                                                    (mid, t.pair_part_types[1], tb, kb, t.type_b),
                                                    (suf, t.pair_part_types[2], None, None, None)):
        _place_const(ids, start, part)
        _place_const(types, start, part_types)
        start = start + len(part)
        if text is not None:
            _place(ids, start, text, kept)
            _place(types, start, np.full_like(text, text_type), kept)
            start = start + kept
    return {"input_ids": ids.astype(np.int32), "token_type_ids": types.astype(np.int32),
            "input_len": start.astype(np.int32)}


def same_tokenizer(a, b) -> bool:
    """Both tokenise alike: the same object, or the same serialised backend (vocabulary, normaliser,
    pre-tokeniser, post-processor), per-call truncation and padding state aside."""
    if a is b:
        return True
    try:
        sa, sb = (json.loads(x.backend_tokenizer.to_str()) for x in (a, b))
    except AttributeError:  # not a fast tokenizer
        return False
    for s in (sa, sb):
        s.pop("truncation", None)
        s.pop("padding", None)
    return sa == sb and (a.truncation_side, a.padding_side) == (b.truncation_side, b.padding_side)


def text_training_input(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One text per row (the bi-encoder's query or title): [CLS] text [SEP] ids padded to max_length
    (int32, rows x max_length) and their lengths. Same truncation as the scorer's embed()."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                    return_token_type_ids=False)
    return (np.asarray(enc["input_ids"], dtype=np.int32),
            np.asarray(enc["attention_mask"], dtype=np.int32).sum(axis=1))


def pair_training_input(tokenizer, queries: list[str], titles: list[str], max_length: int) -> dict[str, np.ndarray]:
    """[CLS] query [SEP] title [SEP] ids padded to max_length, int32 arrays (rows x max_length) and lengths."""
    enc = tokenizer(queries, titles, padding="max_length", truncation=True, max_length=max_length,
                    return_token_type_ids=True)
    return {"input_ids": np.asarray(enc["input_ids"], dtype=np.int32),
            "token_type_ids": np.asarray(enc["token_type_ids"], dtype=np.int32),
            "input_len": np.asarray(enc["attention_mask"], dtype=np.int32).sum(axis=1)}
