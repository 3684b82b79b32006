"""The partition log: one Kafka partition replica on this node (Kafka's UnifiedLog + Partition).

:class:`PartitionLog` is the facade the rest of the broker uses (produce,
fetch, list offsets, replication, retention).  It composes the parts of
Kafka's log layer, one module each:

* :mod:`chronik.log.segment` -- the WAL segments and the batch index
  (LogSegment, OffsetIndex, TimeIndex); the on-disk format of the batches;
* :mod:`chronik.log.local` -- the local log and its recovery (LocalLog,
  LogLoader): offsets, log start, durable end, reads, truncation, retention,
  ``partition.json``;
* :mod:`chronik.log.replica` -- the high watermark, the ISR rules and the
  leader-epoch cache (Partition, LeaderEpochFileCache);
* :mod:`chronik.log.producer_state` -- idempotent-producer state
  (ProducerStateManager).

It knows record batches and offsets, never sockets.  It owns what ties the
parts together: what an append stamps into a batch, which parts a batch
updates, the readers parked on the high watermark, and the order of the steps
of a truncation or a restart.

Transactions: the producer state (:mod:`~chronik.log.producer_state`)
tracks each producer's ongoing transaction and first offset and the
aborted-transaction index, rebuilt from the stored batches on open and after
a truncation (markers are read back to know commit from abort).  The last
stable offset (:attr:`PartitionLog.last_stable_offset`) sits beside the high
watermark; markers are appended by :meth:`PartitionLog.append_marker` (the
coordinator's side, refused TRANSACTION_COORDINATOR_FENCED from an older
coordinator epoch than the producer's newest marker here; followers copy them
like any batch, which carries the coordinator epoch over to them).  Compaction (a
cleaner rewriting sealed segments, then swapping them in) works through
:mod:`~chronik.log.local`; it cleans only below the last stable offset,
drops aborted data and (once no data of theirs is left) markers, keeps each
producer's newest batches, and the cleaner manager then drops the index
entries of the removed abort markers (see :mod:`~chronik.log.cleaner`).

Invariants (beyond those of the parts)
--------------------------------------
* Each appended batch gets base offset = :attr:`PartitionLog.log_end_offset`,
  written into its bytes 0-7 (outside the CRC) before the append; nothing
  else in the batch is changed, except the LogAppendTime stamp (timestamp
  type bit, maxTimestamp, CRC) on LogAppendTime topics, and, while leading a
  replicated partition, the leader epoch (``partitionLeaderEpoch``, outside
  the CRC).
* A follower appends the leader's batches unchanged, at the leader's offsets
  (:meth:`~PartitionLog.append_replicated`), so every replica holds the same
  bytes at the same offsets.
* Every stored batch is in the batch index, the producer state and (if
  epoch-stamped) the leader-epoch cache, in offset order; all three are
  rebuilt on open from the recovered batch headers and cut together with the
  log (:meth:`~PartitionLog.truncate_to`, :meth:`~PartitionLog.restart_at`).
* Readers never see a batch at or above the high watermark; every reader
  parked on it is woken when it advances, when the log closes, and when a
  leader stops leading.
* Compaction (:mod:`chronik.log.cleaner`) replaces sealed segments below the
  high watermark through the WAL's swap (:meth:`~PartitionLog.install_cleaned`):
  offsets are kept, so the index gets gaps (a read at a removed offset returns
  the next batch, as in Kafka).  While a cleaning is in progress
  (:meth:`~PartitionLog.begin_cleaning`) no segment is deleted (retention,
  DeleteRecords) and truncation waits.  The epoch cache and producer state
  are left as they were.
* After a restart the high watermark starts at the checkpointed one (capped
  by the log end, raised to the log start; cluster mode,
  :mod:`chronik.log.checkpoint`) or, on a single node, at the log end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import trio

from ..protocol import (
    BatchHeader,
    ControlRecordType,
    ProtocolError,
    assign_offsets,
    control_record,
    control_record_coordinator_epoch,
    control_record_type,
    decode_records,
    encode_batch,
    parse_batch_header,
    set_log_append_time,
    set_partition_leader_epoch,
)
from ..storage import Appended, GroupCommitter, SegmentFile, WriteAheadLog
from .local import (
    PARTITION_FILE,
    LocalLog,
    OffsetOutOfRange,
    PartitionRecovery,
    PartitionUnreadable,
    load_local_log,
)
from .producer_state import AbortedTxn, EndTxnMarker, ProducerStateTable, SequenceError, is_idempotent
from .replica import LeaderEpochCache, ReplicaState
from .segment import BatchRows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """Where a produced batch went.  ``appended`` is None for a deduplicated retry."""

    base_offset: int
    last_offset: int
    log_append_time: int  # -1 unless the topic uses LogAppendTime
    appended: Appended | None



class PartitionLog:
    """One partition: append batches, read them back by offset, look up by time."""

    def __init__(self, local: LocalLog) -> None:
        self.local = local
        local.on_durable = self._on_durable
        self.replica = ReplicaState()
        self.epochs = LeaderEpochCache()
        self.producers = ProducerStateTable()
        self._waiters: set[trio.Event] = set()
        self._closed = False
        self.recovery: PartitionRecovery | None = None
        self._cleaning: trio.Event | None = None  # set when the cleaning in progress ends
        self._active_since: tuple[int, int] | None = None  # (active segment base, ms it was first seen non-empty)

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        committer: GroupCommitter,
        directory: str,
        *,
        topic: str,
        partition: int,
        topic_id: str,
        segment_bytes: int,
        high_watermark: int | None = None,
    ) -> "PartitionLog":
        """Open (creating if needed) the partition in ``directory`` and rebuild its index.

        ``high_watermark``: where to start the high watermark (cluster mode:
        the checkpointed one, see :mod:`chronik.log.checkpoint`), capped by the
        log end and raised to the log start; None starts it at the log end
        (a single node, where the durable end is the high watermark).

        Raises ``ValueError`` if the directory belongs to another topic id.
        """
        epochs = LeaderEpochCache()
        producers = ProducerStateTable()

        def observe(header: BatchHeader, payload: memoryview) -> None:
            epochs.assign(header.partition_leader_epoch, header.base_offset)
            producers.observe(header, end_txn_marker(header, payload))

        local, recovery = load_local_log(committer, directory, topic=topic, partition=partition, topic_id=topic_id,
                                         segment_bytes=segment_bytes, observe=observe)
        self = cls(local)
        self.epochs, self.producers, self.recovery = epochs, producers, recovery
        self.replica.high_watermark = local.log_end_offset
        if high_watermark is not None:
            self.replica.high_watermark = max(local.log_start_offset, min(high_watermark, local.log_end_offset))
        return self

    # -- the parts' state, as the callers see it -------------------------------

    @property
    def wal(self) -> WriteAheadLog:
        return self.local.wal

    @property
    def directory(self) -> str:
        return self.local.directory

    @property
    def topic(self) -> str:
        return self.local.topic

    @property
    def partition(self) -> int:
        return self.local.partition

    @property
    def topic_id(self) -> str:
        return self.local.topic_id

    @property
    def log_start_offset(self) -> int:
        return self.local.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.local.log_end_offset

    @property
    def durable_end(self) -> int:
        """The end of the durable prefix of the log (see :mod:`chronik.log.local`)."""
        return self.local.durable_end

    @property
    def high_watermark(self) -> int:
        """See :class:`~chronik.log.replica.ReplicaState`: never goes back except by :meth:`truncate_to`."""
        return self.replica.high_watermark

    @property
    def leader_epoch(self) -> int | None:
        """Stamped into appended batches while leading a replicated partition."""
        return self.replica.leader_epoch

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def holds_batches(self) -> bool:
        """Whether any batch is stored (a log emptied by :meth:`restart_at` holds none)."""
        return len(self.local.index) > 0

    # -- appending -----------------------------------------------------------

    def append_batch(self, batch: memoryview | bytearray, header: BatchHeader, *, log_append_time: int | None) -> AppendInfo:
        """Assign offsets to one validated batch and queue it on the WAL.

        ``batch`` is rewritten in place and must stay unchanged until durable.
        ``log_append_time`` (ms) stamps the batch LogAppendTime when given.
        Never blocks; wait with :meth:`wait_durable`.

        :raises SequenceError: the idempotent-producer rules refuse the batch.
        """
        if is_idempotent(header):
            original = self.producers.check(header)
            if original is not None:
                return AppendInfo(original, original + header.last_offset_delta, -1, None)
        base = self.local.log_end_offset
        assign_offsets(batch, base)
        leader_epoch = self.replica.leader_epoch
        if leader_epoch is not None:
            set_partition_leader_epoch(batch, leader_epoch)
        if log_append_time is not None:
            set_log_append_time(batch, log_append_time)
        stored = parse_batch_header(batch)
        appended = self._store(batch, stored)
        return AppendInfo(base, stored.last_offset, -1 if log_append_time is None else log_append_time, appended)

    def append_replicated(self, batch: memoryview | bytes, *, gaps_below: int | None = None) -> AppendInfo:
        """Append a batch exactly as the leader stored it, at the leader's offsets (followers).

        ``gaps_below``: the leader's high watermark; a batch that starts below
        it may start after :attr:`log_end_offset` (the batches between were
        removed by the leader's log cleaner, which only cleans below its high
        watermark).  Never blocks; wait with :meth:`wait_durable`.

        :raises ProtocolError: not a whole record batch.
        :raises OffsetOutOfRange: the batch does not start at :attr:`log_end_offset`
            (or, within ``gaps_below``, starts before it).
        """
        header = parse_batch_header(batch)
        if header.size != len(batch):
            raise ProtocolError(f"replicated batch of {len(batch)} bytes says it has {header.size}")
        end = self.local.log_end_offset
        compacted_gap = gaps_below is not None and end < header.base_offset < gaps_below
        if header.base_offset != end and not compacted_gap:
            raise OffsetOutOfRange(
                f"replicated batch at offset {header.base_offset} does not follow the log end {self.log_end_offset}"
                f" of {self.topic}-{self.partition}"
            )
        appended = self._store(batch, header)
        return AppendInfo(header.base_offset, header.last_offset, -1, appended)

    def append_marker(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                      timestamp_ms: int) -> AppendInfo:
        """Append a transaction marker (a control batch) for ``producer_id``; never blocks.

        The batch: one control record, key = version 0 + type (0 abort, 1
        commit), value = version 0 + ``coordinator_epoch``; attributes with
        the control and transactional bits; the producer's id and epoch.

        :raises SequenceError: TRANSACTION_COORDINATOR_FENCED, ``coordinator_epoch`` is
            older than that of the producer's newest marker here (nothing is appended).
        """
        self.producers.check_marker(producer_id, coordinator_epoch)
        record = control_record(ControlRecordType.COMMIT if commit else ControlRecordType.ABORT, coordinator_epoch,
                                0, timestamp_ms)
        batch = encode_batch([record], producer_id=producer_id, producer_epoch=producer_epoch,
                             is_transactional=True, is_control=True)
        base = self.local.log_end_offset
        assign_offsets(batch, base)
        if self.replica.leader_epoch is not None:
            set_partition_leader_epoch(batch, self.replica.leader_epoch)
        header = parse_batch_header(batch)
        appended = self._store(batch, header)
        return AppendInfo(base, base, -1, appended)

    def _store(self, batch: memoryview | bytes | bytearray, header: BatchHeader) -> Appended:
        appended = self.local.append(batch, header)
        self.epochs.assign(header.partition_leader_epoch, header.base_offset)
        self.producers.observe(header, end_txn_marker(header, batch))
        return appended

    def durable_settled(self, info: AppendInfo) -> bool:
        """Whether the group commit of an append has ended (durable or failed): then
        :meth:`wait_durable` returns or raises at once, without yielding.  Never blocks."""
        return info.appended is not None and info.appended.batch.done.is_set()

    async def wait_durable(self, info: AppendInfo) -> None:
        """Return once the batch is durable (and so below the high watermark).

        Cancellation: the append stays queued and becomes durable anyway.
        """
        if info.appended is not None:
            await self.wal.wait_durable(info.appended)
        elif self.high_watermark <= info.last_offset:
            await self.wal.flush()  # a retry of a batch still in flight

    async def wait_high_watermark(self, end: int) -> None:
        """Return once the high watermark is at least ``end`` (or the log closed, or,
        if it led when the wait began, once it no longer leads).

        Cancellation: safe; only the wait ends.
        """
        replica = self.replica
        leading = replica.leading
        while replica.high_watermark < end and not self._closed and (not leading or replica.leading):
            with DataWatch([self]) as moved:
                await moved.wait()
        await trio.lowlevel.checkpoint()

    def _on_durable(self) -> None:
        self.replica.advance(self.local.durable_end)
        self._wake_readers()  # also wakes the leader's parked follower fetches

    # -- replication: roles, the high watermark, leader epochs -----------------

    def lead(self, isr_followers: frozenset[int], leader_epoch: int | None = None) -> None:
        """This node leads a replicated partition whose in-sync followers are ``isr_followers``.

        From now on the high watermark is the minimum of :attr:`durable_end`
        and the log ends those followers reported (an empty set: the durable
        end), and appended batches carry ``leader_epoch`` (when given).
        """
        if self.replica.lead(isr_followers, leader_epoch, self.durable_end):
            self._wake_readers()  # an ISR shrink can release acks=all writes

    def follow(self) -> None:
        """This node follows the partition: the high watermark comes from the leader (:meth:`follow_high_watermark`)."""
        if self.replica.follow():
            self._wake_readers()  # acks=all writes waiting here are answered NOT_LEADER_OR_FOLLOWER

    def refresh_high_watermark(self) -> None:
        """Re-apply the high-watermark rule now (after a restart a log that is
        neither leading nor following takes its durable end at once)."""
        if self.replica.advance(self.durable_end):
            self._wake_readers()

    def record_follower_end(self, node_id: int, end: int) -> None:
        """(Leader) follower ``node_id`` has everything below ``end`` durable."""
        if self.replica.record_follower_end(node_id, end, self.durable_end):
            self._wake_readers()

    def follow_high_watermark(self, leader_high_watermark: int) -> None:
        """(Follower) the leader's high watermark, as its last fetch answer said."""
        if self.replica.follow_high_watermark(leader_high_watermark, self.durable_end):
            self._wake_readers()

    def follower_end(self, node_id: int) -> int | None:
        return self.replica.follower_end(node_id)

    @property
    def last_epoch(self) -> int:
        """The leader epoch of the newest epoch-stamped batch (-1: none)."""
        return self.epochs.latest_epoch

    def epoch_end(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: ``(e, end)`` for the largest epoch ``e <= epoch``
        that starts in this log, ``end`` being where the next epoch starts (the
        log end for the newest).  ``(-1, start of the oldest epoch)`` when no
        such epoch is here (``(-1, log end)`` with no epochs at all)."""
        return self.epochs.end_offset_for(epoch, self.log_end_offset)

    async def truncate_to(self, offset: int) -> int:
        """Cut every batch that ends at or above ``offset`` (a follower's divergent
        suffix); return the new log end.  A batch straddling ``offset`` goes whole.

        Waits for the appends in flight first (the WAL truncates only a quiet
        log), then truncates durably and rebuilds the producer state.  Offsets
        at or below the log start are kept.  Cancellation: shielded.
        """
        with trio.CancelScope(shield=True):
            await self.wait_cleaning_done()
            await self.wal.flush()
            if self._closed:
                return self.log_end_offset
            dropped = self.local.truncate_to(offset)
            if dropped is None:
                return self.log_end_offset
            self.replica.truncated(self.log_end_offset)
            self.epochs.truncate_from_end(self.log_end_offset)
            self._rebuild_producer_state()
            log.info("%s-%d: truncated %d record offset(s), log end now %d", self.topic, self.partition, dropped,
                     self.log_end_offset)
            return self.log_end_offset

    async def restart_at(self, offset: int) -> None:
        """Empty the log; the next batch goes at ``offset`` (a follower whose log ends
        below its leader's log start: what it lacks is gone from the leader).

        The log start becomes ``offset`` if that is higher.  An empty log may
        also restart lower (but not below 0): the leader's log start can fall
        inside a batch, which the follower must then store whole, from its base
        offset, with the log start still inside it (as on the leader).  The new
        log start is persisted before any segment is deleted, so a crash in
        between reopens an empty log at the log start.  Waits for the appends
        in flight first.  Cancellation: shielded.

        :raises ValueError: ``offset`` is not above :attr:`log_end_offset` and the log holds batches.
        """
        with trio.CancelScope(shield=True):
            await self.wait_cleaning_done()
            await self.wal.flush()
            if self._closed:
                return
            dropped = self.local.restart_at(offset)
            self.epochs.clear()
            self.producers = ProducerStateTable()
            self.replica.restarted(self.log_start_offset)
            log.info("%s-%d: log restarted at offset %d (log start %d); %d record offset(s) dropped",
                     self.topic, self.partition, offset, self.log_start_offset, dropped)
            self._wake_readers()

    def _rebuild_producer_state(self) -> None:
        self.producers = ProducerStateTable()
        for header, payload in self.local.batches():
            self.producers.observe(header, end_txn_marker(header, payload))

    # -- reading -------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, end: int | None = None) -> list[memoryview]:
        """Whole batches below the high watermark from the one containing ``offset``, about ``max_bytes``.

        ``end`` reads up to another limit instead (a follower's fetch reads up
        to :attr:`durable_end`).

        The first batch is returned even if it is larger than ``max_bytes`` (so
        a consumer always progresses); later ones only while they fit.
        Payloads are views of read buffers, never copied.

        :raises OffsetOutOfRange: outside [log start, log end].
        """
        self.local.check_offset(offset)
        return self.local.read(offset, max_bytes, self.high_watermark if end is None else end)

    @property
    def last_stable_offset(self) -> int:
        """The high watermark, or the first offset of the oldest transaction not yet decided
        with its marker below the high watermark, if lower (what read_committed may read)."""
        return self.producers.last_stable_offset(self.replica.high_watermark)

    def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions whose data may lie in ``[start, end)`` (Fetch's list, for read_committed)."""
        return self.producers.aborted_between(start, end)

    def bytes_available(self, offset: int) -> int:
        """Durable bytes from ``offset`` to the high watermark (for Fetch min_bytes)."""
        return self.local.bytes_available(offset, self.high_watermark)

    def register_waiter(self, event: trio.Event) -> None:
        """Set ``event`` the next time the high watermark advances (or the log closes).

        A waiter that stops waiting first must :meth:`unregister_waiter`, or an
        idle partition would keep every timed-out long-poll's event.
        """
        self._waiters.add(event)

    def unregister_waiter(self, event: trio.Event) -> None:
        """Forget ``event`` (a no-op once it was set)."""
        self._waiters.discard(event)

    def _wake_readers(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for event in waiters:
            event.set()

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= ``timestamp``, or None."""
        return self.local.offset_for_timestamp(timestamp, self.high_watermark)

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (earliest such), or None."""
        return self.local.max_timestamp(self.high_watermark)

    # -- log start, retention, deletion ----------------------------------------

    def size_bytes(self) -> int:
        return self.local.size_bytes()

    def advance_log_start(self, offset: int) -> int:
        """Move the log start offset up to ``offset`` (DeleteRecords); return the new start.

        :raises OffsetOutOfRange: ``offset`` is above the high watermark.
        """
        start = self.local.advance_log_start(offset, self.high_watermark)
        self.producers.forget_aborted_below(start)
        return start

    def apply_retention(self, now_ms: int, retention_ms: int, retention_bytes: int) -> int:
        """Delete whole segments beyond the retention limits; return how many went.

        A segment goes when its newest timestamp is older than ``retention_ms``
        (-1: keep), or while the log is larger than ``retention_bytes`` (-1: no
        limit) without it.  The active segment is rolled first when everything
        in it has expired, so an idle topic's data also ages out.  Only
        segments below the high watermark go.  Aborted-transaction index entries whose
        marker is now below the log start go too (their data went with it).
        """
        deleted = self.local.apply_retention(now_ms, retention_ms, retention_bytes, self.high_watermark)
        if deleted:
            self.producers.forget_aborted_below(self.log_start_offset)
        return deleted

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget the producers idle for ``expiration_ms`` (see :meth:`ProducerStateTable.expire`)."""
        return self.producers.expire(now_ms, expiration_ms)

    async def aclose(self) -> None:
        """Flush and close; readers parked on this log are woken."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.local.aclose()
        finally:
            self._wake_readers()

    # -- compaction hooks (used by chronik.log.cleaner_manager) --------------------

    def sealed_segments(self) -> list[tuple[int, int, int, int, int]]:
        """``(base, next offset, data bytes, first batch's max timestamp, max timestamp)``
        of each sealed segment from the oldest, up to the first one not wholly
        below the last stable offset (at most the high watermark: the cleaner
        only sees decided transactions) and the durable end."""
        spans = []
        limit = min(self.last_stable_offset, self.durable_end)
        index = self.local.index
        segments = self.wal.segments()
        for info, following in zip(segments, segments[1:]):
            if following.base_index > limit:
                break
            start, end = index.starting_at(info.base_index), index.starting_at(following.base_index)
            if start == end:
                continue
            spans.append((info.base_index, following.base_index, info.data_bytes, index.max_timestamp(start),
                          index.max_timestamp_between(start, end)))
        return spans

    def begin_cleaning(self) -> bool:
        """Mark a cleaning in progress (False if one already is, or the log is closed):
        until :meth:`end_cleaning`, no segment is deleted and truncations wait."""
        if self._cleaning is not None or self._closed:
            return False
        self._cleaning = trio.Event()
        self.local.deletions_paused = True
        return True

    def end_cleaning(self) -> None:
        """The cleaning ended (installed or given up); truncations waiting go ahead."""
        if self._cleaning is not None:
            self.local.deletions_paused = False
            self._cleaning.set()
            self._cleaning = None

    async def wait_cleaning_done(self) -> None:
        """Return once no cleaning is in progress.  Cancellation: only the wait ends."""
        while self._cleaning is not None:
            await self._cleaning.wait()

    def install_cleaned(self, replacement: Any, rows: BatchRows) -> list[SegmentFile]:
        """Serve reads from a committed replacement of segments (``WriteAheadLog.commit_replacement``
        done) whose entries are the batches ``rows``: switch the WAL over and
        re-index the replaced range.  Never blocks; costs column copies and
        a pass over the new rows, not over the rest of the log.  Returns the
        replaced segments' files, still open: the caller closes them off the
        event loop (:func:`chronik.storage.files.close_files`; see
        ``WriteAheadLog.switch_to_replacement``)."""
        old_files = self.wal.switch_to_replacement(replacement)
        self.local.index.replace_range(replacement.first, replacement.end, rows, replacement.first,
                                       replacement.positions, replacement.sizes)
        return old_files

    def roll_if_older(self, now_ms: int, max_age_ms: int) -> bool:
        """Roll the active segment once it has held data for ``max_age_ms`` (segment.ms,
        by the wall clock since this node first saw it non-empty, not by record
        timestamps, which producers choose) and nothing is in flight; True if rolled."""
        active = self.wal.segments()[-1]
        if active.data_bytes == 0:
            return False
        if self._active_since is None or self._active_since[0] != active.base_index:
            self._active_since = (active.base_index, now_ms)
            return False
        stats = self.wal.stats()
        if now_ms - self._active_since[1] < max_age_ms or stats.durable_end != stats.write_end:
            return False
        self.wal.roll()
        return True

    async def delete(self) -> None:
        """Close the log and remove its directory and files (after a cleaning in progress)."""
        with trio.CancelScope(shield=True):
            await self.wait_cleaning_done()
        await self.aclose()
        self.local.delete_files()


def end_txn_marker(header: BatchHeader, batch: memoryview | bytes | bytearray) -> EndTxnMarker | None:
    """What the record of a control batch says: its type (0 abort, 1 commit) and, for those
    two, the coordinator epoch; None for data batches.

    :raises ProtocolError: a control batch without a readable control record.
    """
    if not header.is_control:
        return None
    records = decode_records(batch)
    if not records:
        raise ProtocolError(f"control batch at offset {header.base_offset} holds no record")
    control_type = control_record_type(records[0])
    if control_type not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
        return EndTxnMarker(control_type, None)
    return EndTxnMarker(control_type, control_record_coordinator_epoch(records[0]))


__all__ = ["AbortedTxn", "AppendInfo", "end_txn_marker", "OffsetOutOfRange", "PARTITION_FILE", "PartitionLog", "PartitionRecovery",
           "PartitionUnreadable", "SequenceError"]


class DataWatch:
    """One event, set when the high watermark of any of ``logs`` advances (or one closes).

    It is registered when constructed, so a caller that read the logs and then
    builds the watch in the same synchronous step cannot miss an append that
    happens after its read.  :meth:`close` (or leaving the ``with`` block)
    unregisters it from logs that did not fire, so idle partitions keep no
    events of long-polls that timed out.
    """

    def __init__(self, logs: "Iterable[PartitionLog]") -> None:
        self.event = trio.Event()
        self._logs = list(logs)
        for log in self._logs:
            log.register_waiter(self.event)

    async def wait(self) -> None:
        await self.event.wait()

    def close(self) -> None:
        for log in self._logs:
            log.unregister_waiter(self.event)
        self._logs = []

    def __enter__(self) -> "DataWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
