"""The transactional-history checker itself (``history.py``), on made-up histories."""

from __future__ import annotations

from .history import ANOMALIES, History, check


def test_the_checker_finds_one_anomaly_of_each_kind() -> None:
    history = History()
    history.attempted = {"a-0": [b"a-0-0", b"a-0-1"], "a-1": [b"a-1-0"], "a-2": [b"a-2-0", b"a-2-1"],
                         "a-3": [b"a-3-0"], "a-4": [b"a-4-0"], "a-5": [b"a-5-0", b"a-5-1"]}
    history.outcome = {"a-0": "committed", "a-1": "aborted", "a-2": "unknown", "a-3": "committed", "a-5": "committed"}
    history.observed = [(0, 0, b"a-0-0"), (0, 0, b"a-0-1"), (1, 5, b"a-4-0")]
    history.commit_requested = {"a-0": 0, "a-3": 0, "a-5": 0}
    final = {0: [(0, b"a-0-0"), (1, b"a-0-1"), (1, b"a-1-0"), (3, b"a-2-0"), (4, b"a-0-1")],
             1: [(0, b"a-5-1"), (1, b"a-5-0")]}
    assert check(history, final) == {"aborted_reads": 1, "lost_committed_writes": 1, "partial_transactions": 1,
                                     "duplicates": 1, "out_of_order_writes": 1, "non_monotonic_offsets": 2,
                                     "uncommitted_reads": 1}


def test_a_clean_history_has_no_anomaly() -> None:
    history = History()
    history.attempted = {"a-0": [b"a-0-0", b"a-0-1", b"a-0-2"], "a-1": [b"a-1-0"], "a-2": [b"a-2-0"]}
    history.outcome = {"a-0": "committed", "a-1": "aborted", "a-2": "unknown"}
    history.observed = [(("t", 0), 3, b"a-0-0"), (("t", 1), 0, b"a-0-1"), (("t", 0), 5, b"a-0-2")]
    history.commit_requested = {"a-0": 0}
    # partitions may be any key; values of other writers (not in the history) are ignored by the order check
    final = {("t", 0): [(3, b"a-0-0"), (5, b"a-0-2"), (8, b"a-2-0")], ("t", 1): [(0, b"a-0-1")]}
    assert check(history, final) == dict.fromkeys(ANOMALIES, 0)


def test_a_read_before_its_commit_was_asked_is_an_uncommitted_read() -> None:
    """The transaction commits in the end, but one of its records was read before its writer asked
    to commit (the commit is noted at observation 1): no coordinator could have decided it then."""
    history = History()
    history.attempted = {"a-0": [b"a-0-0", b"a-0-1"]}
    history.outcome = {"a-0": "committed"}
    history.observed = [(0, 0, b"a-0-0"), (0, 1, b"a-0-1")]
    history.commit_requested = {"a-0": 1}
    final = {0: [(0, b"a-0-0"), (1, b"a-0-1")]}
    assert check(history, final) == {**dict.fromkeys(ANOMALIES, 0), "uncommitted_reads": 1}
    history.commit_requested = {}  # a commit never asked for
    assert check(history, final)["uncommitted_reads"] == 2
