"""Replica state of one partition: the high-watermark rules and the leader-epoch cache.

Kafka's ``Partition`` (high watermark, in-sync replicas, follower log ends)
and ``LeaderEpochFileCache``.  Sans-I/O: plain state and rules, no files and
no waiting -- :class:`~chronik.log.partition.PartitionLog` wakes its readers
when a rule here says the high watermark moved.

Nothing here is written to disk.  The leader-epoch cache is rebuilt on open
from the ``partitionLeaderEpoch`` of the stored batch headers (Kafka keeps a
``leader-epoch-checkpoint`` file; the batch headers hold the same facts);
the high watermark is persisted by :mod:`chronik.log.checkpoint`.
"""

from __future__ import annotations

import bisect


class LeaderEpochCache:
    """``(epoch, start offset)`` for each leader epoch that starts in the log.

    Invariants
    ----------
    * Epochs and start offsets both strictly increase.
    * An epoch is listed once, at the base offset of the first stored batch
      stamped with it; batches stamped -1 (unreplicated, or written before
      epochs) are not in the cache.
    * It only describes stored batches: a truncation drops the epochs that
      start at or above the new log end (:meth:`truncate_from_end`), a
      restart of the log empties it (:meth:`clear`).
    """

    __slots__ = ("_epochs",)

    def __init__(self) -> None:
        self._epochs: list[tuple[int, int]] = []

    def assign(self, epoch: int, start_offset: int) -> None:
        """A stored batch stamped ``epoch`` starts at ``start_offset`` (in offset order)."""
        if epoch >= 0 and (not self._epochs or epoch > self._epochs[-1][0]):
            self._epochs.append((epoch, start_offset))

    @property
    def latest_epoch(self) -> int:
        """The newest epoch in the cache (-1: none)."""
        return self._epochs[-1][0] if self._epochs else -1

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: ``(e, end)`` for the largest epoch ``e <= epoch``,
        ``end`` being where the next epoch starts (``log_end_offset`` for the
        newest).  ``(-1, start of the oldest epoch)`` when no such epoch is
        here (``(-1, log_end_offset)`` with no epochs at all)."""
        epochs = self._epochs
        i = bisect.bisect_right(epochs, (epoch, 1 << 62))
        if i == 0:
            return -1, epochs[0][1] if epochs else log_end_offset
        end = epochs[i][1] if i < len(epochs) else log_end_offset
        return epochs[i - 1][0], end

    def truncate_from_end(self, end_offset: int) -> None:
        """Forget the epochs that start at or above ``end_offset`` (the log was cut there)."""
        self._epochs = [(e, start) for e, start in self._epochs if start < end_offset]

    def clear(self) -> None:
        self._epochs = []


class ReplicaState:
    """The high watermark of one partition replica and the rules that move it.

    Roles: *unreplicated* (a single node, or a log neither leading nor
    following), *leader* (:meth:`lead`) or *follower* (:meth:`follow`).

    Invariants
    ----------
    * ``high_watermark`` never goes back, except when the log itself is cut
      (:meth:`truncated`, never below what the ISR acknowledged: only a
      suffix the leader lacks is cut).  Readers never see a batch at or
      above it.
    * Unreplicated, it is the durable end of the log.  A leader holds it at
      the minimum of its own durable end and the log ends its in-sync
      followers reported (:meth:`record_follower_end`; an empty ISR: the
      durable end).  A follower holds it at the minimum of its durable end
      and the leader's high watermark (:meth:`follow_high_watermark`).
    * ``leader_epoch`` is set only while leading a replicated partition; it
      is stamped into every batch appended then.
    """

    __slots__ = ("high_watermark", "leader_epoch", "_isr_followers", "_follower_ends", "_leader_high_watermark")

    def __init__(self) -> None:
        self.high_watermark = 0
        self.leader_epoch: int | None = None
        self._isr_followers: frozenset[int] | None = None  # leading a replicated partition
        self._follower_ends: dict[int, int] = {}
        self._leader_high_watermark: int | None = None  # following

    @property
    def leading(self) -> bool:
        return self._isr_followers is not None

    def lead(self, isr_followers: frozenset[int], leader_epoch: int | None, durable_end: int) -> bool:
        """Lead with in-sync followers ``isr_followers``; return whether the high watermark moved."""
        if leader_epoch is not None:
            self.leader_epoch = leader_epoch
        self._isr_followers = frozenset(isr_followers)
        self._leader_high_watermark = None
        return self.advance(durable_end)

    def follow(self) -> bool:
        """Follow the leader; return whether this replica led until now."""
        leading = self._isr_followers is not None
        self._isr_followers = None
        self.leader_epoch = None
        self._follower_ends.clear()
        if self._leader_high_watermark is None:
            self._leader_high_watermark = self.high_watermark
        return leading

    def record_follower_end(self, node_id: int, end: int, durable_end: int) -> bool:
        """(Leader) follower ``node_id`` has everything below ``end`` durable; return whether the high watermark moved."""
        self._follower_ends[node_id] = end
        return self.advance(durable_end)

    def follow_high_watermark(self, leader_high_watermark: int, durable_end: int) -> bool:
        """(Follower) the leader's high watermark; return whether ours moved."""
        self._leader_high_watermark = max(self._leader_high_watermark or 0, leader_high_watermark)
        return self.advance(durable_end)

    def follower_end(self, node_id: int) -> int | None:
        return self._follower_ends.get(node_id)

    def advance(self, durable_end: int) -> bool:
        """Apply the rule of the current role; return whether the high watermark moved (it only moves up)."""
        target = durable_end
        if self._isr_followers is not None:
            for node_id in self._isr_followers:
                target = min(target, self._follower_ends.get(node_id, 0))
        elif self._leader_high_watermark is not None:
            target = min(target, self._leader_high_watermark)
        if target > self.high_watermark:
            self.high_watermark = target
            return True
        return False

    def truncated(self, log_end_offset: int) -> None:
        """The log was cut to end at ``log_end_offset``: nothing above it can be exposed."""
        self.high_watermark = min(self.high_watermark, log_end_offset)
        if self._leader_high_watermark is not None:
            self._leader_high_watermark = min(self._leader_high_watermark, log_end_offset)

    def restarted(self, log_start_offset: int) -> None:
        """The log restarted empty with log start ``log_start_offset``: everything below it is gone."""
        self.high_watermark = max(self.high_watermark, log_start_offset)
        if self._leader_high_watermark is not None:
            self._leader_high_watermark = max(self._leader_high_watermark, log_start_offset)


__all__ = ["LeaderEpochCache", "ReplicaState"]
