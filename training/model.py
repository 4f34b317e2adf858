"""The trainees, built to start exactly where the scorer is and only move up from there.

bi_encoder (default): the scorer's own sentence encoder (mean pooling, L2-normalised) with the
click logit z = a * cos(emb(query), emb(title)) + b. (a, b) start at the score job's Platt
calibration, so at step 0 the trainee's probability is the score job's calibrated `p_model`.
`a` keeps the calibration's sign and is learnt as sign * exp(log|a|) (positive for any encoder
that ranks relevant titles higher).

cross_encoder: `[CLS] query [SEP] title [SEP]` -> BERT -> a zero-initialised linear head, plus the
frozen prior logit logit(p_model) of the scorer as an offset: at step 0 it, too, reproduces the
calibrated scorer, and the head learns only the correction (never a random head; measured in
docs/weighting_quality.md: a random head ended far below the zero-shot encoder).

Saved folders:
- bi_encoder: the sentence-transformers layout (config.json + model.safetensors of a plain
  BertModel, tokenizer, modules.json, 1_Pooling/, 2_Normalize/) and `clickweight_model.json` with
  kind, a and b. `AutoModel.from_pretrained(folder)` and SentenceTransformer(folder) load it.
- cross_encoder: a plain `BertForSequenceClassification` (num_labels=1) plus `prior/`, a copy of
  the scorer whose logit is the offset, and its calibration in `clickweight_model.json`.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from udfs.clickstream.schema import POSITION_LABEL, POSITION_WEIGHT, QUERY_KEY
from udfs.errors import UserError
from udfs.scoring import model_loader
from udfs.scoring.device import autocast

MARKER = model_loader.MARKER
KINDS = ("bi_encoder", "cross_encoder")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SENTENCE_TRANSFORMER_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
POOLING = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
           "pooling_mode_mean_sqrt_len_tokens": False}
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def _mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return (torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).long()


GPU_WIDTH_MULTIPLE = 8


def trimmed_width(lengths: torch.Tensor, columns: int, round_up: bool | None = None) -> int:
    """The width a batch of fixed-length ids runs at: its longest row; on a GPU rounded up to a
    multiple of GPU_WIDTH_MULTIPLE (at most `columns`). There PyTorch's attention (cuDNN on an
    H100/H200) builds an execution plan for each new sequence length, about 130 ms forward and
    backward together, measured; with max_length 64 a run would meet up to 64 widths, rounded at
    most 8 (docs/performance.md, "The training step on an H200"). The CPU keeps the exact width
    (`round_up` None: round on a GPU only)."""
    width = int(lengths.max())
    if lengths.is_cuda if round_up is None else round_up:
        width = min(columns, -(-width // GPU_WIDTH_MULTIPLE) * GPU_WIDTH_MULTIPLE)
    return width


def mean_pooled(encoder, ids: torch.Tensor, lengths: torch.Tensor, round_up: bool | None = None) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings of fixed-length ids, trimmed to the longest row
    (trimmed_width)."""
    width = trimmed_width(lengths, ids.shape[1], round_up)
    ids = ids[:, :width].long()
    mask = _mask(lengths, width)
    hidden = encoder(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


class Trainee(torch.nn.Module):
    """What both trainees share: an optional position tower (train.position_tower).

    With a tower, a training batch that carries the pair table's per-position columns gets a logit
    per pair and position bucket, z + t_k (two-tower / PAL: the relevance tower explains relevance,
    t_k explains position). Evaluation batches do not carry them, and export saves the relevance
    tower alone, so the tower is dropped wherever the model is used."""

    def __init__(self):
        super().__init__()
        self.register_parameter("position_tower", None)  # state dicts hold it only once it is added
        self.register_parameter("noise_floor", None)     # logit of eps (train.tower_noise_floor)

    def add_position_tower(self, logits: list[float], noise_floor: float | None = None) -> None:
        self.position_tower = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32))
        if noise_floor is not None:
            eps = min(max(noise_floor, 1e-4), 0.5)
            self.noise_floor = torch.nn.Parameter(torch.tensor(math.log(eps / (1 - eps)), dtype=torch.float32))

    def _by_position(self, z: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.position_tower is not None and POSITION_WEIGHT in batch:
            logits = z.unsqueeze(1) + self.position_tower.unsqueeze(0)
            return logits if self.noise_floor is None else with_noise_floor(logits, self.noise_floor)
        return z

    def tower_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in (self.position_tower, self.noise_floor) if p is not None]


def with_noise_floor(logits: torch.Tensor, floor_logit: torch.Tensor) -> torch.Tensor:
    """logit(eps + (1 - eps) sigmoid(l)), eps = sigmoid(floor_logit): clicks that happen whatever the
    item and its position (noise clicks, flips) on top of examination x relevance. In log space, so
    the loss stays finite for any l. training/metrics.py's `floored_logit` is the same in numpy."""
    ls = torch.nn.functional.logsigmoid
    log_eps, log_1m_eps = ls(floor_logit.float()), ls(-floor_logit.float())
    log_p = torch.logaddexp(log_eps.expand_as(logits), log_1m_eps + ls(logits.float()))
    return log_p - log_1m_eps - ls(-logits.float())


class BiEncoderTrainee(Trainee):
    """z = a * cos(emb(q), emb(t)) + b over one shared encoder."""

    kind = "bi_encoder"
    input_columns = ("query_ids", "query_len", "title_ids", "title_len")
    start_feature = "relevance"  # the table column that is this trainee's cosine at step 0

    def __init__(self, encoder, a: float, b: float):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("a_sign", torch.tensor(1.0 if a >= 0 else -1.0))
        self.log_abs_a = torch.nn.Parameter(torch.tensor(math.log(max(abs(a), 1e-6)), dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.tensor(float(b), dtype=torch.float32))

    @property
    def a(self) -> torch.Tensor:
        return self.a_sign * torch.exp(self.log_abs_a)

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_abs_a, self.b, *self.tower_parameters()]

    def forward(self, batch: dict[str, torch.Tensor], one_call: bool | None = None) -> torch.Tensor:
        """`one_call` None: one encoder call for both texts on a GPU, two on a CPU."""
        q_ids, t_ids = batch["query_ids"], batch["title_ids"]
        if (q_ids.is_cuda if one_call is None else one_call) and q_ids.shape[1] == t_ids.shape[1]:
            # On a GPU one encoder call for queries and titles together, both at the wider width:
            # at batch 256 the step is bound by kernel launches there, and this halves the encoder's
            # (measured on an H200: docs/performance.md, "The training step on an H200"). The CPU
            # keeps two calls, each at its own width.
            n = len(q_ids)
            e = mean_pooled(self.encoder, torch.cat([q_ids, t_ids]),
                            torch.cat([batch["query_len"], batch["title_len"]]), one_call)
            eq, et = e[:n], e[n:]
        else:
            eq = mean_pooled(self.encoder, q_ids, batch["query_len"])
            et = mean_pooled(self.encoder, t_ids, batch["title_len"])
        return self._by_position(self.a * (eq * et).sum(-1) + self.b, batch)

    def calibration(self) -> dict[str, float]:
        return {"a": float(self.a.detach()), "b": float(self.b.detach())}

    def start_head(self) -> tuple[float, float, bool]:
        """(a, b, whether a is free) of z = a * start_feature + b at the current weights."""
        return float(self.a.detach()), float(self.b.detach()), True

    @torch.no_grad()
    def set_start_head(self, a: float, b: float) -> None:
        self.a_sign.fill_(1.0 if a >= 0 else -1.0)
        self.log_abs_a.fill_(math.log(max(abs(a), 1e-6)))
        self.b.fill_(b)


class CrossEncoderTrainee(Trainee):
    """z = head(BERT([CLS] q [SEP] t [SEP])) + prior_logit, the head zero-initialised."""

    kind = "cross_encoder"
    input_columns = ("input_ids", "token_type_ids", "input_len", "prior_logit")
    start_feature = "prior_logit"  # at step 0 (zero head) z = prior_logit + head bias

    def __init__(self, model):
        super().__init__()
        self.model = model

    def head_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.model.classifier.parameters(), *self.tower_parameters()]

    def start_head(self) -> tuple[float, float, bool]:
        return 1.0, float(self.model.classifier.bias.detach()[0]), False

    @torch.no_grad()
    def set_start_head(self, a: float, b: float) -> None:
        self.model.classifier.bias.fill_(b)  # a stays 1: the prior enters unscaled

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        width = trimmed_width(batch["input_len"], batch["input_ids"].shape[1])
        ids = batch["input_ids"][:, :width].long()
        types = batch["token_type_ids"][:, :width].long()
        logits = self.model(input_ids=ids, token_type_ids=types, attention_mask=_mask(batch["input_len"], width)).logits
        return self._by_position(logits[:, 0].float() + batch["prior_logit"].float(), batch)


def build_trainee(kind: str, path: str | None, calibration: dict[str, float] | None) -> torch.nn.Module:
    """A trainee at the scorer's calibrated starting point (see the module docstring). Runs in each rank:
    the packaged default checkpoint is this host's copy (a shipped archive's, on an executor)."""
    folder = _local_folder(path)
    trainee = _build_trainee(kind, folder, calibration)
    model_loader.count_load(f"trainee_{kind}", folder, "cpu")
    return trainee


def _local_folder(path: str | None) -> str:
    """A model folder as this process opens it (model_loader.on_this_host), checked."""
    return model_loader.resolve_model_path(model_loader.on_this_host(str(path)) if path else None)


def _build_trainee(kind: str, folder: str, calibration: dict[str, float] | None) -> torch.nn.Module:
    if kind == "bi_encoder":
        from transformers import AutoModel

        head = model_loader.click_head(folder) or calibration
        if head is None:
            raise UserError("the bi-encoder trainee starts from the score job's Platt calibration, but the "
                             "input's _summary.json has none (was it scored by a cross-encoder?); use "
                             "model.kind=cross_encoder or score with a sentence encoder")
        if calibration is not None:
            head = calibration  # the table's fit is the one p_model (and so step 0) was computed with
        encoder = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                            use_safetensors=True)
        for name, p in encoder.named_parameters():
            if name.startswith("pooler."):  # unused by mean pooling: no gradient, so DDP must not wait on it
                p.requires_grad_(False)
        return BiEncoderTrainee(encoder, head["a"], head["b"])
    if kind == "cross_encoder":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=1, local_files_only=True, trust_remote_code=False, use_safetensors=True)
        # Zero head, always: the prior (the scorer's logit, the previous round's model included) is the
        # whole prediction at step 0; an earlier round's head is already inside that prior.
        torch.nn.init.zeros_(model.classifier.weight)
        torch.nn.init.zeros_(model.classifier.bias)
        return CrossEncoderTrainee(model)
    raise UserError(f"model.kind {kind!r}: choose one of {KINDS}")


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_i w_i * BCE(sigmoid(z_i), y_i), y_i in [0, 1] (a click, or a pair's weighted click rate)."""
    per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (weights.float() * per_row).mean()


def weighted_listwise(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                      groups: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each query's pairs in the batch (ListNet top-1; the listwise loss of
    Hager et al. 2024), summed over queries and divided by the batch's rows:

        sum_q W_q * -sum_{i in q} t_i log softmax_q(z)_i / rows,   t_i = y_i / sum_{j in q} y_j,
        W_q = sum_{i in q} w_i

    y_i is the pair's soft label (its click rate, or a corrected label), so the target is relative
    relevance within the query, whatever each pair's exposure; w_i its weight, so a query counts in
    proportion to its weighted impressions, as in the pointwise loss. A query with one pair in the
    batch or no clicks has no listwise information and adds 0."""
    z = logits.float()
    y, w = labels.float(), weights.float()
    _, inv = torch.unique(groups, return_inverse=True)
    g = int(inv.max()) + 1 if len(inv) else 0
    zeros = torch.zeros(g, dtype=z.dtype, device=z.device)
    top = zeros.scatter_reduce(0, inv, z.detach(), reduce="amax", include_self=False)
    shifted = z - top[inv]
    log_p = shifted - torch.log(zeros.index_add(0, inv, torch.exp(shifted)))[inv]
    y_sum = zeros.index_add(0, inv, y)
    size = zeros.index_add(0, inv, torch.ones_like(y))
    live = (y_sum > 0) & (size > 1)
    target = torch.where(live[inv], y / y_sum.clamp_min(1e-12)[inv], torch.zeros_like(y))
    per_query = -zeros.index_add(0, inv, target * log_p)
    return (zeros.index_add(0, inv, w) * per_query * live).sum() / max(len(z), 1)


def weighted_bce_by_position(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_{i,k} W_ik * BCE(sigmoid(z_ik), y_ik) / rows: the pair table's per-position click rates y_ik
    and weights W_ik (sum_k W_ik = w_i). With equal logits across k it equals weighted_bce."""
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (weights.float() * per).sum() / max(len(logits), 1)


def training_loss(objective: str, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if logits.dim() == 2:  # the position tower's logit per pair and position
        return weighted_bce_by_position(logits, batch[POSITION_LABEL], batch[POSITION_WEIGHT])
    if objective == "listwise":
        return weighted_listwise(logits, batch["label"], batch["weight"], batch[QUERY_KEY])
    return weighted_bce(logits, batch["label"], batch["weight"])


def optimiser_step(forward: torch.nn.Module, model: torch.nn.Module, optim: torch.optim.Optimizer,
                   batch: dict[str, torch.Tensor], precision: str, device: str, max_grad_norm: float,
                   sched: Any = None, objective: str = "pointwise") -> float:
    """One training step, the recipe's and the benchmarks': forward under autocast (`forward` is the
    DDP wrapper or the model itself), the objective's weighted loss, backward, gradient clipping on
    `model`, step."""
    with autocast(precision, device):
        logits = forward(batch)
    loss = training_loss(objective, logits, batch)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optim.step()
    if sched is not None:
        sched.step()
    return float(loss.detach())


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, head_lr: float | None = None) -> torch.optim.AdamW:
    """AdamW: no weight decay on biases and LayerNorm (the usual BERT split); the click head
    (a, b, or the cross-encoder's linear head) in its own group at `head_lr`, undecayed."""
    head_ids = {id(p) for p in model.head_parameters()} if hasattr(model, "head_parameters") else set()
    body = [(n, p) for n, p in model.named_parameters() if id(p) not in head_ids]
    decay = [p for n, p in body if not any(k in n for k in ("bias", "LayerNorm"))]
    no_decay = [p for n, p in body if any(k in n for k in ("bias", "LayerNorm"))]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if head_ids:
        groups.append({"params": model.head_parameters(), "weight_decay": 0.0, "lr": head_lr or lr})
    return torch.optim.AdamW(groups, lr=lr)


def linear_warmup_decay(warmup: int, total: int):
    """LambdaLR factor: linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def _copy_files(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    for name in names:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


def save_trainee(trainee: torch.nn.Module, source: str | None, folder: str | Path, info: dict[str, Any],
                 prior: dict[str, Any] | None = None) -> None:
    """The model folder (layouts in the module docstring) with a marker holding kind and provenance.

    source: the folder the trainee was built from (tokenizer, sentence-transformers files).
    prior (cross_encoder): {"path": scorer folder, "calibration": {a, b} or None}.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = Path(_local_folder(source))
    _copy_files(src, folder, TOKENIZER_FILES)
    marker: dict[str, Any] = {"kind": trainee.kind, **info}
    if isinstance(trainee, BiEncoderTrainee):
        trainee.encoder.save_pretrained(folder, safe_serialization=True)
        _copy_files(src, folder, SENTENCE_TRANSFORMER_FILES)
        if not (folder / "modules.json").exists():
            (folder / "modules.json").write_text(json.dumps(MODULES, indent=2) + "\n")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": trainee.encoder.config.hidden_size, **POOLING}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
        (folder / "2_Normalize").mkdir(exist_ok=True)
        marker["click_head"] = trainee.calibration()
    else:
        trainee.model.save_pretrained(folder, safe_serialization=True)
        if prior is not None:
            dst = folder / "prior"
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(_local_folder(prior["path"]), dst,
                            ignore=shutil.ignore_patterns("checkpoints", "*.pt", "train_summary.json"))
            marker["prior"] = {"path": "prior", "calibration": prior.get("calibration")}
    (folder / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True, default=str) + "\n")
