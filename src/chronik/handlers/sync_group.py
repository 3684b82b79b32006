"""SyncGroup (key 14): the leader hands in the assignment; every member gets its own share, unchanged.

v3+ carries ``group.instance.id``; v5 names the protocol type and name, which
must match the group's (INCONSISTENT_GROUP_PROTOCOL otherwise).
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(14, 0, 5)
async def handle_sync_group(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), protocol_type=None,
                           protocol_name=None, assignment=b"")
    answer = await ctx.broker.groups.sync(
        request.group_id,
        request.member_id,
        getattr(request, "group_instance_id", None),
        request.generation_id,
        getattr(request, "protocol_type", None),
        getattr(request, "protocol_name", None),
        {a.member_id: a.assignment for a in request.assignments},
    )
    return ctx.respond(throttle_time=0, error_code=int(answer.error), protocol_type=answer.protocol_type,
                       protocol_name=answer.protocol_name, assignment=answer.assignment)
