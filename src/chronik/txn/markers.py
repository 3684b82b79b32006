"""Writing transaction markers to the partitions this node leads.

:class:`LocalMarkerWriter` appends one control batch per partition through
:meth:`~chronik.log.partition.PartitionLog.append_marker` and returns once each
is durable and, for a replicated partition, below the high watermark (acks=all
rules: every in-sync replica has it), so a marker the coordinator counts as
written survives the loss of the leader.  A partition whose topic is gone needs
no marker.  A partition this node does not lead is reported failed
(NOT_LEADER_OR_FOLLOWER) and retried by the coordinator; sending markers to
another node's partitions (WriteTxnMarkers) is not built yet.
Cancellation: an appended marker stays appended (a second one later is harmless).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..log.partition import AppendInfo, PartitionLog
from ..metadata.image import MetadataImage
from ..protocol import ErrorCode
from ..storage import StorageError

MARKER_WAIT_SECONDS = 10.0


class LocalMarkerWriter:
    def __init__(self, image: Callable[[], MetadataImage],
                 partition_log: Callable[[str, int], Awaitable[PartitionLog | None]], node_id: int) -> None:
        self._image = image
        self._partition_log = partition_log
        self._node_id = node_id

    async def write_markers(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                            partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        failed: dict[tuple[str, int], ErrorCode] = {}
        written: list[tuple[tuple[str, int], PartitionLog, AppendInfo, bool]] = []
        now = int(time.time() * 1000)
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
            except StorageError:
                failed[(topic_name, index)] = ErrorCode.KAFKA_STORAGE_ERROR
                continue
            replicated = len(topic.partitions[index].replicas) > 1
            written.append(((topic_name, index), partition_log, info, replicated))
        for key, partition_log, info, replicated in written:
            try:
                await partition_log.wait_durable(info)
            except StorageError:
                failed[key] = ErrorCode.KAFKA_STORAGE_ERROR
                continue
            if replicated:
                with trio.move_on_after(MARKER_WAIT_SECONDS):
                    await partition_log.wait_high_watermark(info.last_offset + 1)
                if partition_log.high_watermark <= info.last_offset:
                    failed[key] = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return failed
