"""benchmarks/gate_by_slot.py: the held-out pairs' clicks per slot (position x clicks above)."""
import numpy as np
import pandas as pd
import pytest

from benchmarks.gate_by_slot import slot_counts


def test_each_row_lands_in_its_position_and_the_clicks_above_it_in_its_search():
    log = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e4", "e5", "e6"],
        "session_id": ["s1", "s1", "s1", "s2", "s2", "s2"],
        "query": ["q", "q", "q", "q", "q", "q "],   # a trimmed query is the same pair's
        "title": ["a", "b", "c", "b", "a", "c"],
        "position": [1, 2, 3, 1, 2, 12],
        "clicked": [1, 1, 0, 0, 1, 1]})
    held = pd.DataFrame({"query": ["q", "q", "q"], "title": ["a", "b", "c"],
                         "impressions": [2, 2, 2], "clicks": [2, 1, 1]})
    n, c = slot_counts(log, held, buckets=10, levels=1)
    assert n.shape == (3, 20)
    # a: position 1 with nothing above (s1), position 2 with nothing above (s2: b above unclicked)
    assert n[0, 0] == n[0, 1] == 1 and c[0, 0] == c[0, 1] == 1
    # b: position 2 with one click above (s1), position 1 (s2)
    assert n[1, 10 + 1] == 1 and c[1, 11] == 1 and n[1, 0] == 1 and c[1, 0] == 0
    # c: position 3 with two clicks above, pooled into context 1 (s1); position 12 pooled into bucket 10,
    # its search "q " trimmed is another search key in the log (not trimmed there), so nothing above it
    assert n[2, 10 + 2] == 1 and n[2, 9] == 1 and c[2, 9] == 1
    assert n.sum() == 6 and c.sum() == 4


def test_rows_that_do_not_reconcile_with_the_pair_table_stop_the_replay():
    log = pd.DataFrame({"event_id": ["e1"], "session_id": ["s"], "query": ["q"], "title": ["a"],
                        "position": [1], "clicked": [1]})
    held = pd.DataFrame({"query": ["q"], "title": ["a"], "impressions": [2], "clicks": [1]})
    with pytest.raises(SystemExit, match="reconcile"):
        slot_counts(log, held, buckets=10, levels=1)


def test_by_distance_a_row_lands_in_how_far_below_the_last_click_above_it_it_is():
    log = pd.DataFrame({"event_id": ["e1", "e2", "e3", "e4"], "session_id": ["s1"] * 4, "query": ["q"] * 4,
                        "title": ["a", "b", "c", "d"], "position": [1, 2, 3, 4], "clicked": [1, 0, 0, 1]})
    held = pd.DataFrame({"query": ["q"] * 4, "title": ["a", "b", "c", "d"], "impressions": [1] * 4,
                         "clicks": [1, 0, 0, 1]})
    n, _ = slot_counts(log, held, buckets=10, levels=2, by="last_click_distance")
    # a: no click above (context 0); b: 1 below the click at 1; c and d: 2 and 3 below it, pooled at 2
    assert [int(np.argmax(row)) for row in n] == [0, 10 + 1, 20 + 2, 20 + 3]
