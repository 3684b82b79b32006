"""Writing transaction markers: to the partitions this node leads, and through WriteTxnMarkers to other leaders.

:class:`LocalMarkerWriter` appends one control batch per partition through
:meth:`~chronik.log.partition.PartitionLog.append_marker` and returns once each
is durable and, for a replicated partition, below the high watermark (acks=all
rules: every in-sync replica has it) while this node still leads in the leader
epoch it appended in, so a marker the coordinator counts as written survives
the loss of the leader.  (A leader that lost the lead meanwhile may have
truncated the marker, and as a follower its high watermark is the new
leader's, over other batches: that partition is failed, and written again.)  A partition whose topic is gone needs
no marker.  A partition this node does not lead is reported failed
(NOT_LEADER_OR_FOLLOWER) and retried by the coordinator.  A partition that
has a newer coordinator epoch for the producer than the marker's refuses it
(TRANSACTION_COORDINATOR_FENCED, see :mod:`chronik.log.producer_state`):
the writer is a deposed coordinator, and
:class:`~chronik.txn.coordinator.TransactionCoordinator` stops completing
that transaction.

:class:`ClusterMarkerWriter` (cluster mode) sends each partition's marker to
its leader as the metadata image names it: this node's through
:class:`LocalMarkerWriter`, another node's in one WriteTxnMarkers (v1)
request per leader over its Kafka listener (whose handler uses a
:class:`LocalMarkerWriter` there), dialled with ``connect`` (TCP; a
whole-cluster simulation passes its in-memory network's).  A leader that
cannot be reached, whose connection breaks before it answers, or that answers
an error, leaves those partitions failed; the coordinator retries, looking
the leaders up again.
Cancellation: an appended marker stays appended (a second one later is harmless).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..log.partition import AppendInfo, PartitionLog, SequenceError
from ..metadata.image import MetadataImage
from ..protocol import ErrorCode, FrameDecoder, decode_response, encode_frame, encode_request, request_schema
from ..protocol.build import build
from ..storage import StorageError

log = logging.getLogger(__name__)

MARKER_WAIT_SECONDS = 10.0
WRITE_TXN_MARKERS = 27
WRITE_TXN_MARKERS_VERSION = 1
REMOTE_TIMEOUT_SECONDS = 15.0


class LocalMarkerWriter:
    """``clock``: the wall clock (seconds since the epoch) that stamps the markers."""

    def __init__(self, image: Callable[[], MetadataImage],
                 partition_log: Callable[[str, int], Awaitable[PartitionLog | None]], node_id: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._image = image
        self._partition_log = partition_log
        self._node_id = node_id
        self._clock = clock

    def writes_locally(self, partitions: Sequence[tuple[str, int]]) -> bool:
        """Always: these markers are written here (or fail here and are retried)."""
        return True

    async def write_markers(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                            partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        failed: dict[tuple[str, int], ErrorCode] = {}
        written: list[tuple[tuple[str, int], PartitionLog, AppendInfo, int | None]] = []
        now = int(self._clock() * 1000)
        for topic_name, index in partitions:
            topic = self._image().topics.get(topic_name)
            if topic is None or index >= len(topic.partitions):
                continue  # deleted: nothing to mark
            partition_log = await self._partition_log(topic_name, index)
            if partition_log is None:
                failed[(topic_name, index)] = ErrorCode.NOT_LEADER_OR_FOLLOWER
                continue
            try:
                info = partition_log.append_marker(producer_id, producer_epoch, commit, coordinator_epoch, now)
            except SequenceError as exc:  # TRANSACTION_COORDINATOR_FENCED: a newer coordinator wrote here
                log.warning("%s-%d: %s", topic_name, index, exc)
                failed[(topic_name, index)] = exc.error
                continue
            except StorageError:
                failed[(topic_name, index)] = ErrorCode.KAFKA_STORAGE_ERROR
                continue
            replicated = len(topic.partitions[index].replicas) > 1
            written.append(((topic_name, index), partition_log, info, partition_log.leader_epoch if replicated else None))
        for key, partition_log, info, leader_epoch in written:
            try:
                await partition_log.wait_durable(info)
            except StorageError:
                failed[key] = ErrorCode.KAFKA_STORAGE_ERROR
                continue
            if leader_epoch is not None:  # replicated
                with trio.move_on_after(MARKER_WAIT_SECONDS):
                    await partition_log.wait_high_watermark(info.last_offset + 1)
                topic = self._image().topics.get(key[0])
                led = None if topic is None or key[1] >= len(topic.partitions) else topic.partitions[key[1]]
                if led is None or (led.leader, led.leader_epoch) != (self._node_id, leader_epoch):
                    failed[key] = ErrorCode.NOT_LEADER_OR_FOLLOWER
                elif partition_log.high_watermark <= info.last_offset:
                    failed[key] = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return failed


class ClusterMarkerWriter:
    """Markers to each partition's leader: here directly, elsewhere by WriteTxnMarkers."""

    def __init__(self, local: LocalMarkerWriter, image: Callable[[], MetadataImage], node_id: int,
                 connect: Callable[[str, int], Awaitable[trio.abc.Stream]] = trio.open_tcp_stream) -> None:
        self._local = local
        self._image = image
        self._node_id = node_id
        self._connect = connect
        self._correlation = itertools.count(1)

    def writes_locally(self, partitions: Sequence[tuple[str, int]]) -> bool:
        """Whether the metadata image names this node the leader of every partition (of an existing topic)."""
        image = self._image()
        for topic_name, index in partitions:
            topic = image.topics.get(topic_name)
            if topic is not None and index < len(topic.partitions) and topic.partitions[index].leader != self._node_id:
                return False
        return True

    async def write_markers(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                            partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        image = self._image()
        by_leader: dict[int, list[tuple[str, int]]] = {}
        for topic_name, index in partitions:
            topic = image.topics.get(topic_name)
            if topic is None or index >= len(topic.partitions):
                continue
            by_leader.setdefault(topic.partitions[index].leader, []).append((topic_name, index))
        failed: dict[tuple[str, int], ErrorCode] = {}

        async def send(leader: int, owned: list[tuple[str, int]]) -> None:
            if leader == self._node_id:
                failed.update(await self._local.write_markers(producer_id, producer_epoch, commit,
                                                              coordinator_epoch, owned))
                return
            broker = image.brokers.get(leader)
            if broker is None or leader < 0:
                failed.update({p: ErrorCode.LEADER_NOT_AVAILABLE for p in owned})
                return
            try:
                with trio.fail_after(REMOTE_TIMEOUT_SECONDS):
                    failed.update(await self._remote(broker.host, broker.port, producer_id, producer_epoch, commit,
                                                     coordinator_epoch, owned))
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
                log.info("WriteTxnMarkers to node %d failed: %s", leader, exc)
                failed.update({p: ErrorCode.NETWORK_EXCEPTION for p in owned})

        async with trio.open_nursery() as nursery:
            for leader, owned in by_leader.items():
                nursery.start_soon(send, leader, owned)
        return failed

    async def _remote(self, host: str, port: int, producer_id: int, producer_epoch: int, commit: bool,
                      coordinator_epoch: int, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        by_topic: dict[str, list[int]] = {}
        for topic_name, index in partitions:
            by_topic.setdefault(topic_name, []).append(index)
        request = build(request_schema(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION), {"markers": [{
            "producer_id": producer_id, "producer_epoch": producer_epoch, "transaction_result": commit,
            "coordinator_epoch": coordinator_epoch,
            "topics": [{"name": name, "partition_indexes": indexes} for name, indexes in by_topic.items()]}]})
        correlation_id = next(self._correlation)
        frame = b"".join(encode_frame(encode_request(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION, correlation_id,
                                                     f"chronik-txn-{self._node_id}", request)))
        stream = await self._connect(host, port)
        async with stream:
            await stream.send_all(frame)
            decoder = FrameDecoder()
            payload = None
            while payload is None:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise OSError("connection closed before the WriteTxnMarkers answer")
                decoder.feed(data)
                payload = decoder.next_frame()
        response = decode_response(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION, payload, 5)
        failed = {p: ErrorCode.UNKNOWN_SERVER_ERROR for p in partitions}
        for marker in response.markers:
            for topic in marker.topics:
                for result in topic.partitions:
                    key = (topic.name, int(result.partition_index))
                    if result.error_code == 0:
                        failed.pop(key, None)
                    else:
                        failed[key] = ErrorCode(int(result.error_code))
        return failed
