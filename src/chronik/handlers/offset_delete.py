"""OffsetDelete (key 47): delete a group's committed offsets of some partitions.

Group-level errors: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP (members of an
unknown protocol type), INVALID_GROUP_ID.  Per partition:
UNKNOWN_TOPIC_OR_PARTITION, GROUP_SUBSCRIBED_TO_TOPIC (a member of the group
subscribes to the topic).
"""

from __future__ import annotations

from typing import Any

from .registry import RequestContext, handles


@handles(47, 0, 0)
async def handle_offset_delete(ctx: RequestContext, request: Any) -> Any:
    wanted = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    error, errors = await ctx.broker.groups.delete_offsets(request.group_id, wanted)
    if error:
        return ctx.respond(error_code=int(error), throttle_time=0, topics=[])
    codes = iter(errors)
    return ctx.respond(
        error_code=0,
        throttle_time=0,
        topics=[
            {"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": int(next(codes))}
                                            for p in t.partitions]}
            for t in request.topics
        ],
    )
