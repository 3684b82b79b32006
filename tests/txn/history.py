"""A Jepsen-style check of transactional histories: pure, shared by the process-level checker
(``tests/integration/test_txn_checker.py``, real clients and kill -9) and the wired cluster
simulation (``tests/cluster/cluster_simulation.py``).

A history is what the writers attempted and what they were told, and what
read_committed readers saw along the way:

* ``attempted``: transaction name -> the values it wrote, in the order written
  (each value names its transaction: ``f"{txn}-{i}"``, see :func:`txn_of`);
* ``outcome``: transaction name -> ``committed`` (commit returned),
  ``aborted`` (abort returned) or ``unknown`` (the writer failed in between);
* ``observed``: ``(partition, offset, value)`` read concurrently, in the order
  each reader got them (a partition is any hashable key);
* ``commit_requested``: transaction name -> ``len(observed)`` when its writer
  first asked to commit it, noted before the request is sent (so a record of it
  observed at a lower index was read before any commit could be decided).

:func:`check` takes it with a final read_committed read of every partition
and counts, every one of which must be 0:

* ``aborted_reads`` (G1a): a record of an aborted transaction is read;
* ``lost_committed_writes``: a committed transaction is not wholly visible;
* ``partial_transactions``: some but not all records of a transaction are visible;
* ``duplicates``: a record is visible twice;
* ``out_of_order_writes``: a transaction's records in one partition are not in the order written;
* ``non_monotonic_offsets``: a partition's offsets go back or repeat in a read;
* ``uncommitted_reads``: a reader saw a record of a transaction that is not committed in the end,
  or saw it before its writer had asked to commit it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

ANOMALIES = ("aborted_reads", "lost_committed_writes", "partial_transactions", "duplicates", "out_of_order_writes",
             "non_monotonic_offsets", "uncommitted_reads")


@dataclass
class History:
    attempted: dict[str, list[bytes]] = field(default_factory=dict)  # txn -> values it wrote, in order
    outcome: dict[str, str] = field(default_factory=dict)  # txn -> committed | aborted | unknown
    observed: list[tuple[Hashable, int, bytes]] = field(default_factory=list)  # concurrent reads
    commit_requested: dict[str, int] = field(default_factory=dict)  # txn -> len(observed) when commit was asked
    lock: threading.Lock = field(default_factory=threading.Lock)  # for writers and readers in threads


def txn_of(value: bytes) -> str:
    """The transaction a value belongs to (``b"w1-7-3"`` -> ``"w1-7"``)."""
    return value.decode().rsplit("-", 1)[0]


def check(history: History, final: Mapping[Hashable, Sequence[tuple[int, bytes]]]) -> dict[str, int]:
    """Anomaly counts (see the module docstring) of a history and the final read
    (partition -> ``(offset, value)`` in the order read)."""
    visible = Counter(v for records in final.values() for _, v in records)
    anomalies = Counter[str]()
    anomalies["duplicates"] = sum(n - 1 for n in visible.values() if n > 1)
    for records in final.values():
        offsets = [o for o, _ in records]
        anomalies["non_monotonic_offsets"] += sum(1 for a, b in zip(offsets, offsets[1:]) if b <= a)
    position = {v: i for values in history.attempted.values() for i, v in enumerate(values)}
    out_of_order: set[str] = set()
    for records in final.values():
        last: dict[str, int] = {}  # txn -> position of its last value seen in this partition
        for _, value in records:
            txn, at = txn_of(value), position.get(value)
            if at is None:
                continue  # not a transaction's value
            if at < last.get(txn, -1):  # (the same value again is a duplicate, counted above)
                out_of_order.add(txn)
            last[txn] = at
    anomalies["out_of_order_writes"] = len(out_of_order)
    committed_in_the_end = set()
    for txn, values in history.attempted.items():
        present = [v for v in values if v in visible]
        outcome = history.outcome.get(txn, "unknown")
        if present and len(present) != len(values):
            anomalies["partial_transactions"] += 1
        if outcome == "aborted" and present:
            anomalies["aborted_reads"] += 1
        if outcome == "committed" and len(present) != len(values):
            anomalies["lost_committed_writes"] += 1
        if values and len(present) == len(values):
            committed_in_the_end.add(txn)
    last_offset: dict[Hashable, int] = {}
    for index, (partition, offset, value) in enumerate(history.observed):
        if offset <= last_offset.get(partition, -1):
            anomalies["non_monotonic_offsets"] += 1
        last_offset[partition] = offset
        txn = txn_of(value)
        if history.outcome.get(txn) == "aborted":
            anomalies["aborted_reads"] += 1
        elif txn not in committed_in_the_end or history.commit_requested.get(txn, index + 1) > index:
            anomalies["uncommitted_reads"] += 1  # never committed, or read before its commit was asked
    for name in ANOMALIES:
        anomalies.setdefault(name, 0)
    return dict(anomalies)
