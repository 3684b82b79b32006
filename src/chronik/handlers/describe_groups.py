"""DescribeGroups (key 15): state, protocol type and name, and members with their metadata and assignment.

Metadata, assignments and the protocol name are filled in Stable only, as
Kafka does.  A group that does not exist is described as Dead (v0-5) or
answered GROUP_ID_NOT_FOUND (v6+, as Kafka 4 does).
"""

from __future__ import annotations

from typing import Any

from ..groups import GroupState
from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import NOT_REQUESTED, RequestContext, handles



def describe_group(ctx: RequestContext, group_id: str, with_operations: bool = False) -> dict[str, Any]:
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return {"error_code": int(ErrorCode.GROUP_AUTHORIZATION_FAILED), "error_message": None, "group_id": group_id,
                "group_state": "", "protocol_type": "", "protocol_data": "", "members": [],
                "authorized_operations": NOT_REQUESTED}
    refused = ctx.broker.groups.availability()
    described = ctx.broker.groups.describe(group_id) if refused is None else None
    if described is None:
        missing = ctx.api_version >= 6
        error = refused if refused is not None else ErrorCode.GROUP_ID_NOT_FOUND if missing else ErrorCode.NONE
        return {
            "error_code": int(error),
            "error_message": (f"group {group_id!r} not found" if missing else None) if refused is None else
            "this node does not coordinate groups now",
            "group_id": group_id, "group_state": GroupState.DEAD.value, "protocol_type": "", "protocol_data": "",
            "members": [], "authorized_operations": NOT_REQUESTED,
        }
    return {
        "error_code": 0,
        "group_id": group_id,
        "group_state": described.state,
        "protocol_type": described.protocol_type,
        "protocol_data": described.protocol_name,
        "members": [
            {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
             "client_host": m.client_host, "member_metadata": m.metadata, "member_assignment": m.assignment}
            for m in described.members
        ],
        "authorized_operations": ctx.authorized_operations(ResourceType.GROUP, group_id) if with_operations
        else NOT_REQUESTED,
    }


@handles(15, 0, 6)
async def handle_describe_groups(ctx: RequestContext, request: Any) -> Any:
    return ctx.respond(throttle_time=0, groups=[describe_group(ctx, group_id, getattr(request, "include_authorized_operations", False))
                                             for group_id in request.groups])
