"""Evaluate a model folder on (query, title, label) Parquet: AUC, NDCG@10, log loss.

Runs in plain PyTorch on the driver: evaluation sets are small next to the click logs. A
clickweight model (bi-encoder a * cos + b, or cross-encoder with its prior) is scored by its click
probability; any other BERT folder by the cosine of its mean-pooled embeddings (the zero-shot
baseline).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from training import metrics
from udfs.errors import UserError
from udfs.files import replace_atomically
from udfs.scoring import model_loader
from udfs.scoring.bert import PairScorer, ScoringSettings


def predict(model_dir: str, queries: list[str], titles: list[str], batch_size: int = 64,
            max_length: int = 64, device: str = "cpu") -> np.ndarray:
    """Probability (cross-encoder) or cosine (sentence encoder) per pair."""
    folder = model_loader.resolve_model_path(model_dir)
    settings = ScoringSettings(scorer_path=folder, trainee_path=folder, batch_size=batch_size,
                               scorer_max_length=max_length, train_max_length=max_length,
                               torch_threads=0, device=device)
    scorer = PairScorer(settings, device)
    if gives_probability(folder):
        return scorer.cross_probability(queries, titles)
    return scorer.cosine([q.strip() for q in queries], [t.strip() for t in titles])


def gives_probability(folder: str) -> bool:
    """A clickweight model (either kind) predicts P(click); any other encoder only a cosine."""
    return model_loader.is_cross_encoder(folder) or model_loader.click_head(folder) is not None


def evaluate_frame(frame: pd.DataFrame, scores: np.ndarray, label_col: str,
                   positive_threshold: float | None, is_probability: bool) -> dict[str, Any]:
    y = frame[label_col].to_numpy(dtype=np.float64)
    binary = bool(np.isin(np.unique(y), [0.0, 1.0]).all())
    threshold = positive_threshold if positive_threshold is not None else (1.0 if binary else float(np.median(y)))
    ndcg, groups = metrics.ndcg_at_k(frame["query"].to_numpy(), y, scores, k=10)
    out: dict[str, Any] = {
        "rows": int(len(frame)), "queries": int(frame["query"].nunique()), "ndcg_queries": groups,
        "auc": metrics.auc(y >= threshold, scores), "ndcg@10": ndcg, "positive_threshold": threshold,
        "positive_rate": float(np.mean(y >= threshold)),
        "logloss": metrics.log_loss(y, scores) if binary and is_probability else None,
    }
    return out


def evaluate(model_dir: str, input_path: str, label_col: str, positive_threshold: float | None = None,
             batch_size: int = 64, max_length: int = 64, predictions_path: str | None = None) -> dict[str, Any]:
    """Metrics of a model on labelled pairs; `predictions_path` also keeps each pair's score (Parquet:
    query, title, the label, score), written beside itself and renamed into place."""
    frame = pd.read_parquet(input_path)
    missing = [c for c in ("query", "title", label_col) if c not in frame.columns]
    if missing:
        raise UserError(f"{input_path} lacks column(s) {missing}")
    bad = frame["query"].isna() | frame["title"].isna() | frame[label_col].isna()
    if bad.any():
        raise UserError(f"{int(bad.sum())} evaluation rows have a null query, title or label")
    started = time.time()
    folder = model_loader.resolve_model_path(model_dir)
    scores = predict(folder, frame["query"].astype(str).tolist(), frame["title"].astype(str).tolist(),
                     batch_size, max_length)
    result = evaluate_frame(frame, scores, label_col, positive_threshold,
                            is_probability=gives_probability(folder))
    result.update({"model": folder, "input": input_path, "label_col": label_col,
                   "seconds": round(time.time() - started, 2)})
    if predictions_path:
        kept = frame[["query", "title", label_col]].assign(score=scores)
        replace_atomically(predictions_path, lambda tmp: kept.to_parquet(tmp, index=False))
        result["predictions"] = predictions_path
    return result
