"""BERT scoring of (query, title) pairs, and the Spark pandas UDF that runs it.

One `PairScorer` per Python worker process (cached), so the model loads once per worker and is
reused across Arrow batches and, with spark.python.worker.reuse, across tasks.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from udfs.errors import UserError
from udfs.scoring import model_loader, token_inputs
from udfs.scoring.device import release_free_heap
from udfs.weighting import weights

SCORE_SCHEMA = (
    "relevance double, p_model double, input_ids array<int>, token_type_ids array<int>, input_len int, "
    "query_ids array<int>, query_len int, title_ids array<int>, title_len int"
)


@dataclass(frozen=True)
class ScoringSettings:
    scorer_path: str        # resolved folder
    trainee_path: str       # resolved folder whose tokenizer builds the training input
    batch_size: int
    scorer_max_length: int
    train_max_length: int
    torch_threads: int
    device: str             # 'auto' | 'cpu' | 'cuda' | 'cuda:N'
    precision: str = "fp32"  # 'auto' | 'fp32' | 'bf16' (udfs.scoring.device.resolve_precision)


def _mean_pool(hidden, mask):
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


class PairScorer:
    """Scores pairs with a sentence encoder (cosine) and, if it is one, a cross-encoder (p)."""

    def __init__(self, settings: ScoringSettings, device: str, calibration: dict[str, float] | None = None):
        import torch

        from udfs.scoring.device import quantise_int8, resolve_precision

        # The driver resolved the paths; the packaged default sits elsewhere on an executor.
        settings = replace(settings, scorer_path=model_loader.on_this_host(settings.scorer_path),
                           trainee_path=model_loader.on_this_host(settings.trainee_path))
        self.settings = settings
        self.device = device
        self.precision = resolve_precision(settings.precision, device)
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        self.cross = model_loader.is_cross_encoder(settings.scorer_path)
        self.tokenizer = model_loader.load_tokenizer(settings.scorer_path)
        self.train_tokenizer = model_loader.load_tokenizer(settings.trainee_path)
        self._template = token_inputs.reuse_template(self.tokenizer, self.train_tokenizer, settings.scorer_max_length,
                                                     settings.train_max_length)
        if self.cross:
            self.model = model_loader.load_cross_encoder(settings.scorer_path, device)
            self.encoder = self.model.base_model
        else:
            self.model = None
            self.encoder = model_loader.load_encoder(settings.scorer_path, device)
        if self.precision == "int8" and self.model is not None:  # a cross-encoder: its encoder is inside
            self.model = quantise_int8(self.model)
            self.encoder = self.model.base_model
        elif self.precision == "int8":
            self.encoder = quantise_int8(self.encoder)
        # z = a * cos + b: a clickweight bi-encoder's own head, or the calibration a caller supplies.
        self.head = calibration or model_loader.click_head(settings.scorer_path)
        # A clickweight cross-encoder adds its scorer's logit (the prior it was trained on top of).
        self.prior: PairScorer | None = None
        prior = model_loader.cross_encoder_prior(settings.scorer_path) if self.cross else None
        if prior is not None:
            self.prior = PairScorer(replace(settings, scorer_path=prior[0], trainee_path=prior[0]), device,
                                    calibration=prior[1])

    def _autocast(self):
        from udfs.scoring.device import autocast

        return autocast(self.precision, self.device)

    def _chunks(self, lengths: np.ndarray) -> Iterator[np.ndarray]:
        # Micro-batches of texts sorted by *token* count: dynamic padding then wastes ~5% of the tokens
        # (sorting by characters wasted 50-65% on product titles; padding is paid for in full). The
        # remainder comes first, with the shortest texts, so filling it up (_padded) costs little.
        order = np.argsort(lengths, kind="stable")
        first = len(order) % self.settings.batch_size
        if first:
            yield order[:first]
        for i in range(first, len(order), self.settings.batch_size):
            yield order[i:i + self.settings.batch_size]

    def _padded(self, ids: list[list[int]], idx: np.ndarray, lengths: np.ndarray,
                types: list[list[int]] | None = None) -> dict:
        """One micro-batch as padded tensors on the device (pinned first for a GPU), always `batch_size`
        rows (one-token filler rows complete a short one): shapes then differ only in width, so per-shape
        kernel caches (oneDNN's primitives) stay small and a worker's RSS flat (docs/performance.md)."""
        import torch

        width = int(lengths[idx].max())
        rows = max(len(idx), self.settings.batch_size)
        input_ids = np.full((rows, width), self.tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        mask[len(idx):, 0] = 1  # filler rows: one visible token, so no row is fully masked
        type_ids = np.zeros((rows, width), dtype=np.int64)
        for r, i in enumerate(idx):
            n = lengths[i]
            input_ids[r, :n] = ids[i]
            mask[r, :n] = 1
            if types is not None:
                type_ids[r, :n] = types[i]
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.tokenizer.model_input_names:  # not every encoder takes them
            batch["token_type_ids"] = type_ids
        cuda = self.device.startswith("cuda")
        return {k: (torch.from_numpy(v).pin_memory().to(self.device, non_blocking=True) if cuda
                    else torch.from_numpy(v)) for k, v in batch.items()}

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """One tokenizer call per Arrow batch (the fast tokenizer batches in Rust), no padding yet."""
        return self.tokenizer(texts, truncation=True, max_length=self.settings.scorer_max_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings, float32, in input order."""
        return self.embed_ids(self.token_ids(texts))

    def embed_ids(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        out = np.zeros((len(ids), self.encoder.config.hidden_size), dtype=np.float32)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        with torch.inference_mode(), self._autocast():
            for idx in self._chunks(lengths):
                enc = self._padded(ids, idx, lengths)
                hidden = self.encoder(**enc).last_hidden_state
                emb = torch.nn.functional.normalize(_mean_pool(hidden, enc["attention_mask"]).float(), dim=-1)
                out[idx] = emb[:len(idx)].cpu().numpy()
        return out

    def cosine(self, queries: list[str], titles: list[str]) -> np.ndarray:
        """cos(emb(query), emb(title)) per pair, each distinct text embedded once."""
        return self._cosine_and_tokens(queries, titles)[0]

    def distinct_tokens(self, queries: list[str], titles: list[str]) -> tuple:
        """Each distinct query's and title's token ids, and the rows' indexes into them."""
        uq, q_inv = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
        ut, t_inv = np.unique(np.asarray(titles, dtype=object), return_inverse=True)
        return self.token_ids(list(uq)), q_inv, self.token_ids(list(ut)), t_inv

    def _cosine_and_tokens(self, queries: list[str], titles: list[str]) -> tuple[np.ndarray, tuple]:
        tokens = ids_q, q_inv, ids_t, t_inv = self.distinct_tokens(queries, titles)
        eq, et = self.embed_ids(ids_q), self.embed_ids(ids_t)
        return np.einsum("ij,ij->i", eq[q_inv], et[t_inv]).astype(np.float64), tokens

    def click_logit(self, queries: list[str], titles: list[str]) -> np.ndarray:
        """The click logit: cross-encoder head (+ its prior's logit), or a * cos + b with a head."""
        if self.cross:
            return self.cross_logit(queries, titles)
        if self.head is None:
            raise UserError(f"{self.settings.scorer_path} is a sentence encoder without a click head: "
                             "it gives a cosine, not a click logit")
        return self.head["a"] * self.cosine(queries, titles) + self.head["b"]

    def cross_probability(self, queries: list[str], titles: list[str]) -> np.ndarray:
        return weights.sigmoid(self.click_logit(queries, titles))

    def cross_logit(self, queries: list[str], titles: list[str]) -> np.ndarray:
        import torch

        out = np.zeros(len(queries), dtype=np.float64)
        enc_all = self.tokenizer(queries, titles, truncation=True, max_length=self.settings.train_max_length,
                                 return_attention_mask=False, return_token_type_ids=True)
        ids, types = enc_all["input_ids"], enc_all["token_type_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        with torch.inference_mode(), self._autocast():
            for idx in self._chunks(lengths):
                logits = self.model(**self._padded(ids, idx, lengths, types)).logits
                out[idx] = logits[:len(idx), 0].float().cpu().numpy()
        if self.prior is not None:
            out += self.prior.click_logit(queries, titles)
        return out

    def training_input(self, queries: list[str], titles: list[str], tokens: tuple | None = None) -> dict[str, list]:
        """Fixed-length ids for either trainee (numeric-only training): the cross-encoder's [CLS] query [SEP]
        title [SEP], the bi-encoder's query and title apart; built from `tokens` (distinct_tokens) where exact."""
        n = self.settings.train_max_length
        if tokens is not None and self._template is not None:
            enc, (q_ids, q_len), (t_ids, t_len) = self._inputs_from_tokens(queries, titles, tokens)
        else:
            enc = token_inputs.pair_training_input(self.train_tokenizer, queries, titles, n)
            q_ids, q_len = token_inputs.text_training_input(self.train_tokenizer, queries, n)
            t_ids, t_len = token_inputs.text_training_input(self.train_tokenizer, titles, n)
        return {"input_ids": list(enc["input_ids"]), "token_type_ids": list(enc["token_type_ids"]),
                "input_len": enc["input_len"], "query_ids": list(q_ids), "query_len": q_len,
                "title_ids": list(t_ids), "title_len": t_len}

    def _inputs_from_tokens(self, queries: list[str], titles: list[str], tokens: tuple) -> tuple:
        n, t = self.settings.train_max_length, self._template
        ids_q, q_inv, ids_t, t_inv = tokens
        (cq, nq), (ct, nt) = token_inputs.contents(ids_q, t), token_inputs.contents(ids_t, t)
        single_q, single_t = (token_inputs.single_inputs(c, k, t, n) for c, k in ((cq, nq), (ct, nt)))
        enc = token_inputs.pair_inputs(cq[q_inv], nq[q_inv], ct[t_inv], nt[t_inv], t, n)
        # Where both texts may have been cut at scorer_max_length, their true lengths (which decide the
        # pair's split) are unknown: those rows go through the tokenizer.
        full = self.settings.scorer_max_length
        cut_q, cut_t = (np.array([len(x) >= full for x in ids], dtype=bool) for ids in (ids_q, ids_t))
        redo = np.flatnonzero(cut_q[q_inv] & cut_t[t_inv])
        if len(redo):
            again = token_inputs.pair_training_input(self.train_tokenizer, [queries[i] for i in redo],
                                                     [titles[i] for i in redo], n)
            for k in enc:
                enc[k][redo] = again[k]
        return (enc, (single_q[0][q_inv], single_q[1][q_inv]), (single_t[0][t_inv], single_t[1][t_inv]))

    def score(self, queries: pd.Series, titles: pd.Series) -> pd.DataFrame:
        q = [s.strip() for s in queries.tolist()]
        t = [s.strip() for s in titles.tolist()]
        relevance, tokens = self._cosine_and_tokens(q, t)  # each distinct text tokenised and embedded once
        p = self.cross_probability(q, t) if self.cross else np.full(len(q), np.nan)
        frame = pd.DataFrame({"relevance": relevance, "p_model": p})
        for k, v in self.training_input(q, t, tokens).items():
            frame[k] = v
        return frame


_SCORERS: dict[tuple, PairScorer] = {}


def get_scorer(settings: ScoringSettings) -> PairScorer:
    """The worker's cached scorer (built on first use in this Python process)."""
    from udfs.scoring.device import task_device

    device = task_device(settings.device)
    key = (settings, device)
    if key not in _SCORERS:
        _SCORERS[key] = PairScorer(settings, device)
    return _SCORERS[key]


def make_score_udf(settings: ScoringSettings):
    """Iterator-of-Series pandas UDF: (query, title) -> struct of scores and training input."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(SCORE_SCHEMA)
    def score_pairs(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        scorer = get_scorer(settings)
        for queries, titles in batches:
            model_loader.log_rows("score", len(queries))
            yield scorer.score(queries, titles)
            release_free_heap()  # the batch's frames are sent: else the worker's RSS grows with the pairs

    return score_pairs


# ---------------------------------------------------------------- masked-LM text quality (mlm_quality)

MLM_SCHEMA = "mlm_pll double"


@dataclass(frozen=True)
class MLMSettings:
    path: str               # resolved folder of a checkpoint with a masked-LM head
    batch_size: int         # masked copies per forward pass
    max_length: int         # tokens per title
    torch_threads: int
    device: str


def _mlm_head(model):
    """The LM head applied to hidden states (so logits are computed only at the masked position)."""
    for name in ("cls", "lm_head"):
        if hasattr(model, name):
            return getattr(model, name)
    return None


def pseudo_log_likelihood(model, tokenizer, texts: list[str], batch_size: int, max_length: int,
                          device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-log-likelihood (Salazar et al. 2020): per text, sum over its tokens t of
    log P(t | text with t replaced by [MASK]); returns (pll sums, token counts), in input order.

    Every (text, position) masked copy is one row; copies are length-sorted and batched across
    texts, and logits are taken only at the masked position (the vocabulary projection dominates).
    Special tokens ([CLS], [SEP]) are never masked or scored.
    """
    import torch

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    ids_list = enc["input_ids"]
    text_idx, positions = [], []
    for i, ids in enumerate(ids_list):
        special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        for pos, is_special in enumerate(special):
            if not is_special:
                text_idx.append(i)
                positions.append(pos)
    sums = np.zeros(len(texts), dtype=np.float64)
    counts = np.bincount(np.asarray(text_idx, dtype=np.int64), minlength=len(texts)).astype(np.int64)
    if not text_idx:
        return sums, counts
    text_idx_arr = np.asarray(text_idx, dtype=np.int64)
    pos_arr = np.asarray(positions, dtype=np.int64)
    lengths = np.asarray([len(ids_list[i]) for i in text_idx_arr])
    order = np.argsort(lengths, kind="stable")
    head = _mlm_head(model)
    pad = tokenizer.pad_token_id or 0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda")
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for start in range(0, len(order), batch_size):
            sel = order[start:start + batch_size]
            width = int(lengths[sel].max())
            ids = torch.full((len(sel), width), pad, dtype=torch.long)
            mask = torch.zeros((len(sel), width), dtype=torch.long)
            for r, s in enumerate(sel):
                row = ids_list[text_idx_arr[s]]
                ids[r, :len(row)] = torch.tensor(row)
                mask[r, :len(row)] = 1
            rows = torch.arange(len(sel))
            pos = torch.from_numpy(pos_arr[sel])
            target = ids[rows, pos].clone()
            ids[rows, pos] = tokenizer.mask_token_id
            ids, mask = ids.to(device), mask.to(device)
            if head is not None:
                hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                logits = head(hidden[rows.to(device), pos.to(device)])
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits[rows.to(device), pos.to(device)]
            logp = torch.log_softmax(logits.float(), dim=-1)[torch.arange(len(sel)), target.to(device)]
            np.add.at(sums, text_idx_arr[sel], logp.cpu().numpy().astype(np.float64))
    return sums, counts


class TitleQualityScorer:
    """Mean per-token PLL of titles under a masked LM; one per Python worker (cached)."""

    def __init__(self, settings: MLMSettings, device: str):
        import torch

        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        settings = replace(settings, path=model_loader.on_this_host(settings.path))
        self.settings = settings
        self.device = device
        self.tokenizer = model_loader.load_tokenizer(settings.path)
        self.model = model_loader.load_masked_lm(settings.path, device)

    def score(self, titles: pd.Series) -> pd.DataFrame:
        texts = [s.strip() for s in titles.tolist()]
        sums, counts = pseudo_log_likelihood(self.model, self.tokenizer, texts, self.settings.batch_size,
                                             self.settings.max_length, self.device)
        # A title with no scorable token carries no text evidence: the floor, not a perfect score.
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), -50.0)
        return pd.DataFrame({"mlm_pll": mean})


_MLM_SCORERS: dict[tuple, TitleQualityScorer] = {}


def make_mlm_udf(settings: MLMSettings):
    """Iterator pandas UDF: distinct title -> mean per-token pseudo-log-likelihood."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(MLM_SCHEMA)
    def title_pll(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from udfs.scoring.device import task_device

        device = task_device(settings.device)
        key = (settings, device)
        if key not in _MLM_SCORERS:
            _MLM_SCORERS[key] = TitleQualityScorer(settings, device)
        for titles in batches:
            yield _MLM_SCORERS[key].score(titles)

    return title_pll
