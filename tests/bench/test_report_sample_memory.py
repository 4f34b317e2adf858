"""benchmarks/report_sample_memory.py on a small stand-in output: both reads return the same number of
rows and the figures land in its JSON."""
from __future__ import annotations

import json

from benchmarks import report_sample_memory


def test_both_reads_take_the_same_sample_size_and_report_their_peaks(tmp_path):
    out = tmp_path / "result.json"
    assert report_sample_memory.main(["--rows-per-file", "3000", "--work", str(tmp_path / "w"),
                                      "--json", str(out)]) == 0
    cases = json.loads(out.read_text())["cases"]
    assert [c["method"] for c in cases] == ["scanner", "read_rows"]
    assert [c["rows"] for c in cases] == [6000, 6000]  # fewer rows than MAX_ROWS: every row, either way
    assert all(c["peak_after_mib"] >= c["peak_before_mib"] > 0 for c in cases)
