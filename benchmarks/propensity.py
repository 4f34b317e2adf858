"""How well does the score job's click model recover examination? Propensity error on the click-model grid.

The score job's EM (udfs/weighting/cells.py `em_propensity`, the driver-cells path it takes whenever
the cells fit) runs here on simulated logs of real dev queries. Each pair's p_model (the regression
prior's feature) comes from an earlier `clickweight score` output of the same queries, so BERT is
not rerun. The error is the mean absolute error of the estimated propensity (relative to position
1) against the simulator's true examination 1/k^eta, over positions 1..10.

    .venv/bin/python -m benchmarks.propensity \\
        --scored runs/quality/dev/seed0_q1000/flip20_s16/w_naive --sessions 35

Pure numpy on the driver, about a minute. Writes benchmarks/results/propensity.{json,md}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_data import HOMEDEPOT
from benchmarks.protocol import CLICK_MODELS, sample_split
from jobs import config
from udfs.clickstream.simulate import SimulatorSettings, examination_probability, simulate
from udfs.weighting import cells as C
from udfs.weighting.settings import WeightingSettings

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "plain EM": {},
    "floor + monotone": {"em_noise_floor": True, "em_monotone": True},
    "floor + power": {"em_noise_floor": True, "em_examination": "power"},
    "power": {"em_examination": "power"},
    "marginal: floor + monotone": {"em_noise_floor": True, "em_monotone": True, "em_shared_fit": "marginal"},
}


def cells_of(log: pd.DataFrame, p_model: pd.Series) -> pd.DataFrame:
    key = log["query"].str.strip() + "\x00" + log["title"].str.strip()
    codes, uniques = pd.factorize(key, sort=True)
    pm = p_model.reindex(uniques).to_numpy()
    if np.isnan(pm).any():
        raise SystemExit("the scored output does not hold every pair of this log: use the same split, seed "
                         "and --train-queries as the run that scored it")
    cells = (log.assign(_bucket=codes, c=log["clicked"]).groupby(["position", "_bucket"])
                .agg(n=("c", "size"), c=("c", "sum")).reset_index())
    cells["pm"] = pm[cells["_bucket"].to_numpy()]
    return C.sorted_cells(cells)


def cell(row: dict) -> str:
    """A table cell: the MAE, and the fitted noise floor where one was fitted."""
    eps = row["noise_floor"]
    return f"{row['mae']:.3f}" + ("" if eps is None else f" (eps {eps:.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scored", required=True, help="a score output of the same split / seed / train queries")
    p.add_argument("--split", default="dev")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-queries", type=int, default=1000)
    p.add_argument("--heldout-queries", type=int, default=400)
    p.add_argument("--sessions", type=float, default=35.0, help="mean sessions per query (35: ~200k impressions)")
    p.add_argument("--click-models", default="all")
    p.add_argument("--positions", type=int, default=10)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    pairs = pd.read_parquet(HOMEDEPOT)
    train, _ = sample_split(pairs, args.split, args.train_queries, args.heldout_queries, args.seed)
    scored = pd.read_parquet(Path(args.scored) / "_pairs", columns=["query", "title", "p_model"])
    p_model = scored.set_index(scored["query"] + "\x00" + scored["title"])["p_model"]
    weighting = WeightingSettings.from_config(config.load_config())
    names = list(CLICK_MODELS) if args.click_models == "all" else args.click_models.split(",")
    rows = []
    for name in names:
        settings = SimulatorSettings(**{**CLICK_MODELS[name].__dict__, "sessions_per_query": args.sessions})
        log, _ = simulate(train, settings, args.seed)
        cells = cells_of(log, p_model)
        k = np.arange(1, args.positions + 1)
        true = examination_probability(k, settings) / examination_probability(np.array([1]), settings)[0]
        for variant, sets in VARIANTS.items():
            prop, info, _ = C.em_propensity(cells, "query_title_pairs", weighting.but(**sets))
            est = np.array([prop.get(int(x), np.nan) for x in k])
            rows.append({"click_model": name, "variant": variant, "impressions": len(log),
                         "mae": float(np.nanmean(np.abs(est - true))), "noise_floor": info.get("noise_floor"),
                         "estimate": np.round(est, 3).tolist(), "true": np.round(true, 3).tolist()})
            print(json.dumps(rows[-1]), flush=True)
    lines = ["| click model | impressions | " + " | ".join(f"MAE: {v}" for v in VARIANTS) + " |",
             "|---|---|" + "---|" * len(VARIANTS)]
    for name in names:
        got = [r for r in rows if r["click_model"] == name]
        lines.append(f"| {name} | {got[0]['impressions']} | " + " | ".join(cell(r) for r in got) + " |")
    table = "\n".join(lines) + "\n"
    stem = "propensity" + (f"_{args.tag}" if args.tag else "")
    results = ROOT / "benchmarks" / "results"
    (results / f"{stem}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    (results / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
