"""`clickweight evaluate` on cases with a known answer, with the real packaged MiniLM."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from jobs.cli import main as cli
from training.evaluate import evaluate_frame


def test_evaluate_frame_known_answer():
    frame = pd.DataFrame({"query": ["a", "a", "b", "b"], "relevance": [3.0, 1.0, 1.0, 2.5]})
    out = evaluate_frame(frame, np.array([0.9, 0.1, 0.2, 0.8]), "relevance", 2.0, is_probability=False)
    assert out["auc"] == 1.0 and out["ndcg@10"] == pytest.approx(1.0) and out["logloss"] is None
    assert out["rows"] == 4 and out["ndcg_queries"] == 2


def test_evaluate_cli_with_packaged_encoder_ranks_exact_matches_first(tmp_path):
    # A title identical to its query has cosine 1 with it: the zero-shot encoder must rank it first.
    queries = ["cordless drill", "ceiling fan", "white interior paint", "garden hose"]
    others = ["stainless steel kitchen sink", "oak bookshelf with five shelves", "ceramic floor tile"]
    rows = []
    for q in queries:
        rows.append({"query": q, "title": q, "relevance": 3.0})
        rows += [{"query": q, "title": t, "relevance": 1.0} for t in others]
    pd.DataFrame(rows).to_parquet(tmp_path / "pairs.parquet")
    out = tmp_path / "metrics.json"
    from udfs.model_loader import default_model_path

    code = cli(["evaluate", "--model", default_model_path(), "--input", str(tmp_path / "pairs.parquet"),
                "--label-col", "relevance", "--positive-threshold", "2.5", "--output", str(out)])
    result = json.loads(out.read_text())
    assert code == 0 and result["rows"] == 16 and result["auc"] == 1.0 and result["ndcg@10"] == pytest.approx(1.0)


def test_evaluate_cli_reports_missing_label_column(tmp_path, capsys):
    pd.DataFrame({"query": ["q"], "title": ["t"]}).to_parquet(tmp_path / "p.parquet")
    from udfs.model_loader import default_model_path

    code = cli(["evaluate", "--model", default_model_path(), "--input", str(tmp_path / "p.parquet"),
                "--label-col", "relevance", "--output", str(tmp_path / "o.json")])
    assert code == 2 and "lacks column(s) ['relevance']" in capsys.readouterr().err
