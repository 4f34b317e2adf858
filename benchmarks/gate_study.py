"""Which gate picks the best model? Every candidate the gate judged, its graded AUC, every criterion.

The trainee exports the best of {start, epoch 0, epoch 1, ...} by a held-out click criterion
(`train.select_by`). A run of `benchmarks/quality.py --candidates` keeps every candidate with its
logits on the gate's held-out pairs (`train.save_candidates`) and evaluates each one on the graded
held-out queries. This script replays the gate offline with several criteria on the same candidates
and reports, for each criterion, the mean graded AUC of what it would have exported, against the
best candidate in hindsight and the current gate. Criteria (lower is better unless marked):

- `impression_loss`: the current default: every held-out impression once, pooled over positions,
  after the best affine recalibration of the logits.
- `examination_loss`: the same clicks per position, the logit offset by log theta_k (the score job's
  examination propensity): a candidate is not paid for reproducing the logging policy's position
  bias, which a model trained on corrected labels does not.
- `click_auc` (higher is better): pooled held-out click AUC.
- `last`: no gate: the last epoch.
- `hindsight` (a diagnostic, not a gate): the candidate with the best graded held-out AUC, i.e. chosen
  on the test figures themselves; it measures regret and is never a `--replay` choice.
- `<criterion>+se`: `train.select_margin_se=2` on that criterion: an epoch the criterion puts behind
  the start is still exported unless the start's lead exceeds two standard errors of their paired
  difference (over held-out queries): a gate that does not act on differences it cannot see.

    .venv/bin/python -m benchmarks.gate_study --results benchmarks/results/quality_dev_screen3.json \\
        --tag dev

Writes benchmarks/results/gate_study_TAG.{json,md}. Choose on dev results only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.metrics import (
    criterion_contributions,
    examination_cells,
    gate_keeps,
    log_examination,
    paired_standard_error,
    weighted_auc,
)

ROOT = Path(__file__).resolve().parent.parent
Z_SE = 2.0
PROPENSITY_MIN = 0.05  # conf/defaults.yaml weighting.propensity_min, as the screen's runs used


def load_candidate(folder: str) -> dict[str, np.ndarray]:
    """A candidate's held-out arrays, every rank's file concatenated."""
    parts = [np.load(f) for f in sorted(Path(folder).glob("heldout_rank*.npz"))]
    if not parts:
        raise FileNotFoundError(f"{folder}: no heldout_rank*.npz (train with train.save_candidates=true)")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0].files}


def per_pair_losses(c: dict[str, np.ndarray], criterion: str, log_theta: np.ndarray) -> np.ndarray:
    """Each held-out pair's summed log loss over its impressions under the recalibrated candidate (the
    criterion is their sum over the impressions' total), for the paired standard error."""
    z = c["z"].astype(np.float64)
    if criterion == "impression_loss":
        n, clicks = c["impressions"].astype(np.float64), c["clicks"].astype(np.float64)
        label = clicks / np.maximum(n, 1)
        return criterion_contributions(z, label, n) * n.sum()  # the trainer's own criterion, row by row
    cells = examination_cells(z, c["position_impressions"], c["position_clicks"], np.arange(len(z)),
                              log_theta)  # "query" here: the pair's index, to sum its cells back
    share = criterion_contributions(cells["z"], cells["label"], cells["weight"], offset=cells["offset"])
    return np.bincount(cells["query"], share * cells["weight"].sum(), minlength=len(z))


def study_run(row: dict, zero_auc: float) -> dict:
    """One training's candidates: graded AUC, criteria values and the paired SE against the start."""
    cands = row["candidates"]
    names = ["start", *sorted(k for k in cands if k != "start")]
    data = {k: load_candidate(cands[k]["gate_data"]) for k in names}
    log_theta = log_examination(row.get("propensity"), PROPENSITY_MIN, data["start"]["position_impressions"].shape[1])
    total = data["start"]["impressions"].sum()
    out = {"seed": row["seed"], "click_model": row["click_model"], "config": row["config"],
           "selected": row["selected"].replace(" ", "_"),
           "graded_auc": {k: (zero_auc if k == "start" else cands[k]["auc"]) for k in names}, "criteria": {}}
    for crit in ("impression_loss", "examination_loss"):
        losses = {k: per_pair_losses(data[k], crit, log_theta) for k in names}
        q = data["start"]["query_bucket"]
        value = {k: float(v.sum() / total) for k, v in losses.items()}
        se = {k: paired_standard_error(losses[k], losses["start"], q) / total for k in names[1:]}
        out["criteria"][crit] = {"value": value, "se_vs_start": se}
    out["criteria"]["click_auc"] = {"value": {
        k: weighted_auc(data[k]["z"], data[k]["clicks"], data[k]["impressions"] - data[k]["clicks"])
        for k in names}}
    return out


def pick(run: dict, rule: str) -> str:
    """The candidate `rule` exports. A criterion rule is the trainer's gate (training/recipe.py
    Trainer._select, training.metrics.gate_keeps): each epoch in turn, in epoch order, replaces the best so
    far only if it is better by more than GATE_TOLERANCE (a tie keeps the earlier candidate); with `+se`,
    one behind the start is still taken while the start's lead is within Z_SE standard errors."""
    names = list(run["graded_auc"])
    epochs = sorted((k for k in names if k != "start"), key=lambda k: int(k.split("_")[1]))
    if rule == "last":
        return epochs[-1]
    if rule == "hindsight":
        return max(names, key=run["graded_auc"].get)
    if rule == "current":
        return run["selected"]
    base, _, guard = rule.partition("+")
    v = run["criteria"][base]["value"]
    sign = -1.0 if base == "click_auc" else 1.0          # lower is better
    margin = Z_SE if guard else 0.0
    se = run["criteria"][base].get("se_vs_start", {}) if guard else {}
    best = "start"
    for k in epochs:
        if gate_keeps(sign * v[k], sign * v[best], best == "start", margin, se.get(k)):
            best = k
    return best


RULES = ("current", "impression_loss", "impression_loss+se", "examination_loss", "examination_loss+se",
         "click_auc", "last", "hindsight")
# What --replay may export: a gate that could have run (hindsight chooses by the graded held-out AUC, the
# very figure the replayed quality file would report, so it is a diagnostic column only).
REPLAY_RULES = tuple(r for r in RULES if r != "hindsight")


def summarise(runs: list[dict]) -> list[dict]:
    out = []
    for rule in RULES:
        picks = [pick(r, rule) for r in runs]
        auc = np.array([r["graded_auc"][p] for r, p in zip(runs, picks)])
        best = np.array([max(r["graded_auc"].values()) for r in runs])
        cur = np.array([r["graded_auc"][r["selected"]] for r in runs])
        out.append({"rule": rule, "runs": len(runs), "mean_graded_auc": float(auc.mean()),
                    "minus_current": float((auc - cur).mean()), "regret": float((best - auc).mean()),
                    "picked_start": int(sum(p == "start" for p in picks)),
                    "worst_minus_current": float((auc - cur).min())})
    return out


def markdown(summary: list[dict], runs: list[dict]) -> str:
    lines = ["| gate rule | runs | mean graded AUC | − current gate | regret to hindsight | kept the start "
             "| worst run − current |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['rule']} | {s['runs']} | {s['mean_graded_auc']:.4f} | {s['minus_current']:+.4f} | "
                     f"{s['regret']:.4f} | {s['picked_start']} | {s['worst_minus_current']:+.4f} |")
    lines += ["", "| seed | click model | config | graded AUC (start / epochs) | current | impression_loss+se "
              "| examination_loss+se | last |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        g = " / ".join(f"{v:.4f}" for v in r["graded_auc"].values())
        lines.append(f"| {r['seed']} | {r['click_model']} | {r['config']} | {g} | {r['selected']} | "
                     f"{pick(r, 'impression_loss+se')} | {pick(r, 'examination_loss+se')} | {pick(r, 'last')} |")
    return "\n".join(lines) + "\n"


def replay(rows: list[dict], runs: list[dict], rule: str) -> list[dict]:
    """The quality rows as if each training had exported what `rule` picks: its candidate's graded
    figures and held-out scores (the start: the seed's zero-shot ones), for benchmarks/quality.py
    --tabulate-only --include. Raises for `hindsight` (chosen by the graded AUC itself) and for a
    picked candidate without its own AUC and held-out scores (the exported model's must not stand in)."""
    if rule not in REPLAY_RULES:
        raise ValueError(f"{rule!r} cannot be replayed: choices {REPLAY_RULES}")
    picked = {(r["seed"], r["click_model"], r["config"]): pick(r, rule) for r in runs}
    zero = {r["seed"]: r for r in rows if r["config"] == "zero-shot"}
    out = []
    for row in rows:
        name = picked.get((row["seed"], row["click_model"], row["config"]))
        if name is None:
            out.append(row)
            continue
        cand = row["candidates"][name]
        src = zero[row["seed"]] if cand.get("same_as") == "zero-shot" else cand
        if "auc" not in src or not (src.get("scores") or src.get("predictions")):
            raise RuntimeError(f"seed {row['seed']} {row['click_model']} {row['config']}: candidate {name} has no "
                               "AUC or held-out scores of its own (rerun benchmarks.quality with --candidates on "
                               "this build, or --include the file that persisted them); the exported model's "
                               "scores would stand in for it")
        figures = ("auc", "ndcg@10", "predictions", "scores")
        out.append({**{k: v for k, v in row.items() if k != "candidates" and k not in figures},
                    **{k: src[k] for k in figures if k in src},
                    "selected": name.replace("_", " "), "gate_rule": rule})
    return out


def margins(runs: list[dict], criterion: str = "examination_loss") -> dict:
    """How far the criterion sees: every (run, epoch) against its start, the epoch's criterion lead in
    standard errors of the paired difference (positive: the epoch ahead) beside its graded AUC gain.
    `runs`: gate_study_*.json runs, the latest of each (seed, click model, config) kept."""
    latest = {(r["seed"], r["click_model"], r["config"]): r for r in runs}
    rows = []
    for key, r in latest.items():
        c, g = r["criteria"][criterion], r["graded_auc"]
        for name in (k for k in g if k != "start"):
            se = c["se_vs_start"][name]
            rows.append({"seed": key[0], "click_model": key[1], "config": key[2], "candidate": name,
                         "graded_gain": g[name] - g["start"],
                         "lead_se": (c["value"]["start"] - c["value"][name]) / se if se > 0 else float("nan")})
    lead = np.array([r["lead_se"] for r in rows])
    gain = np.array([r["graded_gain"] for r in rows])
    return {"criterion": criterion, "runs": len(latest), "candidates": len(rows),
            "above_start": int((gain > 0).sum()), "lead_se_min": float(lead.min()), "lead_se_max": float(lead.max()),
            "lead_beyond_2se": int((lead > Z_SE).sum()), "start_ahead_beyond_2se": int((lead < -Z_SE).sum()),
            "worse_than_start": [r for r in rows if r["graded_gain"] <= 0], "rows": rows}


def margins_markdown(m: dict) -> str:
    lines = [f"{m['runs']} runs, {m['candidates']} epochs judged against their start by `{m['criterion']}`: "
             f"{m['above_start']} above the start on graded AUC; the epoch's lead in SE from "
             f"{m['lead_se_min']:+.2f} to {m['lead_se_max']:+.2f}, beyond +2 SE {m['lead_beyond_2se']} times, "
             f"the start ahead by more than 2 SE {m['start_ahead_beyond_2se']} times.", "",
             "| click model | epochs | above start | epoch lead (SE): min / median / max |", "|---|---|---|---|"]
    for cm in sorted({r["click_model"] for r in m["rows"]}):
        part = [r for r in m["rows"] if r["click_model"] == cm]
        lead = np.array([r["lead_se"] for r in part])
        lines.append(f"| {cm} | {len(part)} | {sum(r['graded_gain'] > 0 for r in part)} | "
                     f"{lead.min():+.2f} / {np.median(lead):+.2f} / {lead.max():+.2f} |")
    lines += ["", "Worse than the start on graded AUC: " + (", ".join(
        f"seed {r['seed']} {r['click_model']} {r['config']} {r['candidate']} ({r['graded_gain']:+.4f}, lead "
        f"{r['lead_se']:+.2f} SE)" for r in m["worse_than_start"]) or "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", nargs="+", required=True, help="benchmarks/quality.py results JSON (--candidates)")
    p.add_argument("--tag", default="dev")
    p.add_argument("--replay", choices=REPLAY_RULES,
                   help="also write the quality rows as this rule would have exported them "
                   "(benchmarks/results/quality_<split>_<tag>_<rule>.json, for quality.py --include); "
                   "not hindsight, which chooses by the graded AUC it would report")
    p.add_argument("--split", default="dev", help="names the --replay file")
    p.add_argument("--margins", action="store_true", help="--results are gate_study_*.json files: tabulate how "
                   "far examination_loss sees (each epoch's lead over its start in SE) into gate_margins_TAG.{json,md}")
    args = p.parse_args(argv)
    results = ROOT / "benchmarks" / "results"
    if args.margins:
        m = margins([r for f in args.results for r in json.loads(Path(f).read_text())["runs"]])
        (results / f"gate_margins_{args.tag}.json").write_text(json.dumps({"args": vars(args), **m}, indent=2) + "\n")
        (results / f"gate_margins_{args.tag}.md").write_text(margins_markdown(m))
        print(margins_markdown(m))
        return 0
    from benchmarks.quality import PROVENANCE, row_provenance  # (quality imports this module)

    # each row with what it was run with (its file's arguments where the row and its path do not say),
    # so a replayed file's rows carry it; the latest row of a (seed, click model, config, provenance) wins
    files = [json.loads(Path(f).read_text()) for f in args.results]
    rows = [{**r, **row_provenance(r, d.get("args"))} for d in files for r in d["runs"]]
    rows = list({(r["seed"], r["click_model"], r["config"], *(r[k] for k in PROVENANCE)): r for r in rows}.values())
    zero = {r["seed"]: r["auc"] for r in rows if r["config"] == "zero-shot"}
    runs = [study_run(r, zero[r["seed"]]) for r in rows if r.get("candidates")]
    if not runs:
        raise SystemExit("no run with candidates: run benchmarks/quality.py with --candidates")
    summary = summarise(runs)
    (results / f"gate_study_{args.tag}.json").write_text(json.dumps({"args": vars(args), "runs": runs,
                                                                     "summary": summary}, indent=2) + "\n")
    if args.replay:
        name = f"quality_{args.split}_{args.tag}_{args.replay.replace('+', '_')}.json"
        (results / name).write_text(json.dumps({"args": vars(args), "runs": replay(rows, runs, args.replay)},
                                               indent=2, default=str) + "\n")
    text = markdown(summary, runs)
    (results / f"gate_study_{args.tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
