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


# Per query: two relevant product titles and two unrelated ones; no title equals its query, so a
# score of "cosine 1 for identical text" (which any encoder, even a random one, gives) does not help.
CASES = {
    "cordless drill": (["dewalt 20-volt max cordless drill kit", "milwaukee m18 brushless drill driver"],
                       ["white ceramic toilet seat", "32 oz fabric softener"]),
    "ceiling fan": (["hunter 52 in. indoor ceiling fan with light kit", "harbor breeze 44-inch brushed nickel fan"],
                    ["stainless steel kitchen sink", "garden hose nozzle"]),
    "interior paint": (["behr premium plus eggshell wall paint 1 gallon", "valspar satin latex paint for walls"],
                       ["oak bookshelf with five shelves", "cordless leaf blower"]),
    "garden hose": (["flexzilla 50 ft. garden hose", "expandable water hose 100 feet"],
                    ["led light bulb 60 watt", "ceramic floor tile 12 x 12"]),
    "door lock": (["kwikset smartkey deadbolt", "schlage keypad entry door lever"],
                  ["bathroom vanity mirror", "potting soil 2 cu ft"]),
}


def run_evaluate(model: str, pairs: str, out) -> dict:
    code = cli(["evaluate", "--model", model, "--input", pairs, "--label-col", "relevance",
                "--positive-threshold", "2.0", "--output", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_evaluate_cli_with_packaged_encoder_ranks_relevant_titles_first(tmp_path, tiny_model_dir):
    rows = []
    for q, (relevant, unrelated) in CASES.items():
        rows += [{"query": q, "title": t, "relevance": 3.0} for t in relevant]
        rows += [{"query": q, "title": t, "relevance": 0.0} for t in unrelated]
    frame = pd.DataFrame(rows)
    assert not (frame["query"] == frame["title"]).any()
    frame.to_parquet(tmp_path / "pairs.parquet")
    from udfs.scoring.model_loader import default_model_path

    packaged = run_evaluate(default_model_path(), str(tmp_path / "pairs.parquet"), tmp_path / "packaged.json")
    assert packaged["rows"] == 20 and packaged["queries"] == 5 and packaged["positive_rate"] == 0.5
    # Every relevant pair above every unrelated one, across queries too.
    assert packaged["auc"] == 1.0 and packaged["ndcg@10"] == pytest.approx(1.0)
    # The same data through a randomly initialised BERT (same tokenizer, same cosine path): not
    # perfect, so the perfect score above comes from the trained encoder, not from the data.
    random_bert = run_evaluate(tiny_model_dir, str(tmp_path / "pairs.parquet"), tmp_path / "random.json")
    assert random_bert["rows"] == 20
    assert random_bert["auc"] <= 0.8 and random_bert["ndcg@10"] < 0.95, random_bert


def test_evaluate_cli_reports_missing_label_column(tmp_path, capsys):
    pd.DataFrame({"query": ["q"], "title": ["t"]}).to_parquet(tmp_path / "p.parquet")
    from udfs.scoring.model_loader import default_model_path

    code = cli(["evaluate", "--model", default_model_path(), "--input", str(tmp_path / "p.parquet"),
                "--label-col", "relevance", "--output", str(tmp_path / "o.json")])
    assert code == 2 and "no column(s) relevance" in capsys.readouterr().err
