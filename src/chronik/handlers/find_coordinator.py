"""FindCoordinator (key 10): one node coordinates every group; transactions are not supported yet.

v0-3 ask for one key, v4 for a batch (``coordinator_keys``).  A GROUP key
(type 0) gets this node's advertised address, or in cluster mode the
controller's (COORDINATOR_NOT_AVAILABLE while there is no registered
controller), so every node gives the same answer.  (Group state is not
replicated: after a controller change the members rejoin the new one.)  A TRANSACTION key
(type 1) gets COORDINATOR_NOT_AVAILABLE until transactions exist; any other
key type is INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from .registry import RequestContext, handles

KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def coordinator_for(ctx: RequestContext, key: str, key_type: int) -> dict[str, Any]:
    broker = ctx.broker
    if key_type == KEY_TYPE_GROUP:
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
    if key_type == KEY_TYPE_TRANSACTION:
        ctx.warn_unsupported("transactions", f"FindCoordinator for transactional.id {key!r}")
        code, message = ErrorCode.COORDINATOR_NOT_AVAILABLE, "transactions are not supported by this broker"
    else:
        code, message = ErrorCode.INVALID_REQUEST, f"unknown coordinator key type {key_type}"
    return {"key": key, "node_id": -1, "host": "", "port": -1, "error_code": int(code), "error_message": message}


@handles(10, 0, 4)
async def handle_find_coordinator(ctx: RequestContext, request: Any) -> Any:
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    if ctx.api_version >= 4:
        return ctx.respond(throttle_time=0, coordinators=[coordinator_for(ctx, key, key_type) for key in request.coordinator_keys])
    return ctx.respond(coordinator_for(ctx, request.key, key_type), throttle_time=0)
