"""JoinGroup (key 11): join a group and wait for its rebalance (see :mod:`chronik.groups.group`).

v0 has no rebalance timeout (the session timeout is used); v4+ hands a new
member its id with MEMBER_ID_REQUIRED first (KIP-394); v5+ carries
``group.instance.id`` (static membership, KIP-345); v9 tells a rejoining
static leader to skip the assignment (KIP-814).
"""

from __future__ import annotations

from typing import Any

from ..groups import JoinRequest
from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(11, 0, 9)
async def handle_join_group(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED), generation_id=-1,
                           protocol_type=None, protocol_name=None if ctx.api_version >= 7 else "", leader="",
                           skip_assignment=False, member_id=request.member_id, members=[])
    session_timeout_ms = int(request.session_timeout.total_seconds() * 1000)
    rebalance_timeout = getattr(request, "rebalance_timeout", None)
    join = JoinRequest(
        member_id=request.member_id,
        group_instance_id=getattr(request, "group_instance_id", None),
        client_id=ctx.header.client_id or "",
        client_host=f"/{ctx.client_host}",
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=session_timeout_ms if rebalance_timeout is None else int(rebalance_timeout.total_seconds() * 1000),
        protocol_type=request.protocol_type,
        protocols=tuple((p.name, p.metadata) for p in request.protocols),
        require_known_member_id=ctx.api_version >= 4,
    )
    answer = await ctx.broker.groups.join(request.group_id, join)
    nullable_protocol = ctx.api_version >= 7
    return ctx.respond(
        throttle_time=0,
        error_code=int(answer.error),
        generation_id=answer.generation_id,
        protocol_type=answer.protocol_type,
        protocol_name=answer.protocol_name if answer.protocol_name is not None or nullable_protocol else "",
        leader=answer.leader,
        skip_assignment=answer.skip_assignment,
        member_id=answer.member_id,
        members=[{"member_id": m, "group_instance_id": i, "metadata": md} for m, i, md in answer.members],
    )
