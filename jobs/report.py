"""`clickweight report RUN_DIR`: one self-contained HTML page (`_report.html`, PNG plots embedded, no
network) and a markdown twin (`_report.md`, its figures in `_report_figures/`) for a score output, a
model folder or a pipeline work folder. `score`, `train` and `pipeline` write it at their end. The
names start with `_` so that Spark (and pyarrow) readers of a score output skip them like its other
metadata.

Numbers come from the run's own records (_summary.json, train_summary.json, pipeline_results.json);
the plots read a sample of the written rows with pyarrow (up to MAX_ROWS, from every file; no Spark).
Rendering lives here, never in the maths modules.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs import inputs

MAX_ROWS = 500_000
READ_BATCH_ROWS = 65_536
READ_BUFFER_BYTES = 1 << 20
HTML, MARKDOWN, FIGURES = "_report.html", "_report.md", "_report_figures"
ROW_COLUMNS = ("event_id", "query", "title", "position", "clicked", "added_to_cart", "purchased", "dwell_ms",
               "relevance", "p_model", "propensity", "noise_score", "suspect", "keep_prob", "raw_weight", "weight")


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)  # markdown paragraphs and tables
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)


def fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 1e5 else f"{x:.4g}"
    return str(x)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


_warming: threading.Thread | None = None


def _warm_up() -> None:
    with contextlib.suppress(Exception):
        _render_once()


def _render_once() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().set_xlabel("x")
    FigureCanvasAgg(fig).print_png(io.BytesIO())  # loads the fonts


def warm_up_in_background() -> None:
    """Import matplotlib and render one throwaway figure in a thread while the job's Spark work runs:
    the report at the end then starts warm (its first figure paid ~0.9 s for both on a 10k-row run,
    docs/performance.md). Best effort: a failure here shows up, if at all, in the report itself."""
    global _warming
    if _warming is None:
        _warming = threading.Thread(target=_warm_up, daemon=True, name="report-warm-up")
        _warming.start()


def figure(width: float = 6.0, height: float = 3.4):
    if _warming is not None:
        _warming.join()  # never two threads in matplotlib at once
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def output_dataset(folder: str | Path):
    """A score output's rows (event_date=*/…) as a pyarrow dataset; `_`/`.` entries (summary, pairs,
    quarantine, this report) are skipped, as Spark skips them."""
    import pyarrow.dataset as ds

    return ds.dataset(str(folder), format="parquet", partitioning="hive", ignore_prefixes=["_", "."])


def file_shares(rows_per_file: list[int], total: int) -> list[int]:
    """Rows to take from each file for a sample of `total` (or every row, if fewer): equal shares, what a
    small file cannot fill passed on to the larger ones."""
    shares, left = [0] * len(rows_per_file), total
    order = sorted(range(len(rows_per_file)), key=rows_per_file.__getitem__)
    for done, i in enumerate(order):
        shares[i] = min(rows_per_file[i], -(-left // (len(order) - done)))
        left -= shares[i]
    return shares


def read_rows(folder: Path, max_rows: int = MAX_ROWS, columns: tuple[str, ...] = ROW_COLUMNS) -> pd.DataFrame:
    """A sample of a score output's rows with `columns` (those it has), as pandas: up to max_rows, the
    first rows of every file in equal shares (so every date and file is in it). Strings stay
    Arrow-backed: as Python objects they cost several times Arrow's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = output_dataset(folder)
    columns = [c for c in columns if c in data.schema.names]
    fs = data.filesystem

    def open_file(path: str):
        # A buffered stream, nothing pre-buffered: a row group is decoded a buffer at a time, not read
        # whole. Through the dataset scanner (read-ahead off) 500k rows of 3M-row row groups raised the
        # peak by 1.4 GB, this way by 0.19 GB (benchmarks/report_sample_memory.py).
        return pq.ParquetFile(fs.open_input_file(path), buffer_size=READ_BUFFER_BYTES, pre_buffer=False)

    files = list(data.files)
    counts = []
    for path in files:
        with open_file(path) as f:
            counts.append(f.metadata.num_rows)
    batches = []
    for path, share in zip(files, file_shares(counts, max_rows)):
        if not share:
            continue
        with open_file(path) as f:
            n = 0
            for batch in f.iter_batches(batch_size=min(READ_BATCH_ROWS, share), columns=columns):
                batches.append(batch.slice(0, share - n))
                n += batches[-1].num_rows
                if n >= share:
                    break
    if not batches:
        return pd.DataFrame(columns=columns)
    table = pa.Table.from_batches(batches, schema=batches[0].schema)
    del batches
    strings = {pa.string(): pd.ArrowDtype(pa.string()), pa.large_string(): pd.ArrowDtype(pa.large_string())}
    return table.to_pandas(split_blocks=True, self_destruct=True, types_mapper=strings.get)


# ---------------------------------------------------------------- score output

def score_sections(folder: Path, label: str = "") -> list[Section]:
    s = json.loads((folder / "_summary.json").read_text())
    rows = read_rows(folder)
    name = f" ({label})" if label else ""
    counts = Section(f"Rows{name}", [md_table(["rows in", "rows out", "quarantined", "sampled out"], [
        [s["rows_in"], s["rows_out"], s["rows_quarantined"], s.get("rows_sampled_out", 0)]])])
    if s.get("quarantine_reasons"):
        counts.text.append(md_table(["quarantine reason", "rows"], sorted(s["quarantine_reasons"].items())))
    w = s["weights"]
    weights = Section(f"Weights{name}: strategy {s['strategy']}", [md_table(
        ["mean", "effective sample size", "ESS / rows", *[f"q{q}" for q in w["quantiles"]]],
        [[w["mean"], w["effective_sample_size"], w["ess_fraction"], *w["quantiles"].values()]])])
    weights.figures.append(("weight distribution", weight_histogram({s["strategy"]: rows["weight"]})))
    out = [counts, weights]
    if len(rows):
        out.append(Section(f"Click model{name}", ["Examination propensity by position: the score job's estimate "
                                                  "against the click-rate ratio CTR(k) / CTR(1), which is biased "
                                                  "by the ranker (better items sit higher)."],
                           [("propensity by position", propensity_plot(rows, s.get("propensity", {}))),
                            ("calibration of p_model", calibration_plot(rows))]))
        if "suspect" in rows:
            out[-1].figures.append(("label-noise suspects by position", suspects_plot(rows)))
        out.append(extremes_section(rows, name))
    return out


def weight_histogram(weights: dict[str, pd.Series]) -> bytes:
    fig, ax = figure()
    values = [np.asarray(v, dtype=float) for v in weights.values()]
    lo = max(min(float(v.min()) for v in values if len(v)), 1e-3) if any(len(v) for v in values) else 0.1
    hi = max((float(v.max()) for v in values if len(v)), default=10.0)
    bins = np.geomspace(lo, max(hi, lo * 1.01), 40)
    for name, v in zip(weights, values):
        ax.hist(v, bins=bins, alpha=0.6, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("final weight")
    ax.set_ylabel("rows")
    ax.legend()
    return png(fig)


def propensity_plot(rows: pd.DataFrame, estimate: dict[str, float]) -> bytes:
    fig, ax = figure()
    ctr = rows.groupby("position")["clicked"].mean()
    if len(ctr) and ctr.iloc[0] > 0:
        ax.plot(ctr.index, ctr / ctr.iloc[0], "o--", label="ratio CTR(k) / CTR(1)")
    if estimate:  # _summary.json's keys are position strings
        pos = sorted(int(k) for k in estimate)
        ax.plot(pos, [estimate[str(k)] for k in pos], "s-", label="score job's estimate")
    ax.set_xlabel("position")
    ax.set_ylabel("examination propensity")
    ax.legend()
    return png(fig)


def calibration_plot(rows: pd.DataFrame) -> bytes:
    fig, ax = figure(4.5, 4.0)
    bins = pd.qcut(rows["p_model"], q=min(10, max(1, rows["p_model"].nunique())), duplicates="drop")
    g = rows.groupby(bins, observed=True).agg(p=("p_model", "mean"), ctr=("clicked", "mean"))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(g["p"], g["ctr"], "o-")
    ax.set_xlabel("mean p_model (decile)")
    ax.set_ylabel("observed click rate")
    return png(fig)


def suspects_plot(rows: pd.DataFrame) -> bytes:
    fig, ax = figure()
    share = rows.groupby("position")["suspect"].mean()
    ax.bar(share.index, share.values)
    ax.set_xlabel("position")
    ax.set_ylabel("share of rows flagged as label noise")
    return png(fig)


def extremes_section(rows: pd.DataFrame, name: str, queries: int = 3, per_side: int = 3) -> Section:
    cols = [c for c in ("title", "position", "clicked", "added_to_cart", "purchased", "p_model", "propensity",
                        "raw_weight", "weight") if c in rows]
    top = rows["query"].value_counts().index[:queries]
    sec = Section(f"Most up- and down-weighted rows{name}",
                  [f"For the {len(top)} queries with the most rows: the {per_side} highest and lowest weights, with "
                   "the signals that set them (`clickweight explain --event-id` shows the arithmetic)."])
    for q in top:
        g = rows[rows["query"] == q].sort_values("weight")
        picked = pd.concat([g.tail(per_side)[::-1], g.head(per_side)])
        sec.text.append(f"**{q}**\n\n" + md_table(["event_id", *cols],
                                                  [[r["event_id"], *[r[c] for c in cols]]
                                                   for _, r in picked.iterrows()]))
    return sec


# ---------------------------------------------------------------- model folder, pipeline

def train_sections(folder: Path) -> list[Section]:
    s = json.loads((folder / "train_summary.json").read_text())
    start, hist = s.get("start") or {}, s["history"]
    keys = [k for k in ("eval_loss_recalibrated", "eval_loss", "eval_auc") if k in start]
    table = [["start", "", *[start.get(k) for k in keys]]] + [
        [f"epoch {h['epoch']}", h.get("train_loss"), *[h.get(k) for k in keys]] for h in hist]
    sec = Section(f"Training: {s['kind']}, exported {s['selected']} (by {s.get('selected_by')})",
                  [md_table(["model", "train loss", *keys], table)])
    fig, ax = figure()
    curve = np.asarray(s.get("loss_curve") or [], dtype=float)
    ax.plot(np.arange(1, len(curve) + 1), curve, lw=0.8, label="step loss")
    if len(curve) >= 20:
        k = max(5, len(curve) // 50)
        ax.plot(np.arange(k, len(curve) + 1), np.convolve(curve, np.ones(k) / k, "valid"), label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.legend()
    sec.figures.append(("training loss", png(fig)))
    return [sec]


def pipeline_sections(folder: Path) -> list[Section]:
    res = json.loads((folder / "pipeline_results.json").read_text())
    rows = res["results"]
    sec = Section("Comparison on held-out queries (true relevance)",
                  [md_table(["strategy", "round", "AUC", "NDCG@10"],
                            [[r["strategy"], r.get("round", ""), r["auc"], r["ndcg@10"]] for r in rows])])
    fig, ax = figure(6.5, 0.5 + 0.45 * len(rows))
    names = [r["strategy"] + (f" r{r['round']}" if "round" in r else "") for r in rows]
    ax.barh(names[::-1], [r["auc"] for r in rows][::-1], color=["grey" if "zero-shot" in n else "C0"
                                                                 for n in names[::-1]])
    lo = min(r["auc"] for r in rows)
    ax.set_xlim(max(0.0, lo - 0.05), min(1.0, max(r["auc"] for r in rows) + 0.02))
    ax.set_xlabel("held-out AUC")
    sec.figures.append(("held-out AUC per strategy", png(fig)))
    out = [sec]
    weights = {}
    for round_dir in sorted(folder.glob("round_*")):
        for scored in sorted(round_dir.glob("weighted_*")):
            if (scored / "_summary.json").is_file():
                name = f"{round_dir.name} {scored.name[len('weighted_'):]}"
                weights[name] = read_rows(scored, columns=("weight",))["weight"]
    if weights:
        out.append(Section("Weights per strategy", [], [("weight distributions", weight_histogram(weights))]))
    return out


# ---------------------------------------------------------------- rendering

def sections_for(folder: Path) -> list[Section]:
    if (folder / "pipeline_results.json").is_file():
        return pipeline_sections(folder)
    if (folder / "_summary.json").is_file():
        return score_sections(folder)
    if (folder / "train_summary.json").is_file():
        return train_sections(folder)
    from udfs.errors import UserError

    raise UserError(f"{folder} is not a score output, a model folder or a pipeline work folder")


def md_to_html(text: str) -> str:
    """Just the markdown the sections write: pipe tables, **bold** lines, paragraphs."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("|"):
        head = [html.escape(c.strip()) for c in lines[0].strip("|").split("|")]
        body = [[html.escape(c.strip()) for c in ln.strip("|").split("|")] for ln in lines[2:]]
        return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
    parts = text.split("\n\n", 1)
    if parts[0].startswith("**") and len(parts) == 2:
        return f"<h3>{html.escape(parts[0].strip('*'))}</h3>" + md_to_html(parts[1])
    return f"<p>{html.escape(text)}</p>"


def write_report(folder: str | Path) -> Path:
    """Writes _report.html and _report.md (+ _report_figures/) into `folder`; returns the HTML path."""
    folder = Path(folder)
    sections = sections_for(folder)
    figs = folder / FIGURES
    figs.mkdir(exist_ok=True)
    title = f"clickweight report: {folder.name}"
    md, body = [f"# {title}"], []
    for i, sec in enumerate(sections):
        md.append(f"## {sec.title}")
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for t in sec.text:
            md.append(t)
            body.append(md_to_html(t))
        for j, (caption, data) in enumerate(sec.figures):
            name = f"fig{i}_{j}.png"
            (figs / name).write_bytes(data)
            md.append(f"![{caption}]({FIGURES}/{name})")
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                        f'{base64.b64encode(data).decode()}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:.6em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
             "figure{display:inline-block;margin:.5em}figcaption{text-align:center;font-size:12px;color:#555}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
    (folder / MARKDOWN).write_text("\n\n".join(md) + "\n")
    out = folder / HTML
    out.write_text(page)
    return out


def write_report_quietly(folder: str | Path) -> None:
    """The jobs' call: a report that cannot be made is a warning, never a failed (already committed) run."""
    from jobs.common import log

    if "://" in str(folder) and not str(folder).startswith("file:"):
        log.info("report: skipped for %s (reports are written for local folders; run `clickweight report` "
                 "on a local copy)", folder)
        return
    try:
        log.info("report: %s", write_report(str(folder).removeprefix("file:")))
    except Exception as exc:  # noqa: BLE001 - the run's output is already committed
        log.warning("report: not written (%s: %s)", type(exc).__name__, exc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clickweight report", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="a score output, a model folder or a pipeline work folder")
    args = p.parse_args(argv)
    if not inputs.require_readable(args.run_dir, "report").is_dir():
        raise inputs.InputError(f"report {args.run_dir}: a file, not a folder (a score output, model or "
                                "pipeline folder)")
    print(write_report(args.run_dir))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_job

    raise SystemExit(run_job("report", main))
