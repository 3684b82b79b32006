"""The transaction coordinator: the trio driver of :mod:`chronik.txn.state`.

Durability: each transactional id's state is a
:class:`~chronik.metadata.commands.PutTransaction` command in the metadata log
(and so a ``TransactionImage`` in the image), and TxnOffsetCommit offsets are
:class:`~chronik.metadata.commands.StageTxnOffsets` commands.  Why the
metadata log rather than a dedicated ``__transaction_state`` log: it is
already durable before a command is answered, replicated by Raft in cluster
mode, snapshotted, and replayed on every node, so the state follows the
coordinator (which is the controller, like the group coordinator) with no
extra log, loading or partition-to-coordinator mapping; and it makes the
commit of a transaction's consumer offsets atomic with its CompleteCommit
state (one command).  The cost -- every transition is one metadata append --
is that of one fsync, which the group commit shares between concurrent
transactions.

The order of a transaction's end, which makes it crash-safe:

1. EndTxn persists PrepareCommit/PrepareAbort (the decision) durably;
2. markers go to every partition of the transaction (:class:`MarkerWriter`),
   each durable (and, replicated, below the high watermark) before the next step;
3. CompleteCommit/CompleteAbort is persisted (committing the staged offsets).

EndTxn is answered once the decision is durable, as Kafka answers it (its
``TransactionCoordinator`` responds when PrepareCommit/PrepareAbort is in the
transaction log and sends the markers after): the outcome can no longer
change, and steps 2 and 3 run in the coordinator's own nursery.  What a
producer could see of the difference is kept as it was: a READ_COMMITTED
ListOffsets or Fetch of a partition whose marker is still being written waits
for it (:meth:`TransactionCoordinator.wait_markers_written`), so a producer
reading after its commit or abort was answered finds the transaction decided
there (below the last stable offset; listed aborted).  Two
cases are answered after step 3 as before: a transaction that commits group
offsets (they are committed when the producer hears of it), and one with a
partition another node leads (that node's readers cannot wait for a marker
they know nothing of).  A request of the same
transactional id arriving while steps 2-3 are under way waits for them (up
to :data:`END_TXN_WAIT_SECONDS`, then CONCURRENT_TRANSACTIONS) rather than
answering CONCURRENT_TRANSACTIONS at once, on which librdkafka backs off 20 ms
and the Java client ``retry.backoff.ms``: the next transaction's
AddPartitionsToTxn cannot reach a partition before the previous one's marker
is durable there, because it is answered only after the Complete state,
which is written only after every marker.  After a restart
or a coordinator move, :meth:`TransactionCoordinator.run` finds every
transaction left in a Prepare state and writes its markers again (writing a
marker twice is harmless: the second finds no ongoing transaction of that
producer).  A partition that answers TRANSACTION_COORDINATOR_FENCED (it has a
marker of that producer from a newer coordinator epoch) means this
coordinator was deposed: as in Kafka, it stops completing that transaction
(until its coordinator epoch changes), leaving it to the newer one.
:meth:`TransactionCoordinator.run` also aborts Ongoing transactions past ``transaction.timeout.ms``
(bumping the epoch, which fences their producer) and forgets ids idle for
``transactional.id.expiration.ms``.

Concurrency: requests for one transactional id are handled one at a time (a
lock per id); each persisted command also names the state it was computed
from, so a stale writer (an old coordinator) is rejected by the image.
Cancellation: a cancelled request may still have persisted its state; the
completion of a decided transaction runs in the coordinator's own nursery
and is never cancelled by a client going away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..metadata.commands import Command, PutTransaction, StageTxnOffsets
from ..metadata.image import CommandRejected, MetadataImage, TransactionImage
from ..protocol import ErrorCode
from . import state as core

log = logging.getLogger(__name__)

END_TXN_WAIT_SECONDS = 5.0
"""How long a request waits for the completion of its id's decided transaction (markers, then the
Complete state) before answering anyway (CONCURRENT_TRANSACTIONS, or for EndTxn the decision)."""

MARKER_RETRY_SECONDS = 0.2


class MetadataWriter(Protocol):
    @property
    def image(self) -> MetadataImage: ...

    async def submit(self, command: Command) -> Any: ...


class TxnRole(Protocol):
    """Whether this node coordinates transactions now (the same node as groups)."""

    def coordinator_error(self) -> ErrorCode | None: ...

    @property
    def coordinator_epoch(self) -> int: ...


class StandaloneRole:
    coordinator_epoch = 0

    def coordinator_error(self) -> ErrorCode | None:
        return None


class MarkerWriter(Protocol):
    async def write_markers(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                            partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        """Write a marker to each partition; return the partitions that failed (retried later)."""
        ...

    def writes_locally(self, partitions: Sequence[tuple[str, int]]) -> bool:
        """Whether this node would write every one of these markers itself (it leads the partitions)."""
        ...


@dataclass(frozen=True, slots=True)
class TxnSettings:
    max_timeout_ms: int = 900_000
    """transaction.max.timeout.ms"""
    id_expiration_ms: int = 604_800_000
    """transactional.id.expiration.ms"""
    check_interval_ms: int = 1000
    """How often the timer looks for decided, timed-out and expired transactions (Kafka's
    transaction.abort.timed.out.transaction.cleanup.interval.ms is 10 s; a second costs little here)."""


class TransactionCoordinator:
    """Every transactional id's coordinator (see the module docstring)."""

    def __init__(self, metadata: MetadataWriter, markers: MarkerWriter, allocate_producer_id: Callable[[], Awaitable[int]],
                 settings: TxnSettings = TxnSettings(), role: TxnRole | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._metadata = metadata
        self._markers = markers
        self._allocate = allocate_producer_id
        self.settings = settings
        self._role: TxnRole = role or StandaloneRole()
        self._clock = clock
        self._locks: dict[str, trio.Lock] = {}
        self._completing: dict[str, trio.Event] = {}  # set once the Complete state is durable (or it stopped)
        self._fenced: dict[str, int] = {}  # id -> coordinator epoch whose markers a partition refused as fenced
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _lock(self, transactional_id: str) -> trio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = trio.Lock()
        return lock

    def state(self, transactional_id: str) -> TransactionImage | None:
        return self._metadata.image.transactions.get(transactional_id)

    def availability(self) -> ErrorCode | None:
        """None if this node coordinates transactions now, else the error to answer."""
        error = self._role.coordinator_error()
        if error is None and self._nursery is None:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return error

    async def _persist(self, put: PutTransaction | None) -> ErrorCode | None:
        if put is None:
            return None
        try:
            await self._metadata.submit(put)
        except CommandRejected as exc:
            log.info("transaction state of %r not written: %s", put.transactional_id, exc.message)
            return ErrorCode.CONCURRENT_TRANSACTIONS
        if put.state in core.PREPARING:
            self._start_completion(put.transactional_id)
        return None

    # -- requests --------------------------------------------------------------

    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int,
                               producer_epoch: int) -> tuple[ErrorCode, int, int]:
        refused = self.availability()
        if refused is not None:
            return refused, -1, -1
        await self._settle(transactional_id)
        for attempt in range(2):
            async with self._lock(transactional_id):
                current = self.state(transactional_id)
                args = (transactional_id, timeout_ms, self.settings.max_timeout_ms, producer_id, producer_epoch)
                outcome = core.init_producer_id(current, *args, self._now_ms())
                if outcome.needs_producer_id:
                    outcome = core.init_producer_id(current, *args, self._now_ms(), await self._allocate())
                failed = await self._persist(outcome.put)
                if failed is not None:
                    return failed, -1, -1
            if outcome.markers and attempt == 0 and await self._wait_completed(transactional_id):
                continue  # an open transaction was fenced and is now aborted: initialise
            return outcome.error, outcome.producer_id, outcome.producer_epoch
        return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1

    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: list[tuple[str, int]], *, verify_only: bool = False
                             ) -> dict[tuple[str, int], ErrorCode]:
        refused = self.availability()
        if refused is not None:
            return {p: refused for p in partitions}
        await self._settle(transactional_id)
        async with self._lock(transactional_id):
            outcome = core.add_partitions(self.state(transactional_id), producer_id, producer_epoch, partitions,
                                          self._now_ms(), verify_only=verify_only)
            failed = await self._persist(outcome.put)
        if failed is not None:
            return {p: failed for p in partitions}
        return outcome.partition_errors

    async def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int, group: str) -> ErrorCode:
        refused = self.availability()
        if refused is not None:
            return refused
        await self._settle(transactional_id)
        async with self._lock(transactional_id):
            outcome = core.add_offsets(self.state(transactional_id), producer_id, producer_epoch, group, self._now_ms())
            failed = await self._persist(outcome.put)
        return failed or outcome.error

    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> ErrorCode:
        refused = self.availability()
        if refused is not None:
            return refused
        await self._settle(transactional_id)
        async with self._lock(transactional_id):
            outcome = core.end_txn(self.state(transactional_id), producer_id, producer_epoch, commit, self._now_ms())
            failed = await self._persist(outcome.put)
        if failed is not None:
            return failed
        put = outcome.put
        if outcome.markers and put is not None and (
                put.groups or not self._markers.writes_locally([(str(t), int(p)) for t, p in put.partitions])):
            # the decision is durable, which is what EndTxn answers (see the module docstring);
            # but group offsets are answered committed, and markers another node writes are
            # answered written, since that node's readers cannot wait for them
            await self._wait_completed(transactional_id)
        return outcome.error

    async def wait_markers_written(self, partitions: Iterable[tuple[str, int]],
                                   timeout: float = END_TXN_WAIT_SECONDS) -> None:
        """(READ_COMMITTED ListOffsets and Fetch.) Return once no transaction this coordinator
        has answered decided still has a marker to write to one of ``partitions`` (or after
        ``timeout`` s): a producer that heard its commit or abort answered, then reads with
        READ_COMMITTED, finds its transaction decided there.  ``partitions`` is iterated only
        while some completion is under way.  Never raises."""
        if not self._completing:
            return
        wanted = {(str(topic), int(partition)) for topic, partition in partitions}
        with trio.move_on_after(timeout):
            while True:
                pending = [done for transactional_id, done in self._completing.items()
                           if (current := self.state(transactional_id)) is not None
                           and current.state in core.PREPARING
                           and any((t, p) in wanted for t, p in current.partitions)]
                if not pending:
                    return
                await pending[0].wait()

    async def _settle(self, transactional_id: str) -> None:
        """Before a request of ``transactional_id``: let a completion under way (markers, then
        the Complete state) finish, rather than answer CONCURRENT_TRANSACTIONS and have the
        client back off and retry (see the module docstring).  A decided transaction that no
        completion has taken up yet (a coordinator just started) gets one now."""
        current = self.state(transactional_id)
        if current is not None and current.state in core.PREPARING and self._role.coordinator_error() is None:
            self._start_completion(transactional_id)
        done = self._completing.get(transactional_id)
        if done is not None:
            with trio.move_on_after(END_TXN_WAIT_SECONDS):
                await done.wait()

    async def stage_offsets(self, transactional_id: str, group: str, producer_id: int, producer_epoch: int,
                            offsets: list[list[Any]]) -> tuple[ErrorCode, list[str | None]]:
        """TxnOffsetCommit: stage ``offsets`` (``[topic, partition, offset, leader_epoch, metadata]``)."""
        async with self._lock(transactional_id):
            current = self.state(transactional_id)
            error = core.check_producer(current, producer_id, producer_epoch)
            if error is None and (current is None or current.state != core.ONGOING or group not in current.groups):
                error = ErrorCode.INVALID_TXN_STATE
            if error is not None:
                return error, []
            try:
                results = await self._metadata.submit(
                    StageTxnOffsets(transactional_id, group, producer_id, producer_epoch, offsets))
            except CommandRejected as exc:
                return ErrorCode[exc.error], []
        return ErrorCode.NONE, results

    def verify_partition(self, transactional_id: str | None, producer_id: int, producer_epoch: int,
                         topic: str, partition: int) -> ErrorCode | None:
        """KIP-890 part 1: may this transactional batch go to ``topic``-``partition``?  None: yes."""
        if transactional_id is None:
            return ErrorCode.INVALID_TXN_STATE
        current = self.state(transactional_id)
        if current is None or current.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if producer_epoch < current.producer_epoch:
            return ErrorCode.INVALID_PRODUCER_EPOCH
        if current.state != core.ONGOING or [topic, partition] not in current.partitions:
            return ErrorCode.INVALID_TXN_STATE
        return None

    async def wait_partition_added(self, transactional_id: str, topic: str, partition: int,
                                   timeout: float = 1.0) -> None:
        """(Cluster mode, on a partition leader that is not the coordinator.) Give this node's
        replicated metadata up to ``timeout`` s to show ``topic``-``partition`` in the id's
        ongoing transaction: the coordinator added it before answering the producer, but this
        node may not have applied that yet.  Returns early once it has; never raises."""
        if self._role.coordinator_error() is None:
            return
        with trio.move_on_after(timeout):
            while True:
                current = self.state(transactional_id)
                if current is not None and current.state == core.ONGOING and [topic, partition] in current.partitions:
                    return
                await trio.sleep(0.01)

    # -- completion and the timer ------------------------------------------------

    def _start_completion(self, transactional_id: str) -> None:
        if transactional_id in self._completing or self._nursery is None:
            return
        if self._fenced.get(transactional_id) == self._role.coordinator_epoch:
            return  # a newer coordinator ends it (see _complete)
        self._completing[transactional_id] = trio.Event()
        self._nursery.start_soon(self._complete, transactional_id)

    async def _wait_completed(self, transactional_id: str) -> bool:
        """Wait (up to :data:`END_TXN_WAIT_SECONDS`) for a completion under way; whether the
        transaction is no longer in a Prepare state."""
        await self._settle(transactional_id)
        current = self.state(transactional_id)
        return current is None or current.state not in core.PREPARING

    async def _complete(self, transactional_id: str) -> None:
        """Write the markers of a decided transaction, then persist its Complete state."""
        try:
            while True:
                current = self.state(transactional_id)
                if current is None or current.state not in core.PREPARING:
                    self._fenced.pop(transactional_id, None)
                    return
                if self._role.coordinator_error() is not None:
                    return  # the next coordinator finishes it
                commit = current.state == core.PREPARE_COMMIT
                coordinator_epoch = self._role.coordinator_epoch
                failed = await self._markers.write_markers(
                    current.producer_id, current.producer_epoch, commit, coordinator_epoch,
                    [(str(t), int(p)) for t, p in current.partitions])
                fenced = sorted(p for p, error in failed.items() if error == ErrorCode.TRANSACTION_COORDINATOR_FENCED)
                if fenced:
                    # as Kafka's coordinator does: a partition has seen a newer coordinator's
                    # marker for this producer, so this one is deposed and stops; the
                    # transaction's state is not touched (the newer coordinator ends it)
                    log.warning("transaction %r: coordinator epoch %d fenced by %s; no longer completing it",
                                transactional_id, coordinator_epoch, fenced)
                    self._fenced[transactional_id] = coordinator_epoch
                    return
                if failed:
                    log.warning("transaction %r: markers not written yet to %s; retrying", transactional_id,
                                sorted(failed.items()))
                    await trio.sleep(MARKER_RETRY_SECONDS)
                    continue
                async with self._lock(transactional_id):
                    if self.state(transactional_id) is not current:
                        continue
                    try:
                        await self._metadata.submit(core.complete(current, self._now_ms()))
                    except CommandRejected as exc:
                        log.info("transaction %r completion not written: %s", transactional_id, exc.message)
                        continue
                self._fenced.pop(transactional_id, None)
                log.debug("transaction %r of producer %d/%d %s", transactional_id, current.producer_id,
                          current.producer_epoch, "committed" if commit else "aborted")
                return
        finally:
            self._completing.pop(transactional_id).set()

    def check_now(self) -> None:
        """Run the timer's checks now (tests, and a coordinator that just took over)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Complete decided transactions, abort timed-out ones and expire idle ids, forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    if self._role.coordinator_error() is None:
                        await self._tick()
                    with trio.move_on_after(self.settings.check_interval_ms / 1000):
                        await self._wake.wait()
                    self._wake = trio.Event()
            finally:
                self._nursery = None

    async def _tick(self) -> None:
        now = self._now_ms()
        for transactional_id, current in list(self._metadata.image.transactions.items()):
            if current.state in core.PREPARING:
                self._start_completion(transactional_id)
                continue
            if transactional_id in self._completing:
                continue
            outcome = core.expire(current, now, self.settings.id_expiration_ms)
            if outcome is None:
                continue
            async with self._lock(transactional_id):
                if self.state(transactional_id) is not current:
                    continue
                if outcome.put is not None and outcome.put.state == core.PREPARE_ABORT:
                    log.info("transaction %r of producer %d timed out after %d ms: aborting", transactional_id,
                             current.producer_id, current.timeout_ms)
                await self._persist(outcome.put)

    # -- what operators see --------------------------------------------------------

    def transactions(self) -> list[TransactionImage]:
        return list(self._metadata.image.transactions.values())
