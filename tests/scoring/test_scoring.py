"""PairScorer outside Spark: token-length micro-batches with dynamic padding give each text the
score it gets alone (padding is masked out), in input order."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import save_tiny_bert

from udfs.scoring.bert import PairScorer, ScoringSettings

TEXTS = ["drill", "cordless hammer drill 20v max lithium ion kit", "paint", "led bulb 60w soft white 4 pack",
         "garden hose", "stainless steel kitchen sink faucet with pull down sprayer", "mulch", "door knob"]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> PairScorer:
    folder = save_tiny_bert(tmp_path_factory.mktemp("enc"))
    settings = ScoringSettings(scorer_path=folder, trainee_path=folder, batch_size=3, scorer_max_length=32,
                               train_max_length=32, torch_threads=1, device="cpu")
    return PairScorer(settings, "cpu")


def test_embeddings_match_unpadded_single_text_forward(scorer):
    got = scorer.embed(TEXTS)
    for i, text in enumerate(TEXTS):
        enc = scorer.tokenizer([text], truncation=True, max_length=32, return_tensors="pt")
        with torch.inference_mode():
            hidden = scorer.encoder(**enc).last_hidden_state
        alone = torch.nn.functional.normalize(hidden.mean(1), dim=-1)[0].numpy()
        np.testing.assert_allclose(got[i], alone, rtol=1e-4, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_score_is_in_input_order_whatever_the_batching(scorer):
    queries = pd.Series(["drill", "paint", "drill", "mulch", "door knob", "paint"])
    titles = pd.Series(TEXTS[1:7])
    frame = scorer.score(queries, titles)
    perm = np.array([5, 3, 0, 4, 1, 2])
    permuted = scorer.score(queries[perm].reset_index(drop=True), titles[perm].reset_index(drop=True))
    np.testing.assert_allclose(permuted["relevance"].to_numpy(), frame["relevance"].to_numpy()[perm],
                               rtol=1e-5, atol=1e-6)
    # Training input: fixed length, [CLS] query [SEP] title [SEP], input_len counts real tokens.
    ids = np.stack(frame["input_ids"].to_list())
    assert ids.shape == (6, 32)
    assert (frame["input_len"].to_numpy() == (ids != 0).sum(axis=1)).all()
    assert not np.isclose(frame["relevance"].to_numpy(), frame["relevance"].to_numpy()[0]).all()


def test_int8_scorer_quantises_every_linear_and_keeps_the_ranking(scorer):
    """scorer.precision=int8: every nn.Linear dynamically quantised (per channel); cosines move a little,
    the ranking of pairs mostly holds; refused on a GPU and for training."""
    from dataclasses import replace

    from jobs import config
    from udfs.errors import UserError

    int8 = PairScorer(replace(scorer.settings, precision="int8"), "cpu")
    # 2 layers x (q, k, v, attention out, intermediate, output) + the pooler
    dynamic = [m for m in int8.encoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(dynamic) == 2 * 6 + 1 and not any(type(m) is torch.nn.Linear for m in int8.encoder.modules())
    queries = [TEXTS[i % 3 * 2] for i in range(24)]
    titles = [TEXTS[(i * 5) % 8] + f" {i}" for i in range(24)]
    fp32, q8 = scorer.cosine(queries, titles), int8.cosine(queries, titles)
    assert not np.allclose(fp32, q8, atol=1e-7)  # it really ran quantised
    assert np.corrcoef(pd.Series(fp32).rank(), pd.Series(q8).rank())[0, 1] > 0.9
    with pytest.raises(UserError, match="int8"):
        config.load_config(overrides=["scorer.precision=int8", "scorer.device=cuda"])
    with pytest.raises(UserError, match="train.precision"):
        config.load_config(overrides=["train.precision=int8"])
