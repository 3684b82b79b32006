"""The parts PartitionLog composes, driven directly: the batch index and the replica state (sans-I/O)."""

from __future__ import annotations

from array import array

from chronik.log.replica import LeaderEpochCache, ReplicaState
from chronik.log.segment import BatchIndex, BatchRows
from chronik.protocol import BatchHeader
from chronik.storage import EntryLocation
from chronik.storage.wal import ENTRY_HEADER


def header(base: int, records: int, max_timestamp: int) -> BatchHeader:
    return BatchHeader(base, 49, -1, 2, 0, 0, records - 1, max_timestamp, max_timestamp, -1, -1, -1, records)


def indexed(*batches: tuple[int, int, int]) -> BatchIndex:
    """An index of batches (base, records, max timestamp), 100 bytes each, in one segment."""
    index = BatchIndex()
    for n, (base, records, ts) in enumerate(batches):
        index.append(header(base, records, ts), EntryLocation(0, 16 + 100 * n, 100))
    return index


def rows(index: BatchIndex) -> list[tuple[int, int, int, EntryLocation]]:
    return [(index.base(i), index.last(i), index.max_timestamp(i), index.location(i)) for i in range(len(index))]


def test_the_batch_index_looks_up_by_offset_and_time() -> None:
    index = indexed((0, 2, 50), (2, 3, 30), (5, 1, 70))
    assert index.next_offset == 6 and BatchIndex().next_offset is None
    assert [index.containing(o) for o in (0, 1, 2, 4, 5, 6)] == [0, 0, 1, 1, 2, 3]
    assert [index.starting_at(o) for o in (0, 1, 2, 3, 6)] == [0, 1, 1, 2, 3]
    assert [index.reaching_timestamp(t) for t in (10, 50, 51, 70, 71)] == [0, 0, 2, 2, 3]  # a running maximum
    assert index.payload_bytes(0, 2) == 200 - 2 * ENTRY_HEADER.size
    assert index.max_timestamp_between(1, 2) == 30 and index.max_timestamp_between(3, 3) == -1


def test_keep_trims_every_column_at_once() -> None:
    index = indexed((0, 2, 50), (2, 3, 30), (5, 1, 70), (6, 1, 10))
    everything = rows(index)
    index.keep(1, 3)  # a prefix and a suffix go
    assert rows(index) == everything[1:3]
    assert index.reaching_timestamp(60) == 1 and index.reaching_timestamp(71) == 2
    index.keep(0, len(index))
    assert rows(index) == everything[1:3]
    index.keep(0, 0)
    assert len(index) == 0 and rows(index) == []


def test_replace_range_swaps_a_compacted_range_and_keeps_the_time_column_sorted() -> None:
    index = indexed((0, 2, 50), (2, 3, 90), (5, 1, 70), (6, 2, 60), (8, 1, 95))
    everything = rows(index)
    cleaned = BatchRows.empty()
    for kept in (header(2, 3, 40), header(5, 1, 70)):  # batch 2 lost its record of time 90
        cleaned.add(kept)
    index.replace_range(2, 6, cleaned, 2, array("q", [16, 116]), array("q", [100, 100]))
    assert rows(index) == [everything[0], (2, 4, 40, EntryLocation(2, 16, 100)), (5, 5, 70, EntryLocation(2, 116, 100)),
                           *everything[3:]]
    running = [index.reaching_timestamp(t) for t in range(0, 100, 5)]
    assert running == sorted(running)  # still a running maximum (the rows after the range keep theirs: upper bounds)
    assert [index.reaching_timestamp(t) for t in (50, 51, 70, 71, 95, 96)] == [0, 2, 2, 3, 4, 5]
    nothing = BatchRows.empty()
    index.replace_range(0, 2, nothing, 0, array("q"), array("q"))  # a range cleaned to nothing
    assert rows(index)[0][0] == 2 and len(index) == 4
    higher = BatchRows.empty()
    higher.add(header(2, 3, 99))  # not a subset after all: the rows after it are recomputed
    index.replace_range(2, 5, higher, 2, array("q", [16]), array("q", [100]))
    running = [index.reaching_timestamp(t) for t in range(0, 101)]
    assert running == sorted(running) and index.reaching_timestamp(99) == 0 and index.reaching_timestamp(100) == 4


def test_the_leader_epoch_cache_answers_offset_for_leader_epoch() -> None:
    cache = LeaderEpochCache()
    assert cache.latest_epoch == -1 and cache.end_offset_for(3, 10) == (-1, 10)
    for epoch, start in ((-1, 0), (1, 2), (1, 4), (3, 6), (2, 8)):  # unstamped and older epochs are not listed
        cache.assign(epoch, start)
    assert cache.latest_epoch == 3
    assert [cache.end_offset_for(e, 10) for e in (0, 1, 2, 3, 9)] == [(-1, 2), (1, 6), (1, 6), (3, 10), (3, 10)]
    cache.truncate_from_end(6)
    assert cache.latest_epoch == 1 and cache.end_offset_for(3, 6) == (1, 6)
    cache.clear()
    assert cache.latest_epoch == -1


def test_the_high_watermark_rules_of_each_role() -> None:
    replica = ReplicaState()
    assert replica.advance(5) and replica.high_watermark == 5  # unreplicated: the durable end
    assert not replica.lead(frozenset({2, 3}), 7, durable_end=9) and replica.leading and replica.leader_epoch == 7
    assert not replica.record_follower_end(2, 8, durable_end=9)  # node 3 has reported nothing yet
    assert replica.record_follower_end(3, 6, durable_end=9) and replica.high_watermark == 6
    assert replica.follower_end(2) == 8
    assert replica.lead(frozenset({2}), None, durable_end=9) and replica.high_watermark == 8  # an ISR shrink
    assert replica.leader_epoch == 7
    assert replica.follow() and not replica.leading and replica.leader_epoch is None
    assert replica.follower_end(2) is None
    assert not replica.follow()  # already following
    assert not replica.follow_high_watermark(7, durable_end=12)  # never goes back
    assert replica.follow_high_watermark(11, durable_end=10) and replica.high_watermark == 10  # capped by our log
    replica.truncated(9)
    assert replica.high_watermark == 9
    replica.restarted(20)
    assert replica.high_watermark == 20
    assert not replica.advance(15)
