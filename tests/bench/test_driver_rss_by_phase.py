"""benchmarks/driver_rss_by_phase.py around a real (tiny) score job: one line per phase, the job's
phases among them, in order, each with a positive peak no smaller than its end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_prints_each_phases_driver_peak(tmp_path, tiny_model_dir):
    from benchmarks.big_clickstream import generate

    generate(str(tmp_path / "in"), rows=3000, seed=1, queries=300, verbose=False)
    sets = tiny_overrides(tiny_model_dir)
    cmd = [sys.executable, "-m", "benchmarks.driver_rss_by_phase", "--input", str(tmp_path / "in" / "clickstream"),
           "--output", str(tmp_path / "out"), *[a for o in sets for a in ("--set", o)]]
    child = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}, capture_output=True,
                           text=True, timeout=540)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    names = [p["phase"] for p in result["phases"]]
    expected = ["validate and score pairs", "calibration", "propensity", "weights", "write rows"]
    assert [n for n in names if n in expected] == expected
    assert names[-2].startswith("verify (to the report") and names[-1] == "report"   # the report on its own
    assert all(p["peak_mib"] >= p["end_mib"] > 0 for p in result["phases"])
    assert (tmp_path / "out" / "_SUCCESS").exists()
