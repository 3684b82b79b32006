"""DeleteGroups (key 42): delete empty groups and their committed offsets.

Per group: GROUP_ID_NOT_FOUND (no members, no offsets), NON_EMPTY_GROUP (it
has members), INVALID_GROUP_ID (empty id).
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(42, 0, 2)
async def handle_delete_groups(ctx: RequestContext, request: Any) -> Any:
    results = []
    for group_id in request.groups_names:
        if not ctx.authorized(AclOperation.DELETE, ResourceType.GROUP, group_id):
            code = ErrorCode.GROUP_AUTHORIZATION_FAILED
        else:
            code = await ctx.broker.groups.delete_group(group_id) if group_id else ErrorCode.INVALID_GROUP_ID
        results.append({"group_id": group_id, "error_code": int(code)})
    return ctx.respond(throttle_time=0, results=results)
