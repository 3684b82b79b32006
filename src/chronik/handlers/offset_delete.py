"""OffsetDelete (key 47): delete a group's committed offsets of some partitions.

Group-level errors: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP (members of an
unknown protocol type), INVALID_GROUP_ID.  Per partition:
UNKNOWN_TOPIC_OR_PARTITION, GROUP_SUBSCRIBED_TO_TOPIC (a member of the group
subscribes to the topic).
"""

from __future__ import annotations

from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles


@handles(47, 0, 0)
async def handle_offset_delete(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.DELETE, ResourceType.GROUP, request.group_id):
        return ctx.respond(error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), throttle_time=0, topics=[])
    refused = {t.name for t in request.topics if not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, t.name)}
    wanted = [(t.name, p.partition_index) for t in request.topics if t.name not in refused for p in t.partitions]
    error, errors = await ctx.broker.groups.delete_offsets(request.group_id, wanted)
    if error:
        return ctx.respond(error_code=int(error), throttle_time=0, topics=[])
    codes = iter(errors)
    return ctx.respond(
        error_code=0,
        throttle_time=0,
        topics=[
            {"name": t.name, "partitions": [{"partition_index": p.partition_index,
                                             "error_code": int(ErrorCode.TOPIC_AUTHORIZATION_FAILED if t.name in refused
                                                               else next(codes))}
                                            for p in t.partitions]}
            for t in request.topics
        ],
    )
