"""Partition data replication in cluster mode: followers pull from leaders; the leader keeps the ISR.

:class:`ReplicaManager` runs on every node of a cluster, in the broker's nursery:

* **Follower side.**  For every partition this node is a replica of but does
  not lead, one fetcher task asks the leader, over the replication port
  (:class:`~chronik.cluster.messages.ReplicaFetchRequest`, a connection per
  partition), for batches from this node's own log end, appends them
  unchanged at the leader's offsets (:meth:`PartitionLog.append_replicated`),
  waits until they are durable, and asks again from the new end.  So the
  follower's position drives what is sent, a follower that was down or new
  catches up from wherever its log ends, and nothing is ever dropped: a slow
  follower just asks less often.  The fetch answer carries the leader's high
  watermark, which the follower adopts (capped by its own durable end), and
  its log start, which the follower's log start follows (up to its high
  watermark; DeleteRecords reaches every replica that way).

* **Leader side.**  A fetch from offset *n* tells the leader the follower has
  everything below *n* durable (:meth:`PartitionLog.record_follower_end`);
  the leader's high watermark is the minimum of its own durable end and the
  ends of its in-sync followers, so acks=all (which waits for the high
  watermark) means every ISR member has the record durable.  A fetch with
  nothing to send is parked until the leader's durable end moves or
  ``max_wait`` passes (long poll), so replication latency is one round trip
  after the leader's fsync.  Reads go up to the leader's durable end: a
  follower never holds a batch the leader could lose in a crash.

* **ISR.**  A follower is *caught up* when a fetch of its reaches the
  leader's durable end (or where that end was at its previous fetch).  One whose last caught-up moment is older than
  ``replica.lag.time.max.ms`` is removed from the ISR, and one not in the
  ISR whose fetch reaches the high watermark is added back -- both through a
  :class:`~chronik.metadata.commands.ChangeIsr` metadata command, submitted
  by the leader (through the controller), applied by every node.  At most
  one change per partition is in flight.

* **Leader changes.**  The controller moves leadership when it fences a
  broker (:mod:`chronik.cluster.liveness`); every node follows the image: a
  new leader starts leading at once (stamping its leader epoch into the
  batches it appends; its high watermark moves on as its ISR followers
  fetch), the other replicas re-point their fetchers, and a partition with
  no leader (-1) has no fetcher.

* **Divergence.**  Each fetch carries the leader epoch of the follower's
  last batch.  If the leader's log does not have that epoch ending at or
  after the follower's position (OffsetForLeaderEpoch, via
  :meth:`PartitionLog.epoch_end`), it answers with its largest epoch not
  above it and that epoch's end; the follower truncates to the lower of that
  end and its own end of the same epoch (:meth:`PartitionLog.truncate_to`)
  and asks again.  So a returning old leader, or a follower that held
  batches the new leader never got, drops exactly the suffix the new leader
  lacks -- never anything below the high watermark, which every ISR member
  (so every eligible new leader) has.

* **Behind the leader's log start.**  A follower whose log ends below the
  leader's log start (retention or DeleteRecords removed the records it
  lacks while it was away) is answered OFFSET_OUT_OF_RANGE with that log
  start; it empties its log and restarts it there
  (:meth:`PartitionLog.restart_at`).  If the leader's log start falls inside
  a batch, the first batch it sends starts below the follower's (empty)
  log end: the follower restarts once more at that batch's base and stores
  it whole, keeping the log start inside it, as the leader has it.

* **Lag in time.**  For each follower of a partition it leads, the leader
  knows when it was last caught up (above); :meth:`follower_lag_seconds`
  reports the time since, and the metric
  ``chronik_replication_follower_max_lag_seconds`` its maximum.

* **Stalled connections.**  A fetch not answered within ``socket_timeout``
  seconds (``replica.socket.timeout.ms``; a leader parks a fetch for at most
  ``FETCH_MAX_WAIT_MS``) means the connection stalled -- packets dropped
  silently, the leader hung -- so the fetcher closes it and redials, each dial
  abandoned after :data:`~chronik.cluster.network.CONNECT_TIMEOUT`.  A
  follower cut off from its leader so resumes within about a second of the
  network's return, instead of when TCP's backed-off retransmission fires.

Partitions with one replica, and single nodes, are untouched: their high
watermark is their durable end, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import trio

from ..log.manager import LogManager
from ..log.partition import DataWatch, OffsetOutOfRange, PartitionLog
from ..metadata.commands import ChangeIsr
from ..metadata.image import CommandRejected, MetadataImage, PartitionImage
from ..metadata.view import MetadataView, Submit
from ..metrics import BrokerMetrics
from ..protocol import ErrorCode, ProtocolError, parse_batch_header
from .messages import ReplicaFetchRequest, ReplicaFetchResponse
from .network import TCP, Network, dial
from .transport import CodecError, FrameReader, RaftTransport, encode_frame

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 500
"""How long a leader parks a follower's fetch that has nothing to send (Kafka's
``replica.fetch.wait.max.ms``): ``replica.socket.timeout.ms`` must exceed it."""
DEFAULT_SOCKET_TIMEOUT = 3.0
"""Seconds a fetch may go unanswered before its connection is redialled."""
FETCH_MAX_BYTES = 1 << 20
"""About how many bytes one fetch answer carries (the first batch always goes whole)."""
RETRY_SECONDS = 0.2
"""Pause before a fetcher asks again after an error answer or a lost connection."""
RECONCILE_SECONDS = 1.0
"""How often the roles and the ISR are re-checked even without a metadata change."""

STALE_RECHECK_SECONDS = 0.05
"""How often they are re-checked while this node's metadata is stale (``metadata_lag``):
a node that catches up takes its roles up at once."""


@dataclass(slots=True)
class _Led:
    """Leader-side state of one replicated partition this node leads."""

    log: PartitionLog
    epoch: int
    caught_up_at: dict[int, float] = field(default_factory=dict)  # follower -> last time it was caught up
    last_fetch: dict[int, tuple[float, int]] = field(default_factory=dict)  # follower -> (time, leader's durable end then)
    changing_isr: bool = False
    adding: frozenset[int] = frozenset()  # followers an ISR change in flight adds: the HW waits for them already


class ReplicaManager:
    """Data replication for one node (see the module docstring).  Run with :meth:`run`.

    It is given what it uses: this node's id, the metadata (``metadata.image``),
    the partition logs, ``metadata_lag`` (why this node's metadata must not be
    acted on now, None when current), ``submit`` for its ISR changes, the
    metrics it fills, and the Raft transport whose replication port carries
    followers' fetches (None: no fetches are answered).
    """

    def __init__(self, node_id: int, metadata: MetadataView, logs: LogManager, *,
                 metadata_lag: Callable[[], str | None], submit: Submit, metrics: BrokerMetrics,
                 transport: RaftTransport | None, peers: dict[int, str], lag_max_seconds: float,
                 socket_timeout: float = DEFAULT_SOCKET_TIMEOUT, network: Network = TCP) -> None:
        if socket_timeout * 1000 <= FETCH_MAX_WAIT_MS:
            raise ValueError(f"the replica socket timeout ({socket_timeout:g} s) must exceed the "
                             f"{FETCH_MAX_WAIT_MS} ms a leader parks a fetch")
        self.metadata = metadata
        self.logs = logs
        self.metadata_lag = metadata_lag
        self.submit = submit
        self.transport = transport
        self.network = network
        self.socket_timeout = socket_timeout
        self.node_id = node_id
        self.peers = peers  # node id -> replication host:port
        self.lag_max_seconds = lag_max_seconds
        self._fetchers: dict[tuple[str, int], tuple[PartitionLog, int, int, trio.CancelScope]] = {}  # log, leader, epoch
        self._led: dict[tuple[str, int], _Led] = {}
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._lag: dict[tuple[str, int], int] = {}  # followed partition -> leader's end - own end, at the last fetch
        self.metrics = metrics
        self.metrics.replication_max_lag.set_function(lambda: max(self._lag.values(), default=0))
        self.metrics.replication_lag.set_function(lambda: sum(self._lag.values()))
        self.metrics.follower_max_lag_seconds.set_function(lambda: max(self.follower_lag_seconds().values(), default=0.0))

    # -- lifecycle -------------------------------------------------------------

    def configure(self, partition_log: PartitionLog) -> None:
        """Give a newly opened log its high-watermark rule before any request uses it
        (the log manager's ``on_open``): otherwise a write could count as
        replicated on the leader's fsync alone until the next :meth:`reconcile`."""
        partition = self._partition(self.metadata.image, partition_log.topic, partition_log.partition)
        if partition is None or len(partition.replicas) < 2:
            partition_log.refresh_high_watermark()  # unreplicated: its durable end, not the checkpoint
            return
        if partition.leader == self.node_id and self.metadata_lag() is None:
            partition_log.lead(frozenset(partition.isr) - {self.node_id}, partition.leader_epoch)
        else:
            # Also while this node's metadata is stale (a restart: the image is an
            # old snapshot or log), even if it names this node leader: leading would
            # take the image's ISR, perhaps just this node, and raise the high
            # watermark (from the checkpoint) to the durable end over a suffix no
            # other replica has -- which a new leader overwrites.  Following keeps
            # the checkpointed high watermark until reconcile() takes the roles up.
            partition_log.follow()
        self.request_reconcile()

    def request_reconcile(self) -> None:
        """The metadata changed: re-check roles soon (never blocks)."""
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer followers' fetches, run this node's fetchers and keep the ISR, until cancelled.

        Cancellation: every fetcher stops; appends already queued become durable anyway.
        """
        transport = self.transport
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if transport is not None:
                    transport.on_replica_fetch = self.answer_fetch
                self.logs.on_open = self.configure
                for partition_log in self.logs:
                    self.configure(partition_log)
                task_status.started()
                while True:
                    stale = self.metadata_lag() is not None
                    with trio.move_on_after(STALE_RECHECK_SECONDS if stale else RECONCILE_SECONDS):
                        await self._changed.wait()
                    self._changed = trio.Event()
                    await self.logs.in_step_with(self.metadata.image)
                    self.reconcile()
        finally:
            self.logs.on_open = None
            if transport is not None:
                transport.on_replica_fetch = None

    def reconcile(self) -> None:
        """Bring fetchers, leader state and ISR checks in step with the image and the open logs.

        While this node's metadata is stale it neither leads nor follows: no
        fetch from a leader the image may wrongly name (whose answer could make
        it truncate), no answers to followers, no ISR changes.
        """
        assert self._nursery is not None
        image = self.metadata.image
        followed: dict[tuple[str, int], tuple[PartitionLog, int, int]] = {}  # log, leader (-1: none), epoch
        led: dict[tuple[str, int], tuple[PartitionLog, PartitionImage]] = {}
        stale = self.metadata_lag()
        if stale is not None and (self._fetchers or self._led):
            log.warning("not leading or following any partition: %s", stale)
        for name, topic in image.topics.items() if stale is None else ():
            for index, partition in enumerate(topic.partitions):
                if self.node_id not in partition.replicas or len(partition.replicas) < 2:
                    continue
                partition_log = self.logs.get(name, index)
                if partition_log is None or partition_log.closed:
                    continue
                if partition.leader == self.node_id:
                    led[(name, index)] = (partition_log, partition)
                else:
                    followed[(name, index)] = (partition_log, partition.leader, partition.leader_epoch)
        for key, (partition_log, leader, epoch, scope) in list(self._fetchers.items()):
            if followed.get(key) != (partition_log, leader, epoch):
                scope.cancel()
                del self._fetchers[key]
                self._lag.pop(key, None)
        for key, (partition_log, leader, epoch) in followed.items():
            if key not in self._fetchers:
                scope = trio.CancelScope()
                self._fetchers[key] = (partition_log, leader, epoch, scope)
                partition_log.follow()
                if leader >= 0:
                    log.info("%s-%d: following leader %d (epoch %d)", *key, leader, epoch)
                    self._nursery.start_soon(self._fetch_loop, scope, partition_log, leader)
                else:
                    log.warning("%s-%d: offline, no replica may lead it (epoch %d)", *key, epoch)
        now = trio.current_time()
        for key in [key for key, state in self._led.items() if key not in led or led[key][0] is not state.log]:
            del self._led[key]
        for key, (partition_log, partition) in led.items():
            state = self._led.get(key)
            if state is None or state.epoch != partition.leader_epoch:
                state = self._led[key] = _Led(partition_log, partition.leader_epoch)
                log.info("leading replicated partition %s-%d in epoch %d (replicas %s, ISR %s)", *key,
                         partition.leader_epoch, partition.replicas, partition.isr)
            for follower in partition.replicas:
                state.caught_up_at.setdefault(follower, now)
            partition_log.lead((frozenset(partition.isr) | state.adding) - {self.node_id}, partition.leader_epoch)
            self._check_isr(key, state, partition, now)

    def follower_lag_seconds(self, now: float | None = None) -> dict[tuple[str, int, int], float]:
        """(Leader) per follower of each replicated partition this node leads, the seconds
        since it was last caught up (Kafka's lastCaughtUpTime: its fetch reached the
        leader's durable end, or where that end was at its previous fetch).  A follower
        that has not fetched since this node became leader counts from then."""
        if now is None:
            try:
                now = trio.current_time()
            except RuntimeError:  # outside the event loop (a metrics scrape from elsewhere)
                return {}
        return {
            (*key, follower): max(0.0, now - caught_up)
            for key, state in self._led.items()
            for follower, caught_up in state.caught_up_at.items()
            if follower != self.node_id
        }

    # -- leader side -------------------------------------------------------------

    async def answer_fetch(self, request: ReplicaFetchRequest) -> ReplicaFetchResponse:
        """A follower's fetch: record its position, then batches from it (parked while there are none).

        Cancellation: only the answer is abandoned.
        """
        key = (request.topic, request.partition)
        state = self._led.get(key)
        partition = self._partition(self.metadata.image, *key)
        partition_log = state.log if state is not None else None
        if (partition_log is None or partition is None or partition.leader != self.node_id
                or request.src not in partition.replicas or partition_log.topic_id != request.topic_id
                or self.metadata_lag() is not None):
            await trio.lowlevel.checkpoint()
            return self._answer(request, ErrorCode.NOT_LEADER_OR_FOLLOWER)
        assert state is not None and partition_log is not None
        offset = request.fetch_offset
        if request.last_fetched_epoch >= 0:
            epoch, end = partition_log.epoch_end(request.last_fetched_epoch)
            if epoch != request.last_fetched_epoch or end < offset:
                await trio.lowlevel.checkpoint()
                log.info("%s-%d: follower %d diverges after epoch %d (at %d): leader's epoch %d ends at %d", *key,
                         request.src, request.last_fetched_epoch, offset, epoch, end)
                return self._answer(request, ErrorCode.NONE, partition_log, diverging=(epoch, end))
        if not partition_log.log_start_offset <= offset <= partition_log.durable_end:
            await trio.lowlevel.checkpoint()
            log.warning("%s-%d: follower %d fetches offset %d, outside [%d, %d]", *key, request.src, offset,
                        partition_log.log_start_offset, partition_log.durable_end)
            return self._answer(request, ErrorCode.OFFSET_OUT_OF_RANGE, partition_log)
        now = trio.current_time()
        previous = state.last_fetch.get(request.src)
        if offset >= partition_log.durable_end:
            state.caught_up_at[request.src] = now
        elif previous is not None and offset >= previous[1]:
            # Under steady load a follower is never exactly at the end; reaching
            # where the leader was at its previous fetch counts (as in Kafka).
            state.caught_up_at[request.src] = max(state.caught_up_at.get(request.src, previous[0]), previous[0])
        state.last_fetch[request.src] = (now, partition_log.durable_end)
        partition_log.record_follower_end(request.src, offset)
        self._check_isr(key, state, partition, now)
        if offset >= partition_log.durable_end:
            with trio.move_on_after(request.max_wait_ms / 1000):
                while offset >= partition_log.durable_end and not partition_log.closed:
                    with DataWatch([partition_log]) as moved:
                        await moved.wait()
        else:
            await trio.lowlevel.checkpoint()
        # Leadership may have moved while the fetch was parked: this node may now
        # follow, its log may have been truncated and refilled from the new leader.
        # Answering from it would hand the follower batches that do not continue
        # its log, with a high watermark above its divergent suffix.
        now_partition = self._partition(self.metadata.image, *key)
        if partition_log.closed or now_partition is None or now_partition.leader != self.node_id \
                or now_partition.leader_epoch != partition.leader_epoch:
            return self._answer(request, ErrorCode.NOT_LEADER_OR_FOLLOWER)
        try:
            batches = partition_log.read(offset, request.max_bytes, end=partition_log.durable_end)
        except OffsetOutOfRange:  # retention moved the log start meanwhile
            return self._answer(request, ErrorCode.OFFSET_OUT_OF_RANGE, partition_log)
        records = b"".join(batches)
        self.metrics.replication_bytes_out.inc(len(records))
        return self._answer(request, ErrorCode.NONE, partition_log, records)

    def _answer(self, request: ReplicaFetchRequest, error: ErrorCode, partition_log: PartitionLog | None = None,
                records: bytes = b"", diverging: tuple[int, int] = (-1, -1)) -> ReplicaFetchResponse:
        hw = partition_log.high_watermark if partition_log is not None else -1
        start = partition_log.log_start_offset if partition_log is not None else -1
        end = partition_log.durable_end if partition_log is not None else -1
        return ReplicaFetchResponse(0, self.node_id, request.src, int(error), hw, start, records, *diverging, end)

    def _check_isr(self, key: tuple[str, int], state: _Led, partition: PartitionImage, now: float) -> None:
        """Propose an ISR change if a follower fell behind for too long or caught up again."""
        if state.changing_isr:
            return
        partition_log = state.log
        isr = set(partition.isr)
        brokers = self.metadata.image.brokers
        for follower in partition.replicas:
            if follower == self.node_id or (follower not in isr and (follower not in brokers or brokers[follower].fenced)):
                continue
            if follower in isr and now - state.caught_up_at.get(follower, now) > self.lag_max_seconds:
                isr.discard(follower)
            elif follower not in isr and (end := partition_log.follower_end(follower)) is not None \
                    and end >= partition_log.high_watermark \
                    and now - state.caught_up_at.get(follower, -1e9) <= self.lag_max_seconds:
                isr.add(follower)  # (an end of 0 -- an empty partition -- counts: not "or -1")
        if isr != set(partition.isr):
            state.changing_isr = True
            # Until the change commits, the high watermark counts a follower being
            # added (and still one being removed): Kafka's "maximal ISR".  Else it
            # could move past what the newcomer has before the newcomer, now in the
            # ISR and so eligible to lead, has it -- and a new leader would lose
            # acknowledged acks=all records.
            state.adding = frozenset(isr - set(partition.isr))
            if state.adding:
                partition_log.lead((frozenset(partition.isr) | state.adding) - {self.node_id}, partition.leader_epoch)
            assert self._nursery is not None
            self._nursery.start_soon(self._change_isr, key, state, partition, sorted(isr))

    async def _change_isr(self, key: tuple[str, int], state: _Led, partition: PartitionImage, isr: list[int]) -> None:
        topic = self.metadata.image.topics.get(key[0])
        try:
            if topic is None:
                return
            old = list(partition.isr)
            await self.submit(ChangeIsr(name=key[0], topic_id=topic.topic_id.hex, partition=key[1],
                                               leader=self.node_id, leader_epoch=partition.leader_epoch, isr=isr))
            log.info("%s-%d: ISR %s -> %s", *key, old, isr)
            if set(old) - set(isr):
                self.metrics.isr_shrinks.inc()
            if set(isr) - set(old):
                self.metrics.isr_expands.inc()
        except CommandRejected as exc:
            log.warning("%s-%d: ISR change to %s refused (%s: %s)", *key, isr, exc.error, exc.message)
            await trio.sleep(RETRY_SECONDS)
        finally:
            state.changing_isr = False
            state.adding = frozenset()
            self.request_reconcile()

    @staticmethod
    def _partition(image: MetadataImage, name: str, index: int) -> PartitionImage | None:
        topic = image.topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    # -- follower side -----------------------------------------------------------

    async def _fetch_loop(self, scope: trio.CancelScope, partition_log: PartitionLog, leader: int) -> None:
        """Follow one partition until cancelled: fetch from the log end, append, wait durable, repeat.

        Cancellation: stops between (or in) fetches; appended batches become durable anyway.
        """
        key = (partition_log.topic, partition_log.partition)
        with scope:
            address = self.peers[leader]
            announced = False
            while not partition_log.closed:
                try:
                    stream = await dial(self.network, address)
                except OSError as exc:
                    log.debug("cannot reach leader %d of %s-%d: %s", leader, partition_log.topic, partition_log.partition, exc)
                    if not isinstance(exc, TimeoutError):  # a dial that timed out has waited long enough
                        await trio.sleep(RETRY_SECONDS)
                    continue
                async with stream:
                    try:
                        while not partition_log.closed:
                            with trio.move_on_after(self.socket_timeout) as fetching:
                                answer = await self._fetch_once(stream, partition_log, leader)
                            if fetching.cancelled_caught:
                                raise TimeoutError(f"no answer within {self.socket_timeout:g} s (replica.socket.timeout.ms)")
                            if answer.error == ErrorCode.OFFSET_OUT_OF_RANGE \
                                    and answer.log_start_offset > partition_log.log_end_offset:
                                await self._restart_behind_leader(partition_log, answer, leader)
                                continue
                            if answer.error != ErrorCode.NONE:
                                log.debug("%s-%d: leader %d answered error %d", partition_log.topic,
                                          partition_log.partition, leader, answer.error)
                                await trio.sleep(RETRY_SECONDS)
                                continue
                            if answer.diverging_epoch >= 0 or answer.diverging_end >= 0:
                                await self._truncate_divergent(partition_log, answer, leader)
                                continue
                            await self._store(partition_log, answer)
                            self.metrics.replication_bytes_in.inc(len(answer.records))
                            if answer.log_end_offset >= 0 and self._fetchers.get(key, (None,))[0] is partition_log:
                                self._lag[key] = max(0, answer.log_end_offset - partition_log.log_end_offset)
                            if not announced and not answer.records and partition_log.log_end_offset >= answer.high_watermark:
                                announced = True
                                log.info("follower caught up on %s-%d at offset %d (leader %d)", partition_log.topic,
                                         partition_log.partition, partition_log.log_end_offset, leader)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, CodecError) as exc:
                        log.info("replication connection to leader %d for %s-%d lost (%s); reconnecting", leader,
                                 partition_log.topic, partition_log.partition, exc)
                await trio.sleep(RETRY_SECONDS)

    @staticmethod
    async def _restart_behind_leader(partition_log: PartitionLog, answer: ReplicaFetchResponse, leader: int) -> None:
        """This log ends below the leader's log start (retention or DeleteRecords
        removed what it lacks): start over, empty, at the leader's log start."""
        log.warning("%s-%d: log ends at %d, below leader %d's log start %d; restarting the log there",
                    partition_log.topic, partition_log.partition, partition_log.log_end_offset, leader,
                    answer.log_start_offset)
        await partition_log.restart_at(answer.log_start_offset)
        partition_log.follow_high_watermark(answer.high_watermark)

    @staticmethod
    async def _truncate_divergent(partition_log: PartitionLog, answer: ReplicaFetchResponse, leader: int) -> None:
        """Cut the suffix the leader does not have: to the lower of the leader's end of
        the diverging epoch and this log's own end of it (see the module docstring)."""
        _, own_end = partition_log.epoch_end(answer.diverging_epoch)
        target = min(answer.diverging_end, own_end)
        before = partition_log.log_end_offset
        if target < before:
            log.info("%s-%d: log diverges from leader %d after epoch %d; truncating %d -> %d", partition_log.topic,
                     partition_log.partition, leader, answer.diverging_epoch, before, target)
            await partition_log.truncate_to(target)
        if partition_log.log_end_offset >= before:
            await trio.sleep(RETRY_SECONDS)  # no progress (should not happen): do not spin

    async def _fetch_once(self, stream: trio.abc.Stream, partition_log: PartitionLog, leader: int) -> ReplicaFetchResponse:
        request = ReplicaFetchRequest(0, self.node_id, leader, partition_log.topic, partition_log.topic_id,
                                      partition_log.partition, partition_log.log_end_offset, FETCH_MAX_WAIT_MS,
                                      FETCH_MAX_BYTES, partition_log.last_epoch)
        await stream.send_all(encode_frame(request))
        reader = FrameReader()
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                raise trio.BrokenResourceError("the leader closed the connection")
            for message in reader.feed(data):
                if not isinstance(message, ReplicaFetchResponse):
                    raise CodecError(f"unexpected {type(message).__name__} in answer to a replica fetch")
                return message

    @staticmethod
    async def _store(partition_log: PartitionLog, answer: ReplicaFetchResponse) -> None:
        """Append the answer's batches at the leader's offsets, wait until durable, adopt the leader's HW."""
        view = memoryview(answer.records)
        pos = 0
        last = None
        while pos < len(view) and not partition_log.closed:
            try:
                header = parse_batch_header(view[pos:])
                if header.base_offset < partition_log.log_end_offset <= header.last_offset \
                        and not partition_log.holds_batches:
                    # just restarted at the leader's log start, which is inside this batch
                    await partition_log.restart_at(header.base_offset)
                last = partition_log.append_replicated(view[pos : pos + header.size], gaps_below=answer.high_watermark)
            except (ProtocolError, OffsetOutOfRange) as exc:
                raise CodecError(f"bad batch from the leader: {exc}") from exc
            pos += header.size
        if last is not None:
            await partition_log.wait_durable(last)
        partition_log.follow_high_watermark(answer.high_watermark)
        # the leader's DeleteRecords (or retention) moved its log start: follow, up to the high watermark
        start = min(answer.log_start_offset, partition_log.high_watermark)
        if start > partition_log.log_start_offset and not partition_log.closed:
            partition_log.advance_log_start(start)
