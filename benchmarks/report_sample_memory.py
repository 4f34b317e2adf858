"""What the run report's row sample costs the driver when a score output's row groups are large.

    .venv/bin/python -m benchmarks.report_sample_memory --rows-per-file 3000000 --work /tmp/report_sample \\
        --json benchmarks/results/report_sample_memory.json

Writes a stand-in score output (two dates, one file each, one row group a file, the report's columns)
and reads `MAX_ROWS` rows of it two ways, each in a fresh process: `scanner`, pyarrow's dataset scanner
without read-ahead as `jobs/report.py read_rows` read until 2026-12-07, and `read_rows`, the report's
sample today (every file's first rows through a buffered stream, strings Arrow-backed). Prints the
process's peak RSS (VmHWM) before and after the read. A 10M-row output's row groups hold about 356k
rows each; 3M makes what the read holds per row group plain.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

NUMERIC = ("position", "clicked", "added_to_cart", "purchased", "dwell_ms", "relevance", "p_model", "propensity",
           "noise_score", "keep_prob", "raw_weight", "weight")


def write_output(folder: Path, rows_per_file: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    i = np.arange(rows_per_file)
    for day in ("2026-01-01", "2026-01-02"):
        part = folder / f"event_date={day}"
        part.mkdir(parents=True, exist_ok=True)
        table = pa.table({"event_id": pa.array(np.char.add(f"{day}-", i.astype(str))),
                          "query": pa.array(np.char.add("query ", (i % 5000).astype(str))),
                          "title": pa.array(np.char.add("a product title, item ", (i % 70000).astype(str))),
                          **{c: rng.random(rows_per_file) for c in NUMERIC}})
        pq.write_table(table, part / "part-0.parquet", row_group_size=rows_per_file)


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith(key))


def measure(method: str, folder: str) -> dict:
    """In this process: the peak RSS of one read of the report's sample."""
    import pandas as pd  # noqa: F401  (imported before the baseline, as in the job)
    import pyarrow as pa
    import pyarrow.dataset  # noqa: F401  (both reads' imports before the baseline)
    import pyarrow.parquet  # noqa: F401

    from jobs import report

    before = _vm("VmHWM:")
    if method == "scanner":
        data = report.output_dataset(folder)
        columns = [c for c in report.ROW_COLUMNS if c in data.schema.names]
        batches, n = [], 0
        for batch in data.to_batches(columns=columns, batch_size=report.READ_BATCH_ROWS, batch_readahead=0,
                                     fragment_readahead=0):
            batches.append(batch.slice(0, report.MAX_ROWS - n))
            n += batches[-1].num_rows
            if n >= report.MAX_ROWS:
                break
        rows = pa.Table.from_batches(batches).to_pandas(split_blocks=True, self_destruct=True)
        del batches
    else:
        rows = report.read_rows(Path(folder))
    return {"method": method, "rows": len(rows), "peak_before_mib": before, "peak_after_mib": _vm("VmHWM:")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows-per-file", type=int, default=3_000_000)
    p.add_argument("--work", default="/tmp/report_sample")
    p.add_argument("--json")
    p.add_argument("--measure", choices=("scanner", "read_rows"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.work)))
        return 0
    folder = Path(args.work)
    if not (folder / "event_date=2026-01-02" / "part-0.parquet").exists():
        write_output(folder, args.rows_per_file)
    out = {"benchmark": "report_sample_memory", "rows_per_file": args.rows_per_file, "cases": []}
    for method in ("scanner", "read_rows"):
        run = subprocess.run([sys.executable, "-m", "benchmarks.report_sample_memory", "--measure", method,
                              "--work", str(folder)], capture_output=True, text=True, check=True)
        case = json.loads(run.stdout.strip().splitlines()[-1])
        case["read_mib"] = case["peak_after_mib"] - case["peak_before_mib"]
        out["cases"].append(case)
        print(f"{method}: {case['rows']} rows, peak {case['peak_before_mib']} -> {case['peak_after_mib']} MiB "
              f"(+{case['read_mib']})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
