"""MLflow tracking, off by default (`tracking.mlflow: true`).

`score` logs the weight summary, `train` the resolved config as params, per-epoch metrics, the
input's provenance and the model folder as an artifact; `pipeline` makes one parent run with a
child per (strategy, round). Everything is logged from the driver after the work is done, so the
DDP ranks never touch MLflow and a tracking failure cannot lose a finished output (it is a warning).

Default store: `sqlite:///<cwd>/mlruns/mlflow.db` with artifacts in `mlruns/artifacts`: a local
database, no server. MLflow 3's plain folder store needs MLFLOW_ALLOW_FILE_STORE and is in
maintenance mode, so the default is SQLite; `tracking.uri` takes any MLflow URI (a server, Databricks).
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.common import log

_active_depth = [0]


def enabled(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("tracking", {}).get("mlflow"))


def tracking_uri(cfg: dict[str, Any]) -> str:
    uri = cfg["tracking"]["uri"]
    return uri or f"sqlite:///{Path('mlruns').resolve() / 'mlflow.db'}"


def _experiment(mlflow, cfg: dict[str, Any]) -> None:
    name, uri = cfg["tracking"]["experiment"], tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(name) is None:
        artifacts = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in whatever the cwd is
            artifacts = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        mlflow.create_experiment(name, artifact_location=artifacts)
    mlflow.set_experiment(name)


def metrics(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric entries as MLflow metrics; names MLflow refuses (ndcg@10) get '@' -> '_at_'."""
    return {re.sub(r"[^A-Za-z0-9_\-. :/]", "_", f"{prefix}{k}".replace("@", "_at_")): float(v)
            for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: the resolved config as MLflow params (values cut to 500 chars)."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out


@contextlib.contextmanager
def run(cfg: dict[str, Any], name: str, **tags: Any) -> Iterator[Any]:
    """An MLflow run (nested inside an open one), or None when tracking is off or MLflow fails."""
    if not enabled(cfg):
        yield None
        return
    try:
        import mlflow

        if _active_depth[0] == 0:
            _experiment(mlflow, cfg)
        mlflow.start_run(run_name=name, nested=_active_depth[0] > 0,
                         tags={k: str(v) for k, v in tags.items() if v is not None})
    except Exception as exc:  # noqa: BLE001 - tracking must never fail a run
        log.warning("tracking: MLflow run not started (%s: %s)", type(exc).__name__, exc)
        yield None
        return
    _active_depth[0] += 1
    try:
        yield mlflow
    finally:
        _active_depth[0] -= 1
        with contextlib.suppress(Exception):
            mlflow.end_run()


def _safe(fn):
    def wrapper(mlflow, *args, **kwargs):
        if mlflow is None:
            return
        try:
            fn(mlflow, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            log.warning("tracking: %s not logged (%s: %s)", fn.__name__, type(exc).__name__, exc)
    return wrapper


@_safe
def log_score(mlflow, summary: dict[str, Any]) -> None:
    w = summary["weights"]
    mlflow.set_tags({"input": summary.get("input"), "score_run_id": summary.get("run_id"),
                     "config_hash": summary.get("config_hash"), "strategy": summary.get("strategy")})
    values = {"rows_in": summary["rows_in"], "rows_out": summary["rows_out"],
               "rows_quarantined": summary["rows_quarantined"], "weight_mean": w["mean"],
               "weight_ess": w["effective_sample_size"], "weight_ess_fraction": w["ess_fraction"],
               **{f"weight_q{q}": v for q, v in w["quantiles"].items()},
               "compaction_ratio": summary.get("pairs", {}).get("compaction_ratio", 0.0),
               "score_seconds": summary.get("seconds", 0.0)}
    mlflow.log_metrics(metrics(values))


@_safe
def log_train(mlflow, summary: dict[str, Any], cfg: dict[str, Any], model_dir: str) -> None:
    mlflow.log_params(flat(cfg))
    mlflow.set_tags({"input": summary.get("input"), "input_run_id": summary.get("input_run_id"),
                     "selected": summary.get("selected"), "model_kind": summary.get("kind")})
    start = summary.get("start") or {}
    mlflow.log_metrics(metrics(start, "start_"))
    for h in summary["history"]:
        mlflow.log_metrics(metrics({k: v for k, v in h.items() if k != "epoch"}), step=int(h["epoch"]))
    for entry in sorted(Path(model_dir).iterdir()) if os.path.isdir(model_dir) else []:
        if entry.name in ("checkpoints", "_report_figures"):  # optimiser state; the report's PNG copies
            continue
        if entry.is_dir():
            mlflow.log_artifacts(str(entry), artifact_path=f"model/{entry.name}")
        else:
            mlflow.log_artifact(str(entry), artifact_path="model")


@_safe
def log_eval(mlflow, values: dict[str, Any], prefix: str = "heldout_") -> None:
    mlflow.log_metrics(metrics(values, prefix))
