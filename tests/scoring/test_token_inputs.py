"""Training inputs built from the scorer's token ids (udfs/scoring/token_inputs.py) are exactly what the
tokenizer itself gives, on real pairs and on long synthetic ones at lengths that force truncation;
the scorer's output is the same whichever way it builds them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_data import real_pairs
from udfs.scoring import model_loader
from udfs.scoring.bert import PairScorer, ScoringSettings
from udfs.scoring.token_inputs import (
    contents,
    longest_first,
    pair_inputs,
    pair_template,
    pair_training_input,
    same_tokenizer,
    single_inputs,
    text_training_input,
)


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    pairs = real_pairs().sample(1500, random_state=1)
    rng = np.random.default_rng(0)
    words = pairs["title"].str.split().explode().tolist()
    longer = [" ".join(rng.choice(words, rng.integers(0, 50))) for _ in range(1000)]
    queries = pairs["query"].tolist() + longer[:500] + [""] * 3
    titles = pairs["title"].tolist() + longer[500:] + ["x", "", "a " * 80]
    return queries, titles


@pytest.mark.parametrize("max_length", [64, 16, 9, 5])
def test_builders_match_the_tokenizer(texts, max_length):
    tok = model_loader.load_tokenizer(model_loader.default_model_path())
    t = pair_template(tok)
    assert t is not None and t.pair_parts == ((101,), (102,), (102,)) and (t.type_a, t.type_b) == (0, 1)
    q, ti = texts
    ids_q, ids_t = (tok(x, truncation=True, max_length=128, return_token_type_ids=False,
                        return_attention_mask=False)["input_ids"] for x in (q, ti))
    (cq, nq), (ct, nt) = contents(ids_q, t), contents(ids_t, t)
    want = pair_training_input(tok, q, ti, max_length)
    got = pair_inputs(cq, nq, ct, nt, t, max_length)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    for c, n, x in ((cq, nq, q), (ct, nt, ti)):
        ids, lengths = single_inputs(c, n, t, max_length)
        want_ids, want_len = text_training_input(tok, x, max_length)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(lengths, want_len)


def test_longest_first_by_hand():
    # Budget 10: (3, 20) keeps the short one whole; (8, 9) halves, the longer (second) gets the odd token
    # of an odd budget; (2, 3) fits untouched.
    ka, kb = longest_first(np.array([3, 8, 2, 9]), np.array([20, 9, 3, 8]), 10)
    assert ka.tolist() == [3, 5, 2, 5] and kb.tolist() == [7, 5, 3, 5]
    ka, kb = longest_first(np.array([8]), np.array([9]), 11)
    assert (ka[0], kb[0]) == (5, 6)


def test_tokenizers_the_builders_cannot_vouch_for_are_refused():
    tok = model_loader.load_tokenizer(model_loader.default_model_path())
    left = type(tok).from_pretrained(model_loader.default_model_path(), truncation_side="left")
    assert pair_template(left) is None
    assert same_tokenizer(tok, tok) and not same_tokenizer(tok, left)


@pytest.mark.parametrize("lengths", [(32, 32), (12, 12), (16, 10)])
def test_scorer_output_is_the_same_either_way(tiny_model_dir, texts, lengths):
    scorer_len, train_len = lengths
    settings = ScoringSettings(scorer_path=tiny_model_dir, trainee_path=tiny_model_dir, batch_size=64,
                               scorer_max_length=scorer_len, train_max_length=train_len, torch_threads=1,
                               device="cpu")
    scorer = PairScorer(settings, "cpu")
    assert scorer._template is not None  # else this test compares the tokenizer path with itself
    q, t = (pd.Series(x[-600:]) for x in texts)  # long texts: at 12 tokens many pairs are cut on both sides
    fast = scorer.score(q, t)
    slow = scorer.training_input([s.strip() for s in q], [s.strip() for s in t])  # no token ids: the tokenizer
    for k, v in slow.items():
        np.testing.assert_array_equal(np.stack(fast[k].to_numpy()) if isinstance(v, list) else fast[k].to_numpy(),
                                      np.stack(v) if isinstance(v, list) else v, err_msg=k)
