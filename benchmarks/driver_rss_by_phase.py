"""The score job's driver memory by phase: `clickweight score` run in this process, printing the
driver's peak RSS (VmHWM) over each phase, the peak reset as each phase starts (Linux:
/proc/self/clear_refs). Which phase holds the driver's peak, and whether it grows with the input.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/python -m benchmarks.driver_rss_by_phase \\
        --conf conf/local.yaml --input /tmp/em_big/big_1000000/clickstream --output /tmp/rss/out

The arguments are `clickweight score`'s. Prints one line per phase ("<phase>: peak <MiB>, at its end
<MiB>") and the same as JSON on the last line; the Python workers and the JVM are other processes (see
benchmarks/score_scaling.py for those).
"""
from __future__ import annotations

import json
import sys

from jobs import score
from udfs import job_phase
from udfs.weighting import spark as weighting_spark


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024
    return out


def main(argv: list[str] | None = None) -> int:
    phases: list[dict[str, object]] = []
    current = ["start-up"]
    start_phase = job_phase.start_phase

    def close(name: str) -> None:
        s = _status()
        phases.append({"phase": name, "peak_mib": s["VmHWM"], "end_mib": s["VmRSS"]})
        print(f"{name}: peak {s['VmHWM']} MiB, at its end {s['VmRSS']} MiB", flush=True)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # resets VmHWM to the current RSS

    def traced(spark, name, *args, **kwargs):
        close(current[0])
        current[0] = name
        return start_phase(spark, name, *args, **kwargs)

    for module in (job_phase, score, weighting_spark):   # each binds start_phase by name
        module.start_phase = traced
    write_report = score.write_report_quietly

    def traced_report(*args, **kwargs):   # the report (after the commit) as a phase of its own
        close(f"{current[0]} (to the report: summary, commit)")
        current[0] = "report"
        return write_report(*args, **kwargs)

    score.write_report_quietly = traced_report
    rc = score.main(sys.argv[1:] if argv is None else argv)
    close(current[0] if current[0] == "report" else f"{current[0]} (to the end: summary, commit, report)")
    print(json.dumps({"benchmark": "driver_rss_by_phase", "rc": rc, "phases": phases}))
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
