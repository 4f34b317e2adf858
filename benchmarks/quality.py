"""Does weighting give a better model? The protocol of docs/quality.md, in one invocation.

Real queries, titles and human grades (../shared/data/homedepot_relevance_dev.parquet), clicks from a
grid of click models (benchmarks/protocol.py), the real CLIs (`clickweight score`, `train`,
`evaluate`). Per seed: train and held-out queries from one side of the fixed dev/test split; per click
model: the naive baseline, the oracles and each configuration; AUC on the held-out queries against
their true grades (grade >= 2.5 positive). Reported per click model: each configuration's paired AUC
difference against naive with a 95 % bootstrap interval over held-out queries (combined over seeds),
its share of the headroom to `truth`, and its gain over zero-shot per seed.

Intervals (benchmarks/protocol.py): the seeds' held-out queries come from one pool and overlap, so the
bootstrap over held-out queries is joint (one resample of the union of the seeds' held-out queries per
draw, applied to every seed and every configuration); beside it, a t interval over seeds of the per-seed
differences (training variance); the headroom share has a percentile interval from the same draws.

Every result row names the run's own split, train_queries, heldout_queries and sessions (older rows:
derived from their predictions or scores path, which encodes all but the held-out query count; that
one from their file's arguments where the file is a run's own). Rows are deduplicated, skipped as
finished and grouped on them; rows of different splits are never tabulated together, and a
configuration is paired with naive only on the same held-out rows.

    # choose on dev (as often as you like) ...
    .venv/bin/python -m benchmarks.quality --split dev --seeds 0 1 2 3 4 \\
        --click-models graded,pbm_eta1,flip20 --configs naive,truth,clean,default --tag dev
    # ... then report on test, once per configuration
    .venv/bin/python -m benchmarks.quality --split test --seeds 0 1 2 3 4 --click-models all \\
        --configs naive,truth,clean,default --tag test

Configurations: `naive` (uniform weights, the raw click rate as label, pointwise, no tower: README's
naive baseline, jobs/config.py NAIVE_BASELINE), `listwise` (uniform weights, train.objective=listwise),
`tower` (uniform weights, train.position_tower=true), `tower_floor` (the tower with a learnt noise
floor, train.tower_noise_floor=true), `default` (the product's defaults: the click model's pair label,
uniform weights), the oracles `truth` (each pair's true click probability as its label, through the
same trainee and gate) and `clean` (the same queries' sessions without noise or position bias),
any registered strategy by name, and `--config NAME=key=value;key=value` for anything else. `X+r1` is
one more round of the loop after X (what `clickweight pipeline --set rounds=2` does): the clickstream
rescored with X's trained model as scorer, then fine-tuned from that model, under X's settings.
Writes benchmarks/results/quality_TAG.{json,md}; run folders under --work. Each evaluated model's
held-out scores are also kept under benchmarks/results/quality_scores/ (float32, a few tens of kB), so
a matrix that spans sessions is tabulated with `--tabulate-only --include <earlier results>` after its
run folders are gone. `--against NAME` adds each configuration's paired difference from NAME (a screen
that compares with today's default label) on the same bootstrap draws. Run from the repository root.

Nothing is computed twice: a `clean` run whose log is byte-identical to a finished one's of the same
seed (click models that share their attractiveness) is copied; a `truth` run whose training columns are
the same bytes as a finished one's reuses its trained candidates and replays the gate on its own
held-out clicks (reuse_truth_training). On the test split's seed 0, where all six were trained, the
reuse reproduces each real run's choice, gate data and held-out scores exactly. A click model whose
every requested configuration is already a row of an `--include`d file of the same split, sizes and
sessions, with the same settings, is not run again (a matrix cut off with its run folders lost goes on
from its committed results file); a click model with any configuration missing runs whole.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from benchmarks.bench_data import HOMEDEPOT
from benchmarks.gate_study import PROPENSITY_MIN, per_pair_losses
from benchmarks.protocol import (
    CLICK_MODELS,
    PROBE_CLICK_MODELS,
    click_model_settings,
    combine_seeds,
    headroom_share,
    joint_bootstrap_auc_differences,
    sample_split,
    share_interval,
)
from jobs.config import NAIVE_BASELINE
from training.metrics import SELECT_KEYS, auc, gate_keeps, log_examination, paired_standard_error
from training.model import BiEncoderTrainee
from udfs.clickstream.schema import PAIRS_DIR
from udfs.clickstream.simulate import SimulatorSettings, click_probability, simulate
from udfs.scoring.model_loader import default_model_path
from udfs.weighting import strategies

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "clickweight")
POSITIVE = 2.5
# Each evaluated model's held-out scores, kept in the repository (float32, the held-out set's row order),
# so a matrix that takes several sessions can be tabulated after its run folders are gone.
SCORES = ROOT / "benchmarks" / "results" / "quality_scores"
RUN_PATH = re.compile(r"(?P<split>dev|test)/seed(?P<seed>\d+)_q(?P<train_queries>\d+)/(?:(?P<folder>[^/]+)/)?"
                      r"eval_[^/]+_h(?P<rows>\d+)\.parquet$")
CLICK_MODEL_FOLDER = re.compile(r"^(?P<click_model>.+)_s(?P<sessions>[0-9.e+-]+)$")  # f"{cm}_s{sessions:g}"
# What a result row was run with (the run's own arguments): rows are deduplicated, reused and grouped on it.
PROVENANCE = ("split", "train_queries", "heldout_queries", "sessions")
AUC_TOLERANCE = 1e-4  # a stored or run-folder score file must give its row's AUC to within this
NAIVE = list(NAIVE_BASELINE)   # README: the naive baseline
ORACLES = ("truth", "clean")


def oracle_of(name: str) -> str | None:
    """`truth` or `clean` for an oracle configuration, also a variant (`truth_e4`: the oracle's labels or
    log with the variant's settings, which it names in full); None for any other configuration."""
    return next((o for o in ORACLES if name == o or name.startswith(o + "_")), None)


def named_configs(extra: list[str]) -> dict[str, list[str]]:
    configs = {"naive": NAIVE, "truth": NAIVE, "clean": NAIVE, "default": []}
    configs.update({s: [f"weighting.strategy={s}"] for s in strategies.names()})
    # the naive baseline with one lever changed (as they were screened: the raw click rate as label)
    configs["listwise"] = [*NAIVE, "train.objective=listwise"]
    configs["tower"] = [*NAIVE, "train.position_tower=true"]
    configs["tower_floor"] = [*configs["tower"], "train.tower_noise_floor=true"]
    for item in extra:
        name, _, sets = item.partition("=")
        configs[name] = [s for s in sets.split(";") if s]
    return configs


LOOP = "+r1"  # `X+r1`: one more round of the loop after X (rescore with X's model, fine-tune from it)


def loop_base(name: str) -> str | None:
    """The configuration whose trained model a `X+r1` run starts from, or None for any other name."""
    return name[:-len(LOOP)] if name.endswith(LOOP) else None


def with_loop_rounds(configs: dict[str, list[str]], names: list[str]) -> list[str]:
    """Adds each requested `X+r1` to configs (X's settings) and orders names so every base runs first;
    raises for a `+r1` whose base is unknown or is an oracle (its log or labels are not the run's)."""
    for name in names:
        base = loop_base(name)
        if base is not None:
            if base not in configs or oracle_of(base) or loop_base(base):
                raise SystemExit(f"{name}: {base!r} is not a configuration a loop round can follow")
            configs[name] = list(configs[base])
    bases = [loop_base(n) for n in names if loop_base(n)]
    return [*(n for n in names if not loop_base(n)), *(b for b in bases if b not in names),
            *(n for n in names if loop_base(n))]


def run(cmd: list[str]) -> float:
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.time() - started


def evaluate(model: str, held: Path, out: Path) -> dict:
    """Held-out AUC / NDCG@10 against the true grades, and each pair's score (for the paired bootstrap)."""
    if not (out.with_suffix(".json").exists() and out.with_suffix(".parquet").exists()):
        run([CLI, "evaluate", "--model", model, "--input", str(held), "--label-col", "relevance",
             "--positive-threshold", str(POSITIVE), "--output", str(out.with_suffix(".json")),
             "--predictions", str(out.with_suffix(".parquet"))])
    m = json.loads(out.with_suffix(".json").read_text())
    return {"auc": m["auc"], "ndcg@10": m["ndcg@10"], "predictions": str(out.with_suffix(".parquet"))}


def scores_paths(predictions: str | Path) -> tuple[Path, Path]:
    """(the model's score file, its seed's held-out key) under SCORES, from a predictions path
    `<work>/<split>/seed<S>_q<Q>/[<click model>_s<sessions>/]eval_<config>_h<pairs>.parquet` (or from
    the score file's own path, which ends the same way)."""
    m = RUN_PATH.search(Path(predictions).as_posix())
    if not m:
        raise ValueError(f"not a quality run's predictions path: {predictions}")
    rel = Path(m.group(0))
    return SCORES / rel, SCORES / rel.parts[0] / rel.parts[1] / f"heldout_h{m.group('rows')}.parquet"


def path_provenance(path: str | Path) -> dict:
    """What a predictions or scores path encodes: split, seed, train_queries, and for a click model's run
    its click_model and sessions (`.../<split>/seed<S>_q<Q>/<click model>_s<sessions>/eval_...`); {} for
    a path of another layout. The held-out query count is not in it (`_h<N>` counts held-out rows)."""
    m = RUN_PATH.search(Path(path).as_posix())
    if not m:
        return {}
    out = {"split": m.group("split"), "seed": int(m.group("seed")), "train_queries": int(m.group("train_queries"))}
    folder = CLICK_MODEL_FOLDER.match(m.group("folder") or "")
    if folder:
        out.update(click_model=folder.group("click_model"), sessions=float(folder.group("sessions")))
    return out


def run_args_of(file_args: dict | None) -> dict | None:
    """A results file's arguments, where they are its own run's (not a --tabulate-only call's, whose size
    arguments were defaults it did not use). A gate study replay has none of its own: its rows are those
    of the one results file it replayed (`results`), whose arguments are used."""
    if file_args and file_args.get("replay") and len(file_args.get("results") or []) == 1:
        src = Path(file_args["results"][0])
        src = src if src.is_absolute() else ROOT / src
        if not src.exists():   # written on another checkout: the same file name here
            src = ROOT / "benchmarks" / "results" / src.name
        return run_args_of(json.loads(src.read_text()).get("args")) if src.exists() else None
    if not file_args or file_args.get("tabulate_only") or any(k not in file_args for k in PROVENANCE):
        return None
    return file_args


def row_provenance(row: dict, file_args: dict | None = None) -> dict:
    """split / train_queries / heldout_queries / sessions of a result row (sessions None for zero-shot):
    the row's own fields (rows written by this version); else what its predictions or scores path
    encodes; else, for what the path cannot tell (the held-out query count), its results file's
    arguments where they are a run's own (run_args_of) and agree with the path. None where unknown.
    Raises where the row and its path disagree (a row pointing at another run's scores)."""
    out = {k: row.get(k) for k in PROVENANCE}
    derived: dict = {}
    for key in ("scores", "predictions"):
        if isinstance(row.get(key), str):
            derived = path_provenance(row[key])
            if derived:
                break
    zero = row.get("click_model") == "-"
    where = f"seed {row.get('seed')} {row.get('click_model')} {row.get('config')}"
    for k, v in derived.items():
        mine = row.get(k) if k in ("seed", "click_model") else out[k]
        if mine is not None and mine != v:
            raise ValueError(f"{where}: its row says {k}={mine!r}, its scores path {v!r}")
        if k in out and out[k] is None:
            out[k] = v
    given = run_args_of(file_args)
    if given is not None:
        agree = all(out[k] is None or out[k] == given[k]
                    for k in ("split", "train_queries", *(() if zero else ("sessions",))))
        if agree:
            out = {k: (given[k] if out[k] is None else out[k]) for k in PROVENANCE}
    if zero:
        out["sessions"] = None
    for k, cast in (("train_queries", int), ("heldout_queries", int), ("sessions", float)):
        out[k] = None if out[k] is None else cast(out[k])
    return out


def run_provenance(args, zero: bool = False) -> dict:
    """The provenance fields of a row this invocation runs (its own arguments)."""
    return {"split": args.split, "train_queries": int(args.train_queries), "heldout_queries": int(args.heldout_queries),
            "sessions": None if zero else float(args.sessions)}


def check_auc(frame: pd.DataFrame, expected: float | None) -> bool:
    """Whether held-out scores give the row's AUC (to AUC_TOLERANCE; True when the row has none)."""
    if expected is None:
        return True
    got = auc(frame["relevance"].to_numpy() >= POSITIVE, frame["score"].to_numpy())
    return got is not None and abs(got - float(expected)) <= AUC_TOLERANCE


def persist_scores(row: dict) -> dict:
    """Copies the row's held-out scores into SCORES (once) and names the copy in the row. Both the run
    folder's predictions and an existing stored copy must give the row's AUC: a stored copy is never
    overwritten (see below)."""
    if "predictions" not in row or not Path(row["predictions"]).exists():
        return row
    scores, key = scores_paths(row["predictions"])
    frame = pd.read_parquet(row["predictions"], columns=["query", "relevance", "score"])
    where = f"seed {row.get('seed')} {row.get('click_model')} {row.get('config')}"
    if key.exists():
        kept = pd.read_parquet(key)
        if not (kept["query"].equals(frame["query"]) and np.allclose(kept["relevance"], frame["relevance"])):
            raise RuntimeError(f"{row['predictions']}: its held-out rows differ from {key}")
    else:
        key.parent.mkdir(parents=True, exist_ok=True)
        frame[["query", "relevance"]].to_parquet(key, compression="zstd")
    # A stored score file that does not give the row's AUC is stale (a rerun under the same path with
    # other settings) or belongs to another row: fail loudly rather than overwrite it. Overwriting is not
    # safer: committed results rows of an earlier invocation may point at that file, and whether a run is
    # "fresh" cannot be told reliably here (reused and copied runs, --include'd rows whose run folder was
    # later rerun); stopping leaves both the file and the choice (another --work, or deleting the stale
    # file deliberately) to a person.
    stored_ok = None
    if scores.exists():
        stored = pd.read_parquet(key).assign(score=pd.read_parquet(scores)["score"].astype("float64").to_numpy())
        stored_ok = check_auc(stored, row.get("auc"))
    fresh_ok = check_auc(frame, row.get("auc"))
    if stored_ok is False:
        raise RuntimeError(f"{where}: the stored scores {scores} do not give the row's AUC {row.get('auc')} "
                           f"(a rerun under the same path with other settings?); not overwritten: move or delete "
                           "that file deliberately, or run under another --work")
    if not fresh_ok and not stored_ok:
        raise RuntimeError(f"{where}: {row['predictions']} does not give the row's AUC {row.get('auc')} "
                           "(its run folder rerun since?), and no stored copy does")
    if not scores.exists():
        scores.parent.mkdir(parents=True, exist_ok=True)
        frame[["score"]].astype("float32").to_parquet(scores, compression="zstd")
    out = {**row, "scores": scores.relative_to(ROOT).as_posix()}
    if row.get("candidates"):
        out["candidates"] = {k: persist_scores(v) for k, v in row["candidates"].items()}
    return out


def load_predictions(row: pd.Series | dict) -> pd.DataFrame:
    """query / relevance / score of one evaluated model: the run folder's file while it exists and gives
    the row's AUC, else the copy kept under SCORES (float32 scores: a tie float64 would break may count as
    a tie). Raises when neither exists, or when none that exists gives the row's AUC (stale scores)."""
    path, kept = row.get("predictions"), row.get("scores")
    expected = row.get("auc")
    expected = None if expected is None or expected != expected else float(expected)
    found = []
    if isinstance(path, str) and Path(path).exists():
        found.append((path, pd.read_parquet(path, columns=["query", "relevance", "score"])))
    if isinstance(kept, str) and (ROOT / kept).exists():
        scores, key = scores_paths(ROOT / kept)
        found.append((kept, pd.read_parquet(key).assign(
            score=pd.read_parquet(scores)["score"].astype("float64").to_numpy())))
    if not found:
        raise FileNotFoundError(f"no held-out scores for {row.get('config')} (seed {row.get('seed')}): "
                                f"neither {path} nor {kept}")
    for _, frame in found:
        if check_auc(frame, expected):
            return frame
    raise RuntimeError(f"held-out scores of {row.get('config')} (seed {row.get('seed')}, {row.get('click_model')}) "
                       f"do not give its AUC {expected}: {[w for w, _ in found]} are stale")


def write_clickstream(frame: pd.DataFrame, folder: Path) -> Path:
    (folder / "clickstream").mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "clickstream" / "part-0.parquet", coerce_timestamps="us",
                     allow_truncated_timestamps=True)
    return folder / "clickstream"


def truth_labels(weighted: Path, train: pd.DataFrame, settings: SimulatorSettings) -> int:
    """The `truth` oracle: every pair's label becomes its true click probability given examination
    (its attractiveness under the click model). Rewrites the copied score output's pair table in place."""
    alpha = (train.assign(query=train["query"].str.strip(), title=train["title"].str.strip())
                  .groupby(["query", "title"])["relevance"].mean())
    return set_pair_labels(weighted, pd.Series(click_probability(alpha.to_numpy(), settings), index=alpha.index))


def set_pair_labels(weighted: Path, labels: pd.Series) -> int:
    """Rewrites the `label` of every pair in a score output's pair table from `labels`, indexed by the
    trimmed (query, title); every pair must have one. Returns the pairs rewritten."""
    changed = 0
    for f in sorted((weighted / PAIRS_DIR).rglob("*.parquet")):
        table = pq.read_table(f)
        label = labels.reindex(pd.MultiIndex.from_frame(table.select(["query", "title"]).to_pandas())).to_numpy()
        if np.isnan(label).any():
            raise RuntimeError(f"{f}: pairs without a true relevance")
        i = table.schema.get_field_index("label")
        table = table.set_column(i, table.schema.field(i), [label.astype(table.schema.field(i).type.to_pandas_dtype())])
        pq.write_table(table, f)
        changed += len(label)
    return changed


def truth_table(weighted: Path, naive: Path, train: pd.DataFrame, settings: SimulatorSettings) -> None:
    """The `truth` oracle's score output: the naive run's, copied, with truth_labels (once)."""
    if not (weighted / "_clickweight.json").exists():
        shutil.copytree(naive, weighted)
        truth_labels(weighted, train, settings)


def eval_stem(folder: Path, name: str, held: Path) -> Path:
    """Where a model's evaluation on this seed's held-out set is cached: named by the held-out set's
    size too, so a run with more held-out queries never reuses a smaller set's figures."""
    return folder / f"eval_{name}_h{pq.ParquetFile(held).metadata.num_rows}"


def prune_weights(model: Path) -> int:
    """Deletes a trained and evaluated model's weights (the export, every candidate's, the resume
    checkpoints: about 700 MB a run), keeping its summaries, its held-out gate data (the gate study's
    replays) and everything under the score output; returns the bytes freed. The run is then reused
    as done, but cannot be evaluated on another held-out set."""
    files = [*model.glob("model.safetensors"), *model.glob("checkpoints/*.pt"),
             *model.glob("candidates/*/model.safetensors")]
    freed = sum(f.stat().st_size for f in files)
    for f in files:
        f.unlink()
    return freed


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reuse_identical_run(data: Path, name: str, log: Path, held: Path) -> Path | None:
    """A run whose whole input is byte-for-byte another finished run's of the same seed gives the same
    model and figures (the score job, the trainer and its gate are deterministic: the test split's seed 0
    gave bit-identical held-out scores for `clean` on graded, flip10 and flip20, and on the three pbm
    models). `clean` is such a run: its log has no noise and no position bias, so click models that share
    their attractiveness share it. Copies that run's score output, model (summaries, candidates' gate data)
    and evaluations into `data` instead of recomputing them; returns the folder copied from, or None."""
    if (data / f"m_{name}" / "train_summary.json").exists():
        return None
    digest = file_digest(log)
    stem = eval_stem(data, name, held).name
    for other in sorted(p for p in data.parent.iterdir() if p.is_dir() and p != data):
        twin = other / log.relative_to(data)
        done = (other / f"m_{name}" / "train_summary.json").exists() \
            and (other / f"{stem}.json").exists() and (other / f"{stem}.parquet").exists()
        if not (done and twin.exists() and file_digest(twin) == digest):
            continue
        for sub in (f"w_{name}", f"m_{name}"):
            if (data / sub).exists():
                shutil.rmtree(data / sub)  # a cut-off run's partial folder
            shutil.copytree(other / sub, data / sub)
        for f in other.glob(f"eval_{name}_h*.*"):
            shutil.copy2(f, data / f.name)
        for f in other.glob(f"eval_{name}__*_h*.*"):  # the candidates' evaluations
            shutil.copy2(f, data / f.name)
        return other
    return None


# What the `truth` oracle's training reads from its pair table (the naive configuration: the default
# bi-encoder, pair table, pointwise, no tower), and the held-out split's key: where two click models give
# these the same bytes, they give the same trained candidates; only the gate's held-out clicks differ.
# (the pair table's p_model enters the loss only with train.label_prior_impressions > 0, clicks only the
# metrics: neither is in the digest, and a run with that prior is not reused)
TRUTH_TRAINING_COLUMNS = (*BiEncoderTrainee.input_columns, "label", "weight", "impressions", "query_bucket")


def table_digest(weighted: Path, columns: tuple[str, ...]) -> str:
    """sha256 of the pair table's `columns`, file by file in name order (the names' job UUIDs left out;
    cached beside the table)."""
    cache = weighted / "_training_digest.json"
    if cache.exists():
        kept = json.loads(cache.read_text())
        if kept["columns"] == list(columns):
            return kept["sha256"]
    h = hashlib.sha256()
    for i, f in enumerate(sorted((weighted / PAIRS_DIR).rglob("*.parquet"))):
        table = pq.read_table(f, columns=list(columns))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(f"{i}:{table.num_rows}".encode())
        h.update(sink.getvalue())
    cache.write_text(json.dumps({"columns": list(columns), "sha256": h.hexdigest()}))
    return h.hexdigest()


def replay_selection(values: dict[str, float], patience: int, margin_se: float = 0.0,
                     se_vs_start: dict[str, float] | None = None) -> str:
    """The trainer's gate (training/recipe.py Trainer._select, training.metrics.gate_keeps) over criterion
    values {start, epoch_0, epoch_1, ...}: each epoch in turn is kept if it beats the best so far, or with
    `margin_se` > 0 while the best is the start, if the start's lead is within that many of the epoch's
    `se_vs_start`; training stops after more than `patience` epochs without one (then a later candidate
    would not exist: that raises, so the caller falls back to a real run)."""
    best, bad = "start", 0
    for epoch in sorted((k for k in values if k != "start"), key=lambda k: int(k.split("_")[1])):
        if bad > patience:
            raise ValueError(f"the gate would have stopped before {epoch}")
        if gate_keeps(values[epoch], values[best], best == "start", margin_se, (se_vs_start or {}).get(epoch)):
            best, bad = epoch, 0
        else:
            bad += 1
    return best


def reuse_truth_training(data: Path, name: str, held: Path) -> Path | None:
    """The `truth` oracle of a click model whose truth pair table has the same training bytes as a
    finished sibling's of the same seed (pbm_eta0.5, 1 and 2 share their attractiveness, and so do graded,
    flip10 and flip20): that sibling's candidates are this run's (the test split's seed 0 trained all six
    and gave bit-identical losses and held-out scores within each family). The gate is replayed on this
    click model's own held-out clicks (its naive run's, the same rows): each candidate's held-out logits
    with them, the trainer's criterion (benchmarks.gate_study, which reproduced the trainer's values to
    1e-8 on seed 0's six truth runs) and its rule. Returns the sibling folder, or None (then the run is
    real): no twin, a criterion the replay does not cover, or a naive run without gate data."""
    model, weighted = data / f"m_{name}", data / f"w_{name}"
    naive_gate = data / "m_naive" / "candidates" / "start"
    if (model / "train_summary.json").exists() or not list(naive_gate.glob("heldout_rank*.npz")):
        return None
    digest = table_digest(weighted, TRUTH_TRAINING_COLUMNS)
    for other in sorted(p for p in data.parent.iterdir() if p.is_dir() and p != data):
        src = other / f"m_{name}"
        if not ((src / "train_summary.json").exists() and (other / f"w_{name}" / "_clickweight.json").exists()
                and table_digest(other / f"w_{name}", TRUTH_TRAINING_COLUMNS) == digest):
            continue
        summary = json.loads((src / "train_summary.json").read_text())
        selected_src = summary["selected"].replace(" ", "_")
        train_cfg = yaml.safe_load((src / "train_config.yaml").read_text())
        train_cfg = train_cfg.get("train", train_cfg)
        criterion = {v: k for k, v in SELECT_KEYS.items()}.get(summary["selected_by"])
        margin = float(train_cfg.get("select_margin_se", 0.0))
        replayable = (criterion in ("impression_loss", "examination_loss")
                      and float(train_cfg.get("label_prior_impressions", 0.0)) == 0.0)
        if not replayable:
            return None
        names = sorted(p.name for p in (src / "candidates").iterdir())
        clicks = {f.name: dict(np.load(f)) for f in naive_gate.glob("heldout_rank*.npz")}
        merged = {}
        for cand in names:
            for f in sorted((src / "candidates" / cand).glob("heldout_rank*.npz")):
                theirs = dict(np.load(f))
                mine = clicks[f.name]
                if not np.array_equal(theirs["query_bucket"], mine["query_bucket"]):
                    return None  # not the same held-out rows
                merged[(cand, f.name)] = {**mine, "z": theirs["z"]}
        propensity = json.loads((weighted / "_summary.json").read_text()).get("propensity")
        losses = {}
        for cand in names:
            parts = [merged[(cand, f)] for f in sorted(clicks)]
            c = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
            log_theta = log_examination(propensity, PROPENSITY_MIN, c["position_impressions"].shape[1])
            losses[cand] = per_pair_losses(c, criterion, log_theta)
        total, queries = c["impressions"].sum(), c["query_bucket"]  # the naive run's clicks: every candidate's
        values = {cand: float(v.sum() / total) for cand, v in losses.items()}
        se = {cand: paired_standard_error(v, losses["start"], queries) / total
              for cand, v in losses.items() if cand != "start"}
        try:
            picked = replay_selection(values, int(train_cfg.get("early_stopping_patience", 1)), margin, se)
        except ValueError:
            return None
        if model.exists():
            shutil.rmtree(model)  # a cut-off run's partial folder
        shutil.copytree(src, model)
        for (cand, fname), arrays in merged.items():
            np.savez(model / "candidates" / cand / fname, **arrays)
        key = summary["selected_by"]
        keep = ("eval_rows", "eval_impressions")
        summary["start"] = {**{k: summary["start"][k] for k in keep if k in summary["start"]}, key: values["start"]}
        summary["history"] = [{**{k: v for k, v in h.items() if not k.startswith("eval_") or k in keep},
                               key: values[f"epoch_{h['epoch']}"]} for h in summary["history"]]
        summary.update(selected=picked.replace("_", " "), output=str(model), reused_training_from=str(src),
                       reused_note="candidates trained once for the family; the gate replayed on this click "
                                   "model's held-out clicks; held-out figures other than the gate's criterion "
                                   "were the sibling's and are left out")
        (model / "train_summary.json").write_text(json.dumps(summary, indent=1))
        # each candidate's graded evaluation: the sibling's (same weights); the exported one is the pick's
        for cand in names:
            if cand == "start":
                continue
            from_stem = eval_stem(other, name if cand == selected_src else f"{name}__{cand}", held)
            to_stem = eval_stem(data, name if cand == picked else f"{name}__{cand}", held)
            for suffix in (".json", ".parquet"):
                shutil.copy2(from_stem.with_suffix(suffix), to_stem.with_suffix(suffix))
        if picked == "start":  # the start exported: the scorer's ranking (a monotone head), zero-shot's figures
            zero = eval_stem(data.parent, "zero_shot", held)
            for suffix in (".json", ".parquet"):
                shutil.copy2(zero.with_suffix(suffix), eval_stem(data, name, held).with_suffix(suffix))
        return other
    return None


def train_and_evaluate(data: Path, clickstream: Path, held: Path, name: str, sets: list[str],
                       reuse: Path | None, settings: SimulatorSettings, train_pairs: pd.DataFrame,
                       candidates: bool = False, prune: bool = False, previous: Path | None = None) -> dict:
    """Score (or reuse naive's scores), train and evaluate one configuration. previous: a loop round,
    the pipeline's round k >= 1: rescore with that trained model and fine-tune from it."""
    weighted, model = data / f"w_{name}", data / f"m_{name}"
    overrides = [a for s in sets for a in ("--set", s)]
    train_overrides = [*overrides, "--set", "train.save_candidates=true"] if candidates else overrides
    if previous is not None:
        if not (model / "train_summary.json").exists() and not (previous / "model.safetensors").exists():
            raise RuntimeError(f"{previous}: no weights to start a loop round from (pruned by an earlier "
                               "--prune-weights run: delete that folder to train it again)")
        overrides = [*overrides, "--set", f"scorer.path={previous}"]
        train_overrides = [*train_overrides, "--set", f"model.path={previous}"]
    if candidates and model.exists() and not (model / "candidates").exists():
        shutil.rmtree(model)  # trained without its candidates: train again, keeping them
    timings = {}
    if not (weighted / "_clickweight.json").exists():
        if oracle_of(name) == "truth":
            truth_table(weighted, reuse, train_pairs, settings)
        else:
            extra = ["--set", f"scorer.reuse_scores_from={reuse}"] if reuse else []
            timings["score_s"] = round(run([CLI, "score", "--input", str(clickstream), "--output", str(weighted),
                                             *overrides, *extra]), 1)
    if not (model / "train_summary.json").exists():
        timings["train_s"] = round(run([CLI, "train", "--input", str(weighted), "--output", str(model),
                                        *train_overrides]), 1)
    trained = json.loads((model / "train_summary.json").read_text())
    scored = json.loads((weighted / "_summary.json").read_text())
    exported = evaluate(str(model), held, eval_stem(data, name, held))
    found = {}  # every candidate the gate judged, evaluated like the exported model (the gate study)
    for folder in sorted((model / "candidates").glob("*")) if candidates else []:
        if folder.name == "start":  # the scorer's ranking under a refitted head: zero-shot's graded figures
            found["start"] = {"same_as": "zero-shot", "gate_data": str(folder)}
        elif folder.name == trained["selected"].replace(" ", "_"):
            found[folder.name] = {**exported, "gate_data": str(folder)}
        else:
            found[folder.name] = {**evaluate(str(folder), held, eval_stem(data, f"{name}__{folder.name}", held)),
                                  "gate_data": str(folder)}
    extra = {"candidates": found, "propensity": scored.get("propensity")} if candidates else {}
    if prune:
        prune_weights(model)
    reused = {"reused_training_from": Path(trained["reused_training_from"]).parent.name} \
        if "reused_training_from" in trained else {}
    return {**exported, **timings, **extra, **reused,
            "selected": trained["selected"],
            "precision": trained.get("precision"), "impressions": scored["rows_out"],
            "pairs": scored["pairs"]["pairs"]}


def finished_runs(included: list[tuple[dict, list[dict]]], args) -> dict[tuple[int, str, str], list[str]]:
    """(seed, click model, config) -> settings of every trained row of the --include'd results files whose
    own split, sizes and sessions (row_provenance: the row's, else its path's and its file's) are this
    invocation's; a row whose held-out query count cannot be told is not counted as finished."""
    return {(r["seed"], r["click_model"], r["config"]): list(r.get("sets") or [])
            for file_args, runs in included
            for r in runs if r.get("click_model") != "-" and "auc" in r
            and all(row_provenance(r, file_args)[k] == getattr(args, k) for k in PROVENANCE)}


def click_model_finished(finished: dict[tuple[int, str, str], list[str]], seed: int, cm: str, names: list[str],
                         configs: dict[str, list[str]]) -> bool:
    """Every requested configuration of this seed and click model is a finished row with the same settings."""
    return not runs_to_do(finished, seed, cm, names, configs)


def runs_to_do(finished: dict[tuple[int, str, str], list[str]], seed: int, cm: str, names: list[str],
               configs: dict[str, list[str]]) -> list[str]:
    """The configurations of this seed and click model to run, in names' order: those not finished with the
    same settings in an --include'd file, and what they start from: naive's run for a `truth` oracle (its
    score output, copied) and a loop round's base (its trained model). A finished naive is not retrained
    for a configuration that only reuses its BERT scores: that one scores the log itself."""
    todo = {n for n in names if finished.get((seed, cm, n)) != list(configs[n])}
    for n in list(todo):
        if oracle_of(n) == "truth":
            todo.add("naive")
        if loop_base(n):
            todo.add(loop_base(n))
    return [n for n in names if n in todo]


def seed_folder(args, seed: int) -> Path:
    """A seed's run folder: `<work>/<split>/seed<S>_q<train queries>` (the held-out set in it)."""
    return Path(args.work) / args.split / f"seed{seed}_q{args.train_queries}"


def click_model_folder(seed_base: Path, click_model: str, sessions: float) -> Path:
    """A click model's runs under its seed's folder: `<seed folder>/<click model>_s<sessions>`."""
    return seed_base / f"{click_model}_s{sessions:g}"


def loop_model(data: Path, name: str) -> Path:
    """The trained model a `X+r1` run starts from: X's, in the same click model's folder."""
    return data / f"m_{loop_base(name)}"


def run_seed(args, pairs: pd.DataFrame, seed: int, configs: dict[str, list[str]], names: list[str],
             finished: dict[tuple[int, str, str], list[str]] | None = None):
    """Runs one seed, yielding each result row as it is done (so a cut-off matrix keeps what it has)."""
    train, held_pairs = sample_split(pairs, args.split, args.train_queries, args.heldout_queries, seed)
    base = seed_folder(args, seed)
    base.mkdir(parents=True, exist_ok=True)
    held = base / "heldout.parquet"
    held_cols = ["query", "item_id", "title", "relevance"]
    if not held.exists():  # a function of the seed; never rewritten under a concurrent invocation's reader
        held_pairs[held_cols].to_parquet(held)
    elif not pd.read_parquet(held, columns=held_cols).equals(held_pairs[held_cols].reset_index(drop=True)):
        # the folder is keyed by seed and train queries; another --heldout-queries draws other held-out queries
        raise SystemExit(f"{held} holds another held-out set (another --heldout-queries?): use another --work")
    yield {"seed": seed, "click_model": "-", "config": "zero-shot", **run_provenance(args, zero=True),
           **evaluate(default_model_path(), held, eval_stem(base, "zero_shot", held))}
    followed = {loop_base(n) for n in names if loop_base(n)}  # their weights stay until their round has run
    for cm in args.click_models:
        todo = runs_to_do(finished or {}, seed, cm, names, configs)
        if not todo:
            print(f"seed {seed} {cm}: every configuration is in an --include'd file; not run again", flush=True)
            continue
        if len(todo) < len(names):
            print(f"seed {seed} {cm}: {sorted(set(names) - set(todo))} finished in an --include'd file; "
                  f"running {todo}", flush=True)
        settings = SimulatorSettings(**{**click_model_settings(cm).__dict__, "sessions_per_query": args.sessions})
        data = click_model_folder(base, cm, args.sessions)
        clickstream = write_clickstream(simulate(train, settings, seed)[0], data)
        for name in todo:
            started, twin = time.time(), None
            if oracle_of(name) == "clean":
                cs = write_clickstream(simulate(train, settings.clean(), seed)[0], data / "clean_log")
                twin = reuse_identical_run(data, name, cs / "part-0.parquet", held)
                if twin is not None:
                    print(f"{cm} {name}: the same log as {twin.name}'s, its run reused", flush=True)
                r = train_and_evaluate(data, cs, held, name, configs[name], None, settings, train, args.candidates,
                                       args.prune_weights)
            elif loop_base(name):
                # not `base` (the seed's folder): overwriting it put the next click model's folder under
                # this one's model folder
                previous = loop_model(data, name)
                r = train_and_evaluate(data, clickstream, held, name, configs[name], None, settings, train,
                                       args.candidates, args.prune_weights, previous=previous)
                if args.prune_weights:
                    prune_weights(previous)
            else:
                # naive's BERT scores when its score output is here (a naive finished elsewhere: score anew)
                reuse = data / "w_naive" if name != "naive" and (data / "w_naive" / "_clickweight.json").exists() \
                    else None
                if name == "truth" and configs[name] == NAIVE and args.candidates:
                    truth_table(data / f"w_{name}", reuse, train, settings)
                    twin = reuse_truth_training(data, name, held)
                    if twin is not None:
                        print(f"{cm} {name}: the same training as {twin.name}'s, its candidates reused, "
                              "the gate replayed", flush=True)
                r = train_and_evaluate(data, clickstream, held, name, configs[name], reuse, settings, train,
                                       args.candidates, args.prune_weights and name not in followed)
            row = {"seed": seed, "click_model": cm, "config": name, "sets": configs[name], **run_provenance(args), **r,
                   "wall_s": round(time.time() - started, 1), **({"reused_from": twin.name} if twin else {})}
            print(json.dumps(row), flush=True)
            yield row


def check_same_rows(ref: pd.DataFrame, other: pd.DataFrame, what: str) -> None:
    """Refuses to pair two models' scores unless they are on the same held-out rows (query and grade of
    every row, in order): a paired difference on other rows would be no pairing at all."""
    if len(ref) != len(other) or not np.array_equal(ref["query"].to_numpy(), other["query"].to_numpy()) \
            or not np.array_equal(ref["relevance"].to_numpy(), other["relevance"].to_numpy()):
        raise RuntimeError(f"{what}: its held-out rows (query column) differ from naive's: not the same "
                           "held-out set, so it cannot be paired with naive")


def latest_rows(rows: list[dict]) -> list[dict]:
    """Each row with its provenance fields (row_provenance); a configuration rerun (or an --include'd file
    holding it) counts once per provenance: its latest row, in that row's place. Refuses rows of several
    splits: they never share held-out queries."""
    filled = [{**r, **row_provenance(r)} for r in rows]
    splits = sorted({r["split"] for r in filled} - {None})
    if len(splits) > 1:
        raise SystemExit(f"rows of several splits ({splits}) cannot be tabulated together: tabulate each alone")
    latest: dict[tuple, dict] = {}
    for r in filled:
        key = (r["seed"], r["click_model"], r["config"], *(r[k] for k in PROVENANCE))
        latest.pop(key, None)
        latest[key] = r
    return list(latest.values())


def _minus_naive(draws: dict, name: str, seed: int) -> np.ndarray:
    """A configuration's bootstrap draws of its AUC minus naive's on one seed; naive's own are 0."""
    return draws[name][seed] if name != "naive" else np.zeros_like(draws["zero-shot"][seed])


def summarise(rows: list[dict], replicates: int, seed: int = 0, against: str | None = None) -> list[dict]:
    """Per click model and provenance (train queries, held-out queries, sessions), each configuration's
    AUC over its seeds, its paired difference from naive (combine_seeds: the joint query bootstrap's
    interval and the t interval over seeds), its headroom share with its interval and its gain over
    zero-shot per seed; with `against`, also its paired difference from that configuration (a screen's
    rule against today's default), on the seeds both have, from the same draws. Deterministic given
    `seed` (the bootstrap's)."""
    kept = latest_rows(rows)
    zero: dict[tuple, dict[int, dict]] = {}
    groups: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in kept:
        held = (r["train_queries"], r["heldout_queries"])
        if r["config"] == "zero-shot":
            zero.setdefault(held, {})[r["seed"]] = r
        else:
            groups.setdefault((r["click_model"], *held, r["sessions"]), {}).setdefault(r["config"], {})[r["seed"]] = r
    out = []
    for (cm, train_queries, heldout_queries, sessions), by in groups.items():
        if "naive" not in by:
            continue
        zero_here = zero.get((train_queries, heldout_queries), {})
        seeds = sorted(set(by["naive"]) & set(zero_here))
        held = {}
        for s in seeds:
            ref = load_predictions(by["naive"][s])
            scores = {"naive": ref["score"].to_numpy()}
            for name, sub in [("zero-shot", zero_here), *by.items()]:
                if name != "naive" and s in sub:
                    p = load_predictions(sub[s])
                    check_same_rows(ref, p, f"seed {s} {cm} {name}")
                    scores[name] = p["score"].to_numpy()
            held[s] = (ref["query"].to_numpy(), ref["relevance"].to_numpy() >= POSITIVE, scores)
        draws = joint_bootstrap_auc_differences(held, "naive", replicates, seed=seed)
        sizes = {"train_queries": train_queries, "heldout_queries": heldout_queries, "sessions": sessions}
        first = [n for n in ("naive", *ORACLES) if n in by]  # then the candidates, in the order first run
        for name in ["zero-shot", *first, *(n for n in by if n not in first)]:
            sub = zero_here if name == "zero-shot" else by[name]
            # a matrix in progress: a configuration is compared with naive (and truth) on the seeds it has
            have = [s for s in seeds if s in sub]
            aucs = np.array([sub[s]["auc"] for s in have], dtype=np.float64)
            gain = aucs - np.array([zero_here[s]["auc"] for s in have], dtype=np.float64)
            row = {"click_model": cm, **sizes, "config": name, "seeds": have, "auc": aucs.tolist(),
                   "auc_mean": float(aucs.mean()) if have else float("nan"), "minus_zero_shot": gain.tolist()}
            if name != "naive" and have:
                naive_auc = np.array([by["naive"][s]["auc"] for s in have], dtype=np.float64)
                row["vs_naive"] = combine_seeds(aucs - naive_auc, [draws[name][s] for s in have])
                if "truth" in by and set(have) <= set(by["truth"]) and name != "truth":
                    truth_auc = np.array([by["truth"][s]["auc"] for s in have], dtype=np.float64)
                    row["headroom_share"] = headroom_share(aucs, naive_auc, truth_auc)
                    row["headroom_share_ci"] = share_interval([draws[name][s] for s in have],
                                                              [draws["truth"][s] for s in have])
            both = [s for s in have if against in by and s in by[against]]
            if against and name not in (against, "zero-shot") and both:
                # draws are differences from naive on one resample per draw: naive cancels
                ref = np.array([by[against][s]["auc"] for s in both], dtype=np.float64)
                mine = np.array([sub[s]["auc"] for s in both], dtype=np.float64)
                row["vs_against"] = {"config": against, **combine_seeds(
                    mine - ref, [_minus_naive(draws, name, s) - _minus_naive(draws, against, s) for s in both])}
            out.append(row)
    return out


def _share_text(r: dict) -> str:
    share = r.get("headroom_share")
    if share is None or share != share:
        return "-"
    ci = r.get("headroom_share_ci") or {}
    if ci.get("lo") is None:
        return f"{share:.0%} [n/a]" if ci else f"{share:.0%}"
    return f"{share:.0%} [{round(100 * ci['lo'])}, {round(100 * ci['hi'])}]"


def _against_text(r: dict) -> str:
    v = r.get("vs_against")
    if not v:
        return "-"
    t = f"; t [{v['t_lo']:+.4f}, {v['t_hi']:+.4f}]" if v.get("t_lo") is not None else ""
    return f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]{t}"


def markdown(summary: list[dict]) -> str:
    sizes = {(r.get("train_queries"), r.get("heldout_queries"), r.get("sessions")) for r in summary}
    against = next((r["vs_against"]["config"] for r in summary if r.get("vs_against")), None)
    lines = ["| click model | config | seeds | AUC | − naive [95 % CI: held-out queries] | [95 % CI: over seeds (t)] "
             "| wins | headroom share [95 % CI] | − zero-shot per seed |"
             + (f" − {against} [95 % CI: queries; t] |" if against else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if against else "")]
    for r in summary:
        v = r.get("vs_naive")
        diff = f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]" if v else "-"
        over = f"[{v['t_lo']:+.4f}, {v['t_hi']:+.4f}]" if v and v.get("t_lo") is not None else "-"
        wins = f"{v['wins']}/{v['seeds']}" if v else "-"
        per = ", ".join(f"{d:+.3f}" for d in r["minus_zero_shot"])
        cm = r["click_model"]
        if len(sizes) > 1:  # rows of several sizes: each says which (unknown: ?)
            q, h, n = (r.get(k) for k in ("train_queries", "heldout_queries", "sessions"))
            cm += f" (q{'?' if q is None else q}, h{'?' if h is None else h}, s{'?' if n is None else f'{n:g}'})"
        lines.append(f"| {cm} | {r['config']} | {len(r['seeds'])} | {r['auc_mean']:.4f} | {diff} | {over} | "
                     f"{wins} | {_share_text(r)} | {per} |" + (f" {_against_text(r)} |" if against else ""))
    return "\n".join(lines) + "\n"


# What a --tabulate-only call does not use: it writes none of them (its rows say what they ran with).
RUN_ONLY_ARGS = ("data", "work", "seeds", "click_models", "configs", "config", "train_queries", "heldout_queries",
                 "sessions", "candidates", "prune_weights")


def written_args(args) -> dict:
    """The arguments a results file records: all of them for a run; for --tabulate-only, none that it
    did not use (its defaults would claim sizes its rows were not run with)."""
    given = vars(args)
    return {k: v for k, v in given.items() if not (args.tabulate_only and k in RUN_ONLY_ARGS)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(HOMEDEPOT))
    p.add_argument("--work", default=str(ROOT / "runs" / "quality"))
    p.add_argument("--split", choices=("dev", "test"), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--click-models", default="graded,pbm_eta1,flip20",
                   help=f"comma-separated, or all (the grid): {list(CLICK_MODELS)}; or the probes "
                   f"outside it, by name: {list(PROBE_CLICK_MODELS)}")
    p.add_argument("--configs", default="naive,truth,clean,default")
    p.add_argument("--config", action="append", default=[], help="NAME=key=value;key=value (a new configuration)")
    p.add_argument("--train-queries", type=int, default=2000)
    p.add_argument("--heldout-queries", type=int, default=800)
    p.add_argument("--sessions", type=float, default=16.0, help="mean sessions per query (16: about 200k impressions)")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap draws per seed")
    p.add_argument("--candidates", action="store_true",
                   help="keep and evaluate every candidate the gate judged (train.save_candidates): the gate study")
    p.add_argument("--prune-weights", action="store_true",
                   help="delete each run's model weights once it is evaluated (about 700 MB a run; a test "
                   "seed's 24 runs would not fit the disk otherwise); summaries and gate data stay")
    p.add_argument("--tag", default="")
    p.add_argument("--include", action="append", default=[], help="an earlier results JSON to tabulate with this one")
    p.add_argument("--against", default=None,
                   help="also each configuration's paired difference from this one (e.g. today's default label)")
    p.add_argument("--tabulate-only", action="store_true",
                   help="run nothing: tabulate the --include files together (into quality_<split>_<tag>.*)")
    args = p.parse_args(argv)
    args.click_models = list(CLICK_MODELS) if args.click_models == "all" else args.click_models.split(",")
    unknown = [c for c in args.click_models if c not in CLICK_MODELS and c not in PROBE_CLICK_MODELS]
    configs = named_configs(args.config)
    names = [c for c in args.configs.split(",") if c]
    unknown += [c for c in names if c not in configs and not loop_base(c)]
    if unknown:
        raise SystemExit(f"unknown click model or configuration: {unknown}")
    # naive first: the others reuse its BERT scores; a loop round after its base
    names = with_loop_rounds(configs, ["naive", *[n for n in names if n != "naive"]])
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} not found: this benchmark reads the real pairs from ../shared/data")
    pairs = pd.read_parquet(args.data)
    results = ROOT / "benchmarks" / "results"
    stem = f"quality_{args.split}" + (f"_{args.tag}" if args.tag else "")
    included = [(d["args"], d["runs"]) for d in (json.loads(Path(f).read_text()) for f in args.include)]
    rows = [persist_scores({**r, **row_provenance(r, file_args)}) for file_args, runs in included for r in runs]
    other = sorted({r["split"] for r in rows} - {None, args.split})
    if other:
        raise SystemExit(f"--split {args.split}: the --include'd files hold rows of split {other}")
    finished = finished_runs(included, args)
    started = time.time()

    def write() -> list[dict]:  # after every run, so an interrupted matrix keeps what it finished
        summary = summarise(rows, args.replicates, against=args.against)
        (results / f"{stem}.json").write_text(json.dumps({"args": written_args(args), "runs": rows, "summary": summary,
                                                          "wall_s": round(time.time() - started)},
                                                         indent=2, default=str) + "\n")
        (results / f"{stem}.md").write_text(markdown(summary))
        return summary

    seeds = [] if args.tabulate_only else args.seeds
    for row in (r for seed in seeds for r in run_seed(args, pairs, seed, configs, names, finished)):
        rows.append(persist_scores(row))
        write()
    summary = write()
    if args.against and not any(r.get("vs_against") for r in summary):
        print(f"--against {args.against}: no click model has that configuration beside others; no column",
              file=sys.stderr)
    print(markdown(summary))
    print(f"wall time {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
