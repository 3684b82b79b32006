"""One broker node: the disk layer, the metadata log, the partition logs and the listeners.

:func:`open_broker` assembles a :class:`Broker` in a nursery it owns:

1. the WAL backend and one group committer for the data directory;
2. the metadata log, replayed (snapshot + WAL tail), then this node's
   RegisterBroker command if the image does not already say the same;
3. the partition logs, opened (recovered) to match the metadata image;
4. background tasks: retention, the log cleaner (compaction, segment.ms
   rolling), the group coordinator's timers, the transaction coordinator
   (completing decided transactions, aborting timed-out ones).

:meth:`Broker.serve` then runs the Kafka listener (and the operator HTTP
endpoint if configured) until cancelled.  Leaving :func:`open_broker` cancels
the tasks, flushes and closes every log, and stops the committer -- in that
order, so nothing acknowledged is lost and nothing is left half-written.

Cluster mode (two or more ``peers``): step 2 runs a Raft voter on the
replication port instead (:mod:`chronik.cluster`), and the metadata image is
built from the committed entries of the replicated log
(:class:`~chronik.cluster.metadata.ReplicatedMetadataLog`); metadata writes
on any node go through the controller (the Raft leader).  This node
registers itself once there is a controller, opens the logs only of the
partitions it is a replica of, and serves produce/fetch only for those it
leads; a :class:`~chronik.cluster.replication.ReplicaManager` copies the
data of partitions with more than one replica from their leaders to their
followers, keeps their ISR and follows leader changes, and on the controller
a :class:`~chronik.cluster.liveness.BrokerLiveness` fences brokers that went
quiet (which moves their partitions' leadership) and unfences them, and a
:class:`~chronik.cluster.balance.PreferredLeaderBalancer` gives leadership
back to preferred replicas (``auto.leader.rebalance.enable``).  With no peers or one, none of this runs.

:meth:`Broker.serve` also registers this node (its RegisterBroker command):
before accepting clients on a single node, in the background once there is a
controller in cluster mode.  The listener itself writes no metadata.

Nothing imports this module but the entry points (:mod:`chronik.serve`) and
tests: each part is handed what it uses.  Handlers see the :class:`Broker`
as :class:`~chronik.handlers.services.BrokerServices`; replication,
liveness and leader balancing get the metadata view, the log manager, a
submit function and the metrics.  Handlers never touch files.
"""

from __future__ import annotations

import base64
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING

import trio

from .config import BrokerConfig, HostPort
from .groups import GroupCoordinator
from .security.authorizer import Authorizer, authorizer_for
from .security.commands import command_check
from .log.cleaner_manager import LogCleaner
from .txn import TransactionCoordinator, TxnSettings
from .txn.markers import ClusterMarkerWriter, LocalMarkerWriter
from .log.manager import LogManager
from .log.partition import PartitionLog
from .metadata import (
    AllocateProducerIds,
    Command,
    CommandRejected,
    ControlledShutdown,
    CreateTopic,
    MetadataImage,
    MetadataLog,
    PartitionImage,
    RegisterBroker,
    TopicImage,
)
from .metadata.placement import PartitionLimits, TopicRequest, replica_assignment, topic_request_problem
from .metadata.topic_configs import TOPIC_CONFIGS, deletes
from .metadata.view import Origin, QuorumInfo, QuorumReplica
from .protocol import ErrorCode
from .storage import (
    TEST_BACKENDS,
    GroupCommitter,
    MemoryBackend,
    StorageBackend,
    create_backend,
    get_profile,
    open_group_committer,
)
from .storage.lock import DataDirLock
from .storage.files import read_file, replace_file_durably

if TYPE_CHECKING:
    from .cluster.metadata import ReplicatedMetadataLog
    from .cluster.network import Network
    from .cluster.node import ConsensusNode

log = logging.getLogger(__name__)

STALE_METADATA_SECONDS = 2.0
"""Cluster mode: how long a follower may stay behind the commit end the controller announces
before its metadata counts as stale (see :meth:`Broker.metadata_lag`)."""

RAFT_DIR = "__chronik_raft"
"""The replicated metadata log (Raft hard state and WAL) in cluster mode."""
REGISTER_RETRY_SECONDS = 0.5
CLUSTER_ID_FILE = "cluster.id"
PRODUCER_ID_BLOCK = 1000
RETENTION_CHECK_SECONDS = 30.0
CONTROLLED_SHUTDOWN_SECONDS = 5.0
"""How long a stopping cluster node waits for the controller to move its leadership away."""


class Broker:
    """The node's services, as request handlers use them (see the module docstring).

    Implements :class:`~chronik.handlers.services.BrokerServices` (and the
    listener's ``KafkaServices``) and the group coordinator's
    :class:`~chronik.groups.coordinator.CoordinatorRole`.
    """

    def __init__(self, config: BrokerConfig, metadata: "MetadataLog | ReplicatedMetadataLog", logs: LogManager, cluster_id: str,
                 consensus: "ConsensusNode | None" = None, authorizer: Authorizer | None = None, *,
                 clock: Callable[[], float] = time.time, network: "Network | None" = None) -> None:
        from .metrics import BrokerMetrics

        self.config = config
        self.clock = clock
        """The wall clock (seconds since the epoch) of transaction timeouts, marker timestamps, retention
        and producer-id expiry (see :func:`open_broker`)."""
        self.metrics = BrokerMetrics()
        self.committer = logs.committer
        self.committer.on_commit = self.metrics.record_wal_sync
        self.metrics.partitions.set_function(lambda: len(self.logs))
        self.metrics.log_dir_failed.set_function(lambda: 0 if self.committer.failure is None else 1)
        self.metrics.wal_sync_polling.set_function(lambda: 1 if getattr(self.committer.backend, "polling", False) else 0)
        self.metrics.partitions_led.set_function(lambda: sum(1 for _ in self._led_partitions()))
        self.metrics.under_replicated.set_function(
            lambda: sum(1 for p in self._led_partitions() if len(p.isr) < len(p.replicas)))
        self.metadata = metadata
        """A :class:`MetadataLog`, or in cluster mode a :class:`~chronik.cluster.metadata.ReplicatedMetadataLog`."""
        self.consensus = consensus
        """The Raft voter in cluster mode; None on a single node."""
        self.logs = logs
        self.cluster_id = cluster_id
        self.node_id = config.node_id
        self.advertised: HostPort = config.advertise
        #: Advertised address per Kafka listener name (filled once bound; registered for the other nodes).
        self.advertised_listeners: dict[str, HostPort] = {}
        self.started_at = time.time()
        broker_defaults = config.kafka_configs()
        self._topic_defaults = {
            name: broker_defaults.get(definition.broker_key or "", definition.default)
            for name, definition in TOPIC_CONFIGS.items()
        }
        self._topic_configs: dict[uuid.UUID, tuple[dict[str, str], Mapping[str, str]]] = {}
        self._producer_ids: range = range(0)
        self._producer_id_lock = trio.Lock()
        # consumer groups (issue 4): offsets go through the metadata log; timers run in open_broker's nursery
        self._coordinating_since: tuple[int, int] | None = None  # (controller epoch, its first log end)
        self.groups = GroupCoordinator(metadata, initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                                       role=self if consensus is not None else None)
        self.authorizer: Authorizer | None = authorizer
        """ACL enforcement (``authorizer.class.name``; over ``metadata``'s ACLs, see
        :func:`_open_metadata`); None allows everything."""
        self.cleaner = LogCleaner(
            self.committer, str(config.data_dir), logs, self._effective_config_of, enabled=config.log_cleaner_enable,
            threads=config.log_cleaner_threads, backoff_ms=config.log_cleaner_backoff_ms,
            dedupe_buffer_bytes=config.log_cleaner_dedupe_buffer_size,
            io_max_bytes_per_second=config.log_cleaner_io_max_bytes_per_second)
        self.cleaner.on_pass = lambda _log, stats: self.metrics.record_cleaner_pass(
            stats.bytes_read, stats.bytes_written, stats.seconds)
        self.cleaner.on_error = lambda _log: self.metrics.cleaner_errors.inc()
        self.metrics.cleaner_dirtiest_ratio.set_function(lambda: self.cleaner.dirtiest_ratio)
        self.metrics.cleaner_uncleanable.set_function(lambda: len(self.cleaner.uncleanable))
        # transactions (issue 13): coordinated where groups are, state in the metadata log
        markers: LocalMarkerWriter | ClusterMarkerWriter = LocalMarkerWriter(
            lambda: self.metadata.image, self.partition_log, config.node_id, clock)
        if consensus is not None:  # partitions led elsewhere get their markers by WriteTxnMarkers
            markers = ClusterMarkerWriter(markers, lambda: self.metadata.image, config.node_id,
                                          trio.open_tcp_stream if network is None else _kafka_dialler(network))
        self.transactions = TransactionCoordinator(
            metadata, markers, self.next_producer_id,
            TxnSettings(config.transaction_max_timeout_ms, config.transactional_id_expiration_ms),
            role=self if consensus is not None else None, clock=clock)

    @property
    def image(self) -> MetadataImage:
        return self.metadata.image

    @property
    def controller_id(self) -> int:
        """The controller's node id: the Raft leader in cluster mode (-1: none known), else this node."""
        if self.consensus is None:
            return self.node_id
        leader = self.consensus.leader_id
        return -1 if leader is None else leader

    # -- group coordination (cluster mode: the controller coordinates every group) --

    def coordinator_error(self) -> ErrorCode | None:
        """None if this node coordinates groups now (see :class:`~chronik.groups.coordinator.CoordinatorRole`).

        The controller coordinates, once it has applied everything earlier
        controllers committed (offsets included): until its first own entry
        -- the new epoch's no-op, at the log end it had when it was first
        seen leading -- is applied it answers COORDINATOR_LOAD_IN_PROGRESS.
        """
        consensus = self.consensus
        if consensus is None:
            return None
        from .cluster.raft import Role  # cluster mode only: a single node never imports the consensus code

        if consensus.role is not Role.LEADER:
            self._coordinating_since = None
            return ErrorCode.NOT_COORDINATOR
        if self._coordinating_since is None or self._coordinating_since[0] != consensus.term:
            self._coordinating_since = (consensus.term, consensus.log_end)
        if consensus.commit_end < self._coordinating_since[1]:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return None

    def metadata_lag(self) -> str | None:
        """Why this node's metadata must not be acted on now (None: it is current enough).

        Cluster mode only, and only what the node *knows*: a follower is stale
        until its commit end has reached the one a leader announced since it
        started (until then its image is whatever its disk had, an old
        snapshot or log), and when it has stayed behind the commit end its
        leader announces for :data:`STALE_METADATA_SECONDS` (it hears the
        leader but cannot keep up).  A node cut off from every leader does not
        know it is behind and keeps serving what it has (as a Kafka broker
        does; the controller fences it and moves its leaderships, and acks=all
        writes cannot complete without the ISR).  A new controller is stale
        until it has applied the entries of earlier epochs (as for group
        coordination).
        While stale a node serves Metadata and DescribeConfigs with errors,
        leads and follows no partition, and answers produce and fetch
        NOT_LEADER_OR_FOLLOWER -- so a restarted node never takes writes or
        truncates a replica on the strength of an old image.
        """
        consensus = self.consensus
        if consensus is None:
            return None
        from .cluster.raft import Role

        if consensus.role is Role.LEADER:
            loading = self.coordinator_error() == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            return "this new controller is still applying earlier entries" if loading else None
        if not consensus.caught_up_once:
            return "this node has not caught up with the controller since it started"
        now = trio.current_time()
        behind = consensus.behind_since
        if behind is not None and now - behind > STALE_METADATA_SECONDS:
            return f"this node has been behind the controller's metadata for {now - behind:.1f} s"
        return None

    @property
    def coordinator_epoch(self) -> int:
        return 0 if self.consensus is None else self.consensus.term

    async def describe_quorum(self) -> QuorumInfo:
        """The metadata quorum as its leader sees it (Kafka's DescribeQuorum).

        In cluster mode the Raft leader's view, asked of it if this node follows
        (:meth:`~chronik.cluster.node.ConsensusNode.describe_quorum`; raises
        :class:`~chronik.metadata.view.QuorumUnavailable`).  A single node is the sole
        voter and leader of its metadata log, elected by nobody: epoch 0, and its log end
        -- every command is applied once durable, so the end of what it applied -- is both
        its own log end and the high watermark; its times are now.
        Cancellation: safe; nothing changes.
        """
        if self.consensus is not None:
            return await self.consensus.describe_quorum()
        await trio.lowlevel.checkpoint()
        end = self.metadata.image.applied_offset + 1
        now = int(self.clock() * 1000)
        return QuorumInfo(self.node_id, 0, end, (QuorumReplica(self.node_id, end, now, now),))

    # -- metadata changes ------------------------------------------------------

    async def submit(self, command: Command, origin: Origin | None = None) -> object:
        """Append a metadata command durably and apply it; the logs follow in the background.

        ``origin``: the client whose request it is; the controller authorizes the
        command for it (None: this node's own write).  Raises
        :class:`CommandRejected` with a Kafka error name.
        Cancellation: the command may still be applied (and the logs synced).
        """
        try:
            return await self.metadata.submit(command, origin)
        finally:
            self.logs.request_sync()

    def missing_log_error(self, topic: str | None, partition: int,
                          unknown: ErrorCode = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) -> ErrorCode:
        """Why a partition has no log to serve: offline (damaged on disk), led by
        another node (cluster mode), or ``unknown``."""
        if (topic, partition) in self.logs.offline:
            return ErrorCode.KAFKA_STORAGE_ERROR
        if self.consensus is not None and topic is not None:
            found = self.image.topics.get(topic)
            if found is not None and 0 <= partition < len(found.partitions) and (
                    found.partitions[partition].leader != self.node_id or self.metadata_lag() is not None):
                return ErrorCode.NOT_LEADER_OR_FOLLOWER
        return unknown

    def led_log(self, topic: str, partition: int) -> PartitionLog | None:
        """The local log of a partition this node serves (in cluster mode: leads, with
        current metadata, and -- when replicated -- the replica manager has taken the lead
        up in that leader epoch); None if none.

        Between the metadata naming this node leader and the replica manager's next
        reconcile the log still follows (its fetcher may still append the old leader's
        batches, and a batch appended now would carry no leader epoch, so a replica that
        had another batch at that offset would never truncate it): not served yet."""
        partition_log = self.logs.get(topic, partition)
        if partition_log is not None and self.consensus is not None:
            if self.metadata_lag() is not None:
                return None
            found = self.image.topics.get(topic)
            if found is None or partition >= len(found.partitions) or found.partitions[partition].leader != self.node_id:
                return None
            led = found.partitions[partition]
            if len(led.replicas) > 1 and partition_log.leader_epoch != led.leader_epoch:
                return None
        return partition_log

    async def partition_log(self, topic: str, partition: int) -> PartitionLog | None:
        """The local log of a partition the metadata has (and this node leads), opened if it is new; None if not."""
        await self.logs.in_step_with(self.image)
        return self.led_log(topic, partition)

    async def create_topic(self, request: TopicRequest, origin: Origin | None = None) -> TopicImage:
        """Create a topic for ``origin`` (as :meth:`submit`).  Raises :class:`CommandRejected` (Kafka error name)."""
        problem = topic_request_problem(self.image, request, PartitionLimits.of(self.config))
        if problem is not None:
            raise CommandRejected(*problem)
        command = CreateTopic(
            name=request.name,
            topic_id=uuid.uuid4().hex,
            replicas=request.replicas or replica_assignment(self.image, request.num_partitions, request.replication_factor,
                                                            this_node=self.node_id),
            configs=dict(request.configs),
        )
        topic = await self.submit(command, origin)
        assert isinstance(topic, TopicImage)
        log.info("created topic %s with %d partition(s)", request.name, request.num_partitions)
        return topic

    async def auto_create_topic(self, name: str, origin: Origin | None = None) -> TopicImage | None:
        """Create ``name`` with the broker defaults for ``origin`` if auto-creation is on; None if not created."""
        if not self.config.auto_create_topics_enable:
            return None
        request = TopicRequest(name, self.config.num_partitions, self.config.default_replication_factor, {})
        try:
            return await self.create_topic(request, origin)
        except CommandRejected as exc:
            if exc.error == "TOPIC_ALREADY_EXISTS":
                return self.image.topics.get(name)
            raise

    def topic_config(self, topic: TopicImage) -> Mapping[str, str]:
        """Every topic config's effective value: the topic's own, else the broker default.

        Computed once per version of the topic's config (the produce path asks
        on every request); the image replaces ``topic.configs`` with a new dict
        on every change, so identity tells a stale entry.  Read-only result.
        """
        cached = self._topic_configs.get(topic.topic_id)
        if cached is None or cached[0] is not topic.configs:
            cached = self._topic_configs[topic.topic_id] = (
                topic.configs, MappingProxyType({**self._topic_defaults, **topic.configs}))
        return cached[1]

    def _effective_config_of(self, name: str) -> Mapping[str, str] | None:
        topic = self.image.topics.get(name)
        return None if topic is None else self.topic_config(topic)

    async def next_producer_id(self) -> int:
        """A producer id never handed out before (blocks are allocated through the metadata log)."""
        async with self._producer_id_lock:
            if not self._producer_ids:
                first = await self.metadata.submit(AllocateProducerIds(count=PRODUCER_ID_BLOCK))
                assert isinstance(first, int)
                self._producer_ids = range(first, first + PRODUCER_ID_BLOCK)
            producer_id = self._producer_ids[0]
            self._producer_ids = self._producer_ids[1:]
            return producer_id

    def _led_partitions(self) -> Iterator[PartitionImage]:
        """The partitions the metadata says this node leads."""
        for topic in self.image.topics.values():
            for partition in topic.partitions:
                if partition.leader == self.node_id:
                    yield partition

    def _can_hand_off(self, partition: PartitionImage) -> bool:
        brokers = self.image.brokers
        return any(r != self.node_id and r in brokers and not brokers[r].fenced for r in partition.isr)

    async def controlled_shutdown(self, timeout: float = CONTROLLED_SHUTDOWN_SECONDS) -> None:
        """Cluster mode, before stopping: have the controller move leadership of every
        partition this node leads to an in-sync replica (a
        :class:`~chronik.metadata.commands.ControlledShutdown`, which also fences
        this node until it registers again).  Gives up after ``timeout`` seconds;
        nothing happens on a single node, before this node registered, or when no
        partition it leads has another in-sync, unfenced replica (such as the last
        node of a cluster stopping)."""
        if self.consensus is None or self.node_id not in self.image.brokers:
            return
        led = sum(1 for p in self._led_partitions() if self._can_hand_off(p))
        if not led:
            return
        with trio.move_on_after(timeout):
            while True:
                try:
                    await self.submit(ControlledShutdown(node_id=self.node_id))
                    break
                except CommandRejected as exc:
                    log.info("controlled shutdown not accepted yet (%s: %s); retrying", exc.error, exc.message)
                    await trio.sleep(REGISTER_RETRY_SECONDS / 5)
            # submit returns once this node applied the command; the check is for the record
            while any(self._can_hand_off(p) for p in self._led_partitions()):
                await trio.sleep(0.05)
            log.info("controlled shutdown: leadership of %d partition(s) handed over", led)
            return
        log.warning("controlled shutdown: not done within %.0f s; stopping anyway (still leading %d partition(s))",
                    timeout, sum(1 for _ in self._led_partitions()))

    def health(self) -> str | None:
        """None when healthy, else why not (served by /health with 503)."""
        failure = self.committer.failure
        return None if failure is None else f"log directory failed: {failure}"

    # -- background work -------------------------------------------------------

    def apply_retention(self) -> int:
        """Delete segments past each topic's retention limits; returns segments deleted."""
        now_ms = int(self.clock() * 1000)
        deleted = 0
        for partition_log in self.logs:
            topic = self.image.topics.get(partition_log.topic)
            if topic is None:
                continue
            configs = self.topic_config(topic)
            if not deletes(configs["cleanup.policy"]):
                continue  # compact only: the cleaner keeps the latest value of every key, whatever its age
            deleted += partition_log.apply_retention(now_ms, int(configs["retention.ms"]), int(configs["retention.bytes"]))
        return deleted

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(RETENTION_CHECK_SECONDS)
            deleted = self.apply_retention()
            if deleted:
                log.info("retention deleted %d segment(s)", deleted)

    def expire_producers(self) -> int:
        """Forget producer ids idle past ``producer.id.expiration.ms`` in every local log; returns how many."""
        now_ms = int(self.clock() * 1000)
        expiration_ms = self.config.producer_id_expiration_ms
        return sum(partition_log.expire_producers(now_ms, expiration_ms) for partition_log in self.logs)

    async def _producer_expiry_loop(self) -> None:
        while True:
            await trio.sleep(self.config.producer_id_expiration_check_interval_ms / 1000)
            expired = self.expire_producers()
            if expired:
                log.info("forgot %d expired producer id(s)", expired)

    async def serve(self, *, task_status: trio.TaskStatus[list[HostPort]] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the Kafka listeners (and the operator HTTP endpoint) until cancelled, and register this node.

        ``task_status.started`` gets the bound Kafka addresses (every listener's, in
        order) once clients can connect.  With ``listeners`` set, the first
        listener's advertised address is the one registered for other nodes.
        With listen port 0 the bound port is also advertised (``advertised`` is
        updated before registering).  A single node registers itself before it
        accepts clients; a cluster node once the cluster has a controller, in
        the background (:func:`register_self`).
        """
        from .server.kafka import close_listener_set, listener_addresses, open_listener_set, serve_kafka

        async with trio.open_nursery() as nursery:
            if self.config.metrics_listen is not None:
                from .server.http import serve_operator_http

                listen = (self.config.metrics_listen.host, self.config.metrics_listen.port)
                await nursery.start(serve_operator_http, listen, self.metrics.registry, self.health)
            listeners = await open_listener_set(self.config.kafka_listeners())
            try:
                bound = [address for listener in listeners for address in listener_addresses(listener.sockets)]
                if self.config.listeners or self.advertised.port == 0:
                    self.advertised = listeners[0].advertised  # the first listener's address is registered
                if self.config.listeners:
                    self.advertised_listeners = {listener.name: listener.advertised for listener in listeners}
                if self.consensus is None:
                    await register_self(self)
            except BaseException:
                await close_listener_set(listeners)
                raise
            await nursery.start(serve_kafka, self, listeners)
            if self.consensus is not None:
                nursery.start_soon(register_self, self)  # once the cluster has a controller
            task_status.started(bound)


def _load_cluster_id(backend: StorageBackend, data_dir: str) -> str:
    """The cluster id stored in the data directory, created on first start."""
    stored = read_file(backend, f"{data_dir}/{CLUSTER_ID_FILE}")
    if stored is not None and stored.strip():
        return stored.decode().strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    replace_file_durably(backend, data_dir, CLUSTER_ID_FILE, cluster_id.encode())
    return cluster_id


def _voters_cluster_id(config: BrokerConfig) -> str:
    """Cluster mode: every node must report the same cluster id, so it is derived
    from the voters (ids and replication addresses) rather than stored per node."""
    voters = ",".join(f"{p.id}@{p.replication}" for p in sorted(config.peers, key=lambda p: p.id))
    digest = uuid.uuid5(uuid.NAMESPACE_URL, f"chronik-cluster:{voters}").bytes
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@asynccontextmanager
async def open_broker(config: BrokerConfig, *, backend: StorageBackend | None = None, network: "Network | None" = None,
                      rng: random.Random | None = None, clock: Callable[[], float] = time.time) -> AsyncIterator[Broker]:
    """Lock and recover the data directory and yield a ready :class:`Broker` (see the module docstring).

    The data directory's lock (:mod:`chronik.storage.lock`) is taken before
    anything in it is read and held until the broker is closed; with an
    in-memory backend there is no directory and no lock.

    The keyword arguments are for tests that run whole clusters in one
    process (``tests/cluster/test_cluster_simulation.py``): ``backend``, a
    storage backend instance to use instead of creating ``config.wal_backend``
    (the caller's: not closed here); ``network``, how cluster mode reaches its
    peers (:mod:`chronik.cluster.network`; None: TCP), their Raft and replication
    listeners and, for WriteTxnMarkers, their Kafka listeners; ``rng``, the Raft
    node's randomness (election timeouts, backoff jitter; None: unseeded);
    ``clock``, the wall clock of :attr:`Broker.clock` (a simulated one under
    trio's ``MockClock``, so transaction timeouts follow simulated time).

    Raises :class:`~chronik.storage.UnknownBackendError` for an unusable WAL
    backend, :class:`~chronik.storage.lock.DataDirectoryError` for a data
    directory that is locked by another process or cannot be created, and
    ``OSError`` for one that cannot be read.
    """
    in_memory = isinstance(backend, MemoryBackend) if backend is not None else config.wal_backend in TEST_BACKENDS
    lock = None if in_memory else DataDirLock(config.data_dir).acquire()
    try:
        async with _open_broker(config, backend=backend, network=network, rng=rng, clock=clock) as broker:
            yield broker
    finally:
        if lock is not None:
            lock.release()


@asynccontextmanager
async def _open_broker(config: BrokerConfig, *, backend: StorageBackend | None, network: "Network | None",
                       rng: random.Random | None, clock: Callable[[], float]) -> AsyncIterator[Broker]:
    started = time.perf_counter()
    data_dir = str(config.data_dir)
    owned = backend is None
    if backend is None:
        backend = create_backend(config.wal_backend)
    backend.make_dirs(data_dir)
    cluster_id = _load_cluster_id(backend, data_dir) if len(config.peers) < 2 else _voters_cluster_id(config)
    try:
        async with open_group_committer(backend, data_dir, get_profile(config.wal_profile)) as committer, \
                _open_metadata(config, committer, backend, data_dir, network, rng, clock) as (metadata, consensus, authorizer):
            logs = LogManager(committer, data_dir, default_segment_bytes=config.log_segment_bytes,
                              replica_of=None if consensus is None else config.node_id)
            broker = Broker(config, metadata, logs, cluster_id, consensus, authorizer, clock=clock, network=network)
            replicas = None
            if consensus is not None:
                from .cluster.replication import ReplicaManager

                replicas = ReplicaManager(config.node_id, metadata, logs, metadata_lag=broker.metadata_lag,
                                          submit=broker.submit, metrics=broker.metrics, transport=consensus.transport,
                                          peers={peer.id: str(peer.replication) for peer in config.peers},
                                          lag_max_seconds=config.replica_lag_time_max_ms / 1000,
                                          socket_timeout=config.replica_socket_timeout_ms / 1000,
                                          network=consensus.transport.network)  # the Raft port's: TLS or not
                metadata.add_listener(lambda *_: logs.request_sync())  # changes made through other nodes
                metadata.add_listener(lambda *_: replicas.request_reconcile())
            try:
                await logs.sync_with(metadata.image)
                recovered = sum(p.recovery.batches for p in logs if p.recovery is not None)
                log.info(
                    "recovered %d partition(s), %d batches and metadata offset %d in %.0f ms (WAL backend %s)",
                    len(logs), recovered, metadata.image.applied_offset,
                    (time.perf_counter() - started) * 1000, backend.name,
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(broker._retention_loop)
                    nursery.start_soon(broker._producer_expiry_loop)
                    await nursery.start(broker.cleaner.run)
                    await nursery.start(logs.run, lambda: metadata.image)
                    await nursery.start(broker.groups.run)
                    await nursery.start(broker.transactions.run)
                    if replicas is not None:
                        assert consensus is not None
                        from .cluster.liveness import BrokerLiveness

                        await nursery.start(replicas.run)
                        liveness = BrokerLiveness(consensus, metadata, broker.submit,
                                                  session_timeout=config.broker_session_timeout_ms / 1000)
                        await nursery.start(liveness.run)
                        if config.auto_leader_rebalance_enable:
                            from .cluster.balance import PreferredLeaderBalancer

                            balancer = PreferredLeaderBalancer(
                                consensus, metadata, broker.submit, interval=config.leader_imbalance_check_interval_seconds)
                            await nursery.start(balancer.run)
                    yield broker
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await logs.aclose()
    finally:
        if owned:
            with trio.CancelScope(shield=True):
                await backend.aclose()


@asynccontextmanager
async def _open_metadata(
    config: BrokerConfig, committer: GroupCommitter, backend: StorageBackend, data_dir: str,
    network: "Network | None" = None, rng: random.Random | None = None, clock: Callable[[], float] = time.time,
) -> AsyncIterator[tuple["MetadataLog | ReplicatedMetadataLog", "ConsensusNode | None", Authorizer | None]]:
    """The metadata log, in cluster mode the Raft voter that feeds it (dating what it reports of
    the quorum by ``clock``), and the authorizer over its ACLs (None: none configured); closed on exit.

    The metadata log authorizes the commands clients ask for with that authorizer
    (:func:`~chronik.security.commands.command_check`) from before the Raft voter serves,
    so no forwarded write is ever taken unchecked.
    """
    if len(config.peers) < 2:
        metadata = MetadataLog.open(committer, data_dir, snapshot_every=config.metadata_snapshot_every)
        authorizer = _authorize_commands(config, metadata)
        try:
            yield metadata, None, authorizer
        finally:
            with trio.CancelScope(shield=True):
                await metadata.aclose()
        return
    from .cluster.metadata import ReplicatedMetadataLog
    from .cluster.network import TCP
    from .cluster.node import open_raft_node

    network = network or TCP
    replicated = ReplicatedMetadataLog(commit_mode=config.metadata_commit, snapshot_every=config.metadata_snapshot_every)
    authorizer = _authorize_commands(config, replicated)
    if config.replication_security_protocol == "SSL":
        network = _mutual_tls(config, network, replicated)
    listener = await network.listen(str(config.replication_listen))
    voters = {peer.id: str(peer.replication) for peer in config.peers}
    # The Raft log has a group committer of its own; a backend's sync worker
    # runs one write_and_sync at a time, so it gets a backend of its own too
    # (created and closed by open_raft_node), except the in-memory one.
    raft_backend: StorageBackend | str = backend if isinstance(backend, MemoryBackend) else config.wal_backend
    async with open_raft_node(
        config.node_id, voters, f"{data_dir}/{RAFT_DIR}", rng=rng or random.Random(), backend=raft_backend, listener=listener,
        network=network, on_commit=replicated.apply_committed, commit_profile=config.wal_profile,
        request_timeout=config.controller_quorum_request_timeout_ms / 1000, wall_clock=clock,
    ) as node:
        # Attaching makes replicated's check (authorize, set above) the node's admission check, before
        # the first checkpoint since the node started: no forward can have been answered without it.
        replicated.node = node
        node.answer_forwards_when_durable = config.metadata_commit == "leader"
        yield replicated, node, authorizer


def _authorize_commands(config: BrokerConfig, metadata: "MetadataLog | ReplicatedMetadataLog") -> Authorizer | None:
    """The authorizer ``config`` asks for, over ``metadata``'s ACLs, made ``metadata``'s check of the
    commands clients ask for (the controller's check, in cluster mode); None: none configured."""
    authorizer = authorizer_for(config, lambda: metadata.image.security.acls)
    if authorizer is not None:
        metadata.authorize = command_check(authorizer)
    return authorizer


def _mutual_tls(config: BrokerConfig, network: "Network", metadata: "ReplicatedMetadataLog") -> "Network":
    """``network`` wrapped in mutual TLS (``replication_security_protocol=SSL``), peers checked against
    ``super.users`` and the ACLs of ``metadata`` when an authorizer is on (see
    :func:`~chronik.server.security.replication_peer_check`)."""
    from .cluster.tls import TlsNetwork
    from .server.security import replication_peer_check, replication_tls_contexts

    server, client = replication_tls_contexts(config)
    admit = replication_peer_check(config, lambda: metadata.image.security.acls)
    log.info("replication port: mutual TLS (certificate %s, trust store %s, peer host names %s, peers %s)",
             config.replication_keystore[1], config.replication_truststore[1],
             "checked" if client.check_hostname else "not checked",
             "must be super users or allowed ClusterAction" if config.authorizer_class_name
             else "admitted on any certificate the trust store verifies")
    return TlsNetwork(network, server, client, admit=admit)


def _kafka_dialler(network: "Network") -> Callable[[str, int], Awaitable[trio.abc.Stream]]:
    """Dial another node's Kafka listener (``host``, ``port`` as it registered them) through ``network``."""

    async def connect(host: str, port: int) -> trio.abc.Stream:
        return await network.connect(str(HostPort(host, port)))

    return connect


async def register_self(broker: Broker) -> None:
    """Record this node (id and advertised address) in the metadata log if it changed.

    In cluster mode this waits for a controller: it tries again until the
    command is committed (run it as a background task there).
    """
    while broker.consensus is not None:
        try:
            await _register(broker)
            log.info("registered broker %d with controller %d", broker.node_id, broker.controller_id)
            return
        except CommandRejected as exc:
            log.info("cannot register with a controller yet (%s); retrying", exc.error)
            await trio.sleep(REGISTER_RETRY_SECONDS)
    await _register(broker)


async def _register(broker: Broker) -> None:
    current = broker.image.brokers.get(broker.node_id)
    host, port = broker.advertised.host, broker.advertised.port
    listeners = {name: [a.host, a.port] for name, a in broker.advertised_listeners.items()}
    if current is None or current.shutting_down or (current.host, current.port, current.rack, current.listeners) != (
            host, port, broker.config.rack, listeners):
        await broker.submit(RegisterBroker(node_id=broker.node_id, host=host, port=port, rack=broker.config.rack,
                                           listeners=listeners))
