"""The transaction coordinator's state machine, sans I/O: events in, actions out.

Each function takes a transactional id's current state (a
:class:`~chronik.metadata.image.TransactionImage`, None for an unknown id), the
request and the time, and returns an :class:`Outcome`: the error to answer,
the state to persist (a :class:`~chronik.metadata.commands.PutTransaction`
whose ``expected`` is the state it was computed from), and whether markers
must then be written.  The driver (:mod:`chronik.txn.coordinator`) persists,
writes the markers, and answers; nothing here reads a clock or a socket.

Kafka's states and transitions (``TransactionState``)::

    Empty ──AddPartitions/AddOffsets──▶ Ongoing ──EndTxn──▶ PrepareCommit ──markers──▶ CompleteCommit
      ▲                                    │     └──EndTxn──▶ PrepareAbort  ──markers──▶ CompleteAbort
      │                                    └─ timeout / fencing (epoch + 1) ─▶ PrepareAbort
      └──InitProducerId (epoch + 1) ── CompleteCommit | CompleteAbort | Empty

Invariants:

* the producer epoch only grows for a producer id; when it would pass
  :data:`MAX_EPOCH` the id is replaced by a new one at epoch 0;
* ``last_producer_epoch`` is set only by a bump the producer asked for itself
  (KIP-360, naming its id and epoch) and cleared by the next transition, so
  only that producer's retry gets the bumped epoch; a zombie never does;
* a request carrying an older epoch than the stored one is fenced
  (PRODUCER_FENCED; handlers answer INVALID_PRODUCER_EPOCH to versions that
  predate KIP-588), a different producer id is INVALID_PRODUCER_ID_MAPPING;
* while PrepareCommit/PrepareAbort, nothing but the completion moves the
  state: other requests get CONCURRENT_TRANSACTIONS (retriable);
* a transaction ends only through a Prepare state, and markers are written
  only after the Prepare state is durable; the Complete state only after
  every marker is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metadata.commands import PutTransaction
from ..metadata.image import TransactionImage
from ..protocol import ErrorCode

EMPTY = "Empty"
ONGOING = "Ongoing"
PREPARE_COMMIT = "PrepareCommit"
PREPARE_ABORT = "PrepareAbort"
COMPLETE_COMMIT = "CompleteCommit"
COMPLETE_ABORT = "CompleteAbort"
DEAD = "Dead"
PREPARING = (PREPARE_COMMIT, PREPARE_ABORT)
COMPLETE = (COMPLETE_COMMIT, COMPLETE_ABORT)

MAX_EPOCH = 32767 - 1
"""The highest epoch handed out (Kafka keeps Short.MaxValue back for fencing bumps)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the driver does next: persist ``put`` (if any), then write markers
    (``markers``: the persisted state is a Prepare state), then answer
    ``error`` with ``producer_id``/``producer_epoch``.  ``needs_producer_id``:
    call again with a fresh producer id."""

    error: ErrorCode = ErrorCode.NONE
    put: PutTransaction | None = None
    markers: bool = False
    producer_id: int = -1
    producer_epoch: int = -1
    needs_producer_id: bool = False
    partition_errors: dict[tuple[str, int], ErrorCode] = field(default_factory=dict)


def _expected(current: TransactionImage | None) -> list[object] | None:
    """The state a command is computed from, as the image checks it (see :class:`PutTransaction`)."""
    return None if current is None else [current.producer_id, current.producer_epoch, current.state,
                                         current.version]


def _put(current: TransactionImage | None, transactional_id: str, *, producer_id: int, producer_epoch: int,
         state: str, partitions: list[list[object]], groups: list[str], timeout_ms: int, started_ms: int,
         now_ms: int, last_producer_epoch: int = -1) -> PutTransaction:
    return PutTransaction(transactional_id, producer_id, producer_epoch, state, partitions, groups, timeout_ms,
                          started_ms, now_ms, _expected(current), last_producer_epoch,
                          0 if current is None else current.version + 1)


def _with(current: TransactionImage, now_ms: int, **changes: object) -> PutTransaction:
    fields = dict(producer_id=current.producer_id, producer_epoch=current.producer_epoch, state=current.state,
                  partitions=current.partitions, groups=current.groups, timeout_ms=current.timeout_ms,
                  started_ms=current.started_ms, last_producer_epoch=-1)
    fields.update(changes)
    return _put(current, current.transactional_id, now_ms=now_ms, **fields)  # type: ignore[arg-type]


def check_producer(current: TransactionImage | None, producer_id: int, producer_epoch: int) -> ErrorCode | None:
    """The error for a request of ``producer_id``/``producer_epoch`` against the stored state, or None."""
    if current is None or current.producer_id != producer_id:
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING
    if producer_epoch != current.producer_epoch:
        return ErrorCode.PRODUCER_FENCED
    return None


def init_producer_id(current: TransactionImage | None, transactional_id: str, timeout_ms: int, max_timeout_ms: int,
                     producer_id: int, producer_epoch: int, now_ms: int,
                     new_producer_id: int | None = None) -> Outcome:
    """InitProducerId with a transactional id (``producer_id``/``producer_epoch``: -1, or the
    caller's current ones (KIP-360, v3+))."""
    if timeout_ms <= 0 or timeout_ms > max_timeout_ms:
        return Outcome(ErrorCode.INVALID_TRANSACTION_TIMEOUT)
    if current is None:
        if new_producer_id is None:
            return Outcome(needs_producer_id=True)
        put = _put(None, transactional_id, producer_id=new_producer_id, producer_epoch=0, state=EMPTY,
                   partitions=[], groups=[], timeout_ms=timeout_ms, started_ms=-1, now_ms=now_ms)
        return Outcome(put=put, producer_id=new_producer_id, producer_epoch=0)
    if current.state in PREPARING:
        return Outcome(ErrorCode.CONCURRENT_TRANSACTIONS)
    if producer_id >= 0:
        # KIP-360: a producer re-initialising says who it was; anyone else is a zombie.  A retry
        # of a re-initialisation that already bumped the epoch gets the same answer again.
        if producer_id == current.producer_id and producer_epoch == current.last_producer_epoch \
                and current.last_producer_epoch >= 0 and current.state not in (ONGOING, *PREPARING):
            return Outcome(producer_id=current.producer_id, producer_epoch=current.producer_epoch)
        if producer_id != current.producer_id or producer_epoch != current.producer_epoch:
            return Outcome(ErrorCode.PRODUCER_FENCED)
    if current.state == ONGOING:
        # fence the producer of the open transaction: abort it under a bumped epoch first
        # (the producer itself re-initialising may then take the bumped epoch: a retry, below)
        put = _with(current, now_ms, producer_epoch=min(current.producer_epoch + 1, MAX_EPOCH + 1),
                    state=PREPARE_ABORT, last_producer_epoch=current.producer_epoch if producer_id >= 0 else -1)
        return Outcome(ErrorCode.CONCURRENT_TRANSACTIONS, put=put, markers=True)
    if current.producer_epoch >= MAX_EPOCH:
        if new_producer_id is None:
            return Outcome(needs_producer_id=True)
        pid, epoch = new_producer_id, 0
    else:
        pid, epoch = current.producer_id, current.producer_epoch + 1
    put = _with(current, now_ms, producer_id=pid, producer_epoch=epoch, state=EMPTY, partitions=[], groups=[],
                timeout_ms=timeout_ms, started_ms=-1,
                last_producer_epoch=current.producer_epoch if producer_id >= 0 and pid == producer_id else -1)
    return Outcome(put=put, producer_id=pid, producer_epoch=epoch)


def _begin_or_extend(current: TransactionImage, now_ms: int, partitions: list[list[object]],
                     groups: list[str]) -> PutTransaction | None:
    if current.state == ONGOING:
        new_partitions = current.partitions + [p for p in partitions if p not in current.partitions]
        new_groups = current.groups + [g for g in groups if g not in current.groups]
        if new_partitions == current.partitions and new_groups == current.groups:
            return None  # nothing new: no write
        return _with(current, now_ms, partitions=new_partitions, groups=new_groups)
    unique_partitions: list[list[object]] = []
    for p in partitions:
        if p not in unique_partitions:
            unique_partitions.append(p)
    return _with(current, now_ms, state=ONGOING, partitions=unique_partitions, groups=list(dict.fromkeys(groups)),
                 started_ms=now_ms)


def add_partitions(current: TransactionImage | None, producer_id: int, producer_epoch: int,
                   partitions: list[tuple[str, int]], now_ms: int, *, verify_only: bool = False) -> Outcome:
    """AddPartitionsToTxn for one transaction; ``partitions`` already checked to exist."""
    error = check_producer(current, producer_id, producer_epoch)
    if error is None and current is not None and current.state in PREPARING:
        error = ErrorCode.CONCURRENT_TRANSACTIONS
    if error is not None:
        return Outcome(error, partition_errors={p: error for p in partitions})
    assert current is not None
    if verify_only:
        inside = current.state == ONGOING
        return Outcome(partition_errors={
            p: ErrorCode.NONE if inside and [p[0], p[1]] in current.partitions else ErrorCode.INVALID_TXN_STATE
            for p in partitions
        })
    put = _begin_or_extend(current, now_ms, [[t, p] for t, p in partitions], [])
    return Outcome(put=put, partition_errors={p: ErrorCode.NONE for p in partitions})


def add_offsets(current: TransactionImage | None, producer_id: int, producer_epoch: int, group: str,
                now_ms: int) -> Outcome:
    """AddOffsetsToTxn: the transaction will commit ``group``'s offsets."""
    error = check_producer(current, producer_id, producer_epoch)
    if error is None and current is not None and current.state in PREPARING:
        error = ErrorCode.CONCURRENT_TRANSACTIONS
    if error is not None:
        return Outcome(error)
    assert current is not None
    return Outcome(put=_begin_or_extend(current, now_ms, [], [group]))


def end_txn(current: TransactionImage | None, producer_id: int, producer_epoch: int, commit: bool,
            now_ms: int) -> Outcome:
    """EndTxn: decide.  A retry of a decision already taken is answered as it was."""
    error = check_producer(current, producer_id, producer_epoch)
    if error is not None:
        return Outcome(error)
    assert current is not None
    wanted_prepare, wanted_complete = (PREPARE_COMMIT, COMPLETE_COMMIT) if commit else (PREPARE_ABORT, COMPLETE_ABORT)
    if current.state == ONGOING:
        return Outcome(put=_with(current, now_ms, state=wanted_prepare), markers=True)
    if current.state == wanted_complete:
        return Outcome()
    if current.state == wanted_prepare:
        return Outcome(ErrorCode.CONCURRENT_TRANSACTIONS)
    return Outcome(ErrorCode.INVALID_TXN_STATE)


def complete(current: TransactionImage, now_ms: int) -> PutTransaction:
    """Every marker of a Prepare state is durable: the transaction is complete."""
    assert current.state in PREPARING, current.state
    state = COMPLETE_COMMIT if current.state == PREPARE_COMMIT else COMPLETE_ABORT
    return _with(current, now_ms, state=state)


def expire(current: TransactionImage, now_ms: int, expiration_ms: int) -> Outcome | None:
    """The timer: abort an Ongoing transaction past its timeout (bumping the epoch, so its
    producer is fenced), or forget an id idle for ``expiration_ms``.  None: nothing to do."""
    if current.state == ONGOING and now_ms > current.started_ms + current.timeout_ms:
        put = _with(current, now_ms, producer_epoch=min(current.producer_epoch + 1, MAX_EPOCH + 1),
                    state=PREPARE_ABORT, last_producer_epoch=-1)
        return Outcome(put=put, markers=True)
    if current.state in (EMPTY, *COMPLETE) and now_ms > current.updated_ms + expiration_ms:
        return Outcome(put=_with(current, now_ms, state=DEAD))
    return None
