"""ListGroups (key 16): every group with members or committed offsets; v4+ filter by state, v5+ by type.

Filters compare case-insensitively, as Kafka does.  Every group is a
``classic`` group (the KIP-848 consumer protocol is not served).
"""

from __future__ import annotations

from typing import Any

from ..groups.coordinator import GROUP_TYPE
from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(16, 0, 5)
async def handle_list_groups(ctx: RequestContext, request: Any) -> Any:
    states = {s.lower() for s in getattr(request, "states_filter", ())}
    types = {t.lower() for t in getattr(request, "types_filter", ())}
    # DESCRIBE on the cluster shows every group; otherwise those the principal may describe (as Kafka)
    every = ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER, log_denial=False)
    groups = [
        {"group_id": g.group_id, "protocol_type": g.protocol_type, "group_state": g.state, "group_type": GROUP_TYPE}
        for g in ctx.broker.groups.list_groups()
        if (not states or g.state.lower() in states) and (not types or GROUP_TYPE in types)
        and (every or ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id, log_denial=False))
    ]
    return ctx.respond(throttle_time=0, error_code=0, groups=groups)
