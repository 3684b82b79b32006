"""LeaveGroup (key 13): members leave (v0-2: one by member id; v3+: a batch, static members by instance id).

v3+ answers per member; v0-2 carry the one member's error at the top level.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(13, 0, 5)
async def handle_leave_group(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), members=[])
    if ctx.api_version >= 3:
        leaving = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        leaving = [(request.member_id, None)]
    error, member_errors = ctx.broker.groups.leave(request.group_id, leaving)
    if ctx.api_version < 3:
        return ctx.respond(throttle_time=0, error_code=int(error if error else member_errors[0]))
    return ctx.respond(
        throttle_time=0,
        error_code=int(error),
        members=[
            {"member_id": member_id, "group_instance_id": instance_id, "error_code": int(code)}
            for (member_id, instance_id), code in zip(leaving, member_errors)
        ],
    )
