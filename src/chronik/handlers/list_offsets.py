"""ListOffsets (key 2): earliest, latest, max-timestamp, or by timestamp.

Special timestamps: -2 earliest (log start offset), -1 latest (next offset
to be written, i.e. the high watermark: nothing above it is visible; with
isolation_level 1, READ_COMMITTED, the last stable offset, once the markers
of transactions already answered decided are written), -3
(v7+) the record with the largest timestamp.  A timestamp >= 0 gives the
first record whose timestamp is at least it, at record granularity, or
offset -1 when there is none.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3


def partition_offset(index: int, code: ErrorCode, timestamp: int = -1, offset: int = -1) -> dict[str, Any]:
    return {
        "partition_index": index,
        "error_code": int(code),
        "old_style_offsets": [] if offset < 0 else [offset],
        "timestamp": timestamp,
        "offset": offset,
        "leader_epoch": 0 if code == ErrorCode.NONE else -1,
    }


@handles(2, 1, 7)
async def handle_list_offsets(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    topics = []
    for list_topic in request.topics:
        partitions = []
        topics.append({"name": list_topic.name, "partitions": partitions})
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, list_topic.name):
            partitions.extend(partition_offset(p.partition_index, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                              for p in list_topic.partitions)
            continue
        for p in list_topic.partitions:
            partition_log = await broker.partition_log(list_topic.name, p.partition_index)
            if partition_log is None:
                partitions.append(partition_offset(p.partition_index, broker.missing_log_error(list_topic.name, p.partition_index)))
                continue
            target = p.timestamp
            if target == LATEST:
                # READ_COMMITTED (isolation_level 1, v2+) reads up to the last stable offset
                committed = getattr(request, "isolation_level", 0) == 1
                if committed:  # after a commit answered, its marker may still be on its way here
                    await broker.transactions.wait_markers_written([(list_topic.name, p.partition_index)])
                latest = partition_log.last_stable_offset if committed else partition_log.high_watermark
                partitions.append(partition_offset(p.partition_index, ErrorCode.NONE, -1, latest))
            elif target == EARLIEST:
                partitions.append(partition_offset(p.partition_index, ErrorCode.NONE, -1, partition_log.log_start_offset))
            elif target == MAX_TIMESTAMP:
                found = partition_log.max_timestamp()
                offset, timestamp = found if found is not None else (-1, -1)
                partitions.append(partition_offset(p.partition_index, ErrorCode.NONE, timestamp, offset))
            elif target >= 0:
                found = partition_log.offset_for_timestamp(target)
                offset, timestamp = found if found is not None else (-1, -1)
                partitions.append(partition_offset(p.partition_index, ErrorCode.NONE, timestamp, offset))
            else:
                partitions.append(partition_offset(p.partition_index, ErrorCode.INVALID_REQUEST))
    return ctx.respond(throttle_time=0, topics=topics)
