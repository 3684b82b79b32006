"""FindCoordinator (key 10): one node coordinates every group and every transaction.

v0-3 ask for one key, v4 for a batch (``coordinator_keys``).  A GROUP key
(type 0) and a TRANSACTION key (type 1) get this node's advertised address,
or in cluster mode the controller's (COORDINATOR_NOT_AVAILABLE while there is
no registered controller), so every node gives the same answer.  (Group
membership is not replicated: after a controller change the members rejoin
the new one; transaction state is, in the metadata log, and the new
controller resumes every transaction under way.)  Any other key type is
INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles

KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def coordinator_for(ctx: RequestContext, key: str, key_type: int) -> dict[str, Any]:
    broker = ctx.broker
    if key_type == KEY_TYPE_GROUP and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, key):
        return {"key": key, "node_id": -1, "host": "", "port": -1,
                "error_code": int(ErrorCode.GROUP_AUTHORIZATION_FAILED), "error_message": None}
    if key_type == KEY_TYPE_TRANSACTION and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, key):
        return {"key": key, "node_id": -1, "host": "", "port": -1,
                "error_code": int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), "error_message": None}
    if key_type in (KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION):
        if broker.consensus is None or broker.controller_id == broker.node_id:
            host, port = ctx.advertised_address
        elif (controller := broker.image.brokers.get(broker.controller_id)) is not None \
                and (endpoint := controller.endpoint(ctx.listener)) is not None:
            host, port = endpoint
        else:
            return {"key": key, "node_id": -1, "host": "", "port": -1,
                    "error_code": int(ErrorCode.COORDINATOR_NOT_AVAILABLE), "error_message": "no controller elected yet"}
        return {"key": key, "node_id": broker.controller_id, "host": host, "port": port,
                "error_code": 0, "error_message": None}
    return {"key": key, "node_id": -1, "host": "", "port": -1, "error_code": int(ErrorCode.INVALID_REQUEST),
            "error_message": f"unknown coordinator key type {key_type}"}


@handles(10, 0, 4)
async def handle_find_coordinator(ctx: RequestContext, request: Any) -> Any:
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    if ctx.api_version >= 4:
        return ctx.respond(throttle_time=0, coordinators=[coordinator_for(ctx, key, key_type) for key in request.coordinator_keys])
    return ctx.respond(coordinator_for(ctx, request.key, key_type), throttle_time=0)
