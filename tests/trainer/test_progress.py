"""Rank 0's epoch progress (training/progress.py) off a terminal: plain lines, throttled, a last one at 100%."""
from __future__ import annotations

import io

from training.progress import EpochProgress, clock


def test_plain_lines_are_throttled_and_the_last_step_always_prints():
    out = io.StringIO()
    p = EpochProgress("epoch 1/2", total=5, done=0, rows_per_step=64, enabled=True, every_s=3600, stream=out)
    for loss in (0.9, 0.8, 0.7, 0.6, 0.5):
        p.update(loss)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1  # nothing before the end within the hour, then the final line
    assert lines[0].startswith("[clickweight train] epoch 1/2 step 5/5 (100%) loss 0.7000")
    assert "rows/s" in lines[0] and "eta 0:00" in lines[0]


def test_every_step_prints_when_unthrottled_and_a_resume_counts_from_its_step():
    out = io.StringIO()
    p = EpochProgress("epoch 2/2", total=4, done=2, rows_per_step=8, enabled=True, every_s=0, stream=out)
    p.update(0.4)
    p.update(0.2)
    assert [line.split(" loss")[0] for line in out.getvalue().splitlines()] == [
        "[clickweight train] epoch 2/2 step 3/4 (75%)", "[clickweight train] epoch 2/2 step 4/4 (100%)"]


def test_other_ranks_print_nothing():
    out = io.StringIO()
    p = EpochProgress("epoch 1/1", total=2, done=0, rows_per_step=8, enabled=False, every_s=0, stream=out)
    p.update(0.1)
    p.update(0.1)
    assert out.getvalue() == ""


def test_clock():
    assert (clock(0), clock(75), clock(3725)) == ("0:00", "1:15", "1:02:05")
