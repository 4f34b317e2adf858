"""The trainee: a BERT cross-encoder, `[CLS] query [SEP] title [SEP]` -> one click logit.

It is a plain `BertForSequenceClassification` (num_labels=1), so a saved clickweight model loads
with `AutoModelForSequenceClassification.from_pretrained(folder)` and nothing of ours.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from udfs import model_loader

MARKER = "clickweight_model.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def build_cross_encoder(path: str | None):
    """From a sentence-encoder folder (head freshly initialised) or an earlier cross-encoder."""
    from transformers import AutoModelForSequenceClassification

    folder = model_loader.resolve_model_path(path)
    return AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, local_files_only=True, trust_remote_code=False, use_safetensors=True,
    )


def forward_logits(model, input_ids: torch.Tensor, token_type_ids: torch.Tensor,
                   input_len: torch.Tensor) -> torch.Tensor:
    """Logits from fixed-length ids, trimmed to the batch's longest row (dynamic padding)."""
    width = int(input_len.max())
    ids = input_ids[:, :width].long()
    types = token_type_ids[:, :width].long()
    mask = (torch.arange(width, device=input_len.device).unsqueeze(0) < input_len.unsqueeze(1)).long()
    return model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits[:, 0]


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_i w_i * BCE(sigmoid(z_i), y_i): unbiased for importance weights of mean 1."""
    per_row = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return (weights.float() * per_row).mean()


def adamw(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm (the usual BERT fine-tuning split)."""
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm"))]
    no_decay = [p for n, p in model.named_parameters() if any(k in n for k in ("bias", "LayerNorm"))]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def linear_warmup_decay(warmup: int, total: int):
    """LambdaLR factor: linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def save_model(model, tokenizer_source: str, folder: str | Path, info: dict[str, Any]) -> None:
    """save_pretrained (safetensors) + tokenizer files + a marker with training provenance."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    src = Path(model_loader.resolve_model_path(tokenizer_source))
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    (folder / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
