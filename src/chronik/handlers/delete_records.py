"""DeleteRecords (key 21, v0-v2): move partitions' log start offsets forward.

Per partition, ``offset`` becomes the new log start offset (records below it
are no longer served, whole segments below it are deleted); -1 means the high
watermark, i.e. delete everything written so far.  An offset below the
current log start changes nothing.  Above the high watermark, or negative
other than -1, is OFFSET_OUT_OF_RANGE.  The answer's ``low_watermark`` is the
log start offset afterwards (-1 on error).  A partition that does not exist
is UNKNOWN_TOPIC_OR_PARTITION; one led by another node NOT_LEADER_OR_FOLLOWER.

:func:`leader_log` (the partition log this node leads) is shared with
OffsetForLeaderEpoch.
"""

from __future__ import annotations

from typing import Any

from ..log.partition import OffsetOutOfRange, PartitionLog
from ..metadata import PartitionImage
from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles

HIGH_WATERMARK = -1


def leader_log(ctx: RequestContext, topic: str, partition: int) -> tuple[PartitionImage, PartitionLog] | ErrorCode:
    """The partition (image and local log) if this node leads it, else the error to answer."""
    topic_image = ctx.broker.image.topics.get(topic)
    partition_log = ctx.broker.logs.get(topic, partition)
    if topic_image is None or not 0 <= partition < len(topic_image.partitions) or partition_log is None:
        return ctx.broker.missing_log_error(topic, partition)
    partition_image = topic_image.partitions[partition]
    if ctx.broker.led_log(topic, partition) is None:  # led elsewhere, or this node's metadata is stale
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    return partition_image, partition_log


def delete_records(ctx: RequestContext, topic: str, partition: int, offset: int) -> dict[str, Any]:
    if not ctx.authorized(AclOperation.DELETE, ResourceType.TOPIC, topic):
        return {"partition_index": partition, "low_watermark": -1, "error_code": int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)}
    found = leader_log(ctx, topic, partition)
    if isinstance(found, ErrorCode):
        return {"partition_index": partition, "low_watermark": -1, "error_code": int(found)}
    _, partition_log = found
    if offset == HIGH_WATERMARK:
        offset = partition_log.high_watermark
    try:
        if offset < 0:
            raise OffsetOutOfRange(f"offset {offset} is negative")
        low_watermark = partition_log.advance_log_start(offset)
    except OffsetOutOfRange:
        return {"partition_index": partition, "low_watermark": -1, "error_code": int(ErrorCode.OFFSET_OUT_OF_RANGE)}
    return {"partition_index": partition, "low_watermark": low_watermark, "error_code": 0}


@handles(21, 0, 2)
async def handle_delete_records(ctx: RequestContext, request: Any) -> Any:
    await ctx.broker.logs.in_step_with(ctx.broker.image)
    return ctx.respond(throttle_time=0, topics=[
        {"name": t.name, "partitions": [delete_records(ctx, t.name, p.partition_index, p.offset) for p in t.partitions]}
        for t in request.topics
    ])
