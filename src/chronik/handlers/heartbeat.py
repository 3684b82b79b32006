"""Heartbeat (key 12): keep a member alive; REBALANCE_IN_PROGRESS tells it to rejoin."""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(12, 0, 4)
async def handle_heartbeat(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED))
    error = ctx.broker.groups.heartbeat(
        request.group_id, request.member_id, getattr(request, "group_instance_id", None), request.generation_id,
    )
    return ctx.respond(throttle_time=0, error_code=int(error))
