"""DescribeCluster (key 60, v0-v1): the brokers, the cluster id and the controller.

The broker list is the one Metadata gives (:func:`.metadata.brokers_of`);
the controller is this node, or in cluster mode the Raft leader (-1 while
there is none).  Cluster authorized operations are not
computed (Kafka's "not requested" value is sent).  ``endpoint_type`` (v1)
must be 1 (brokers): 2 (controllers) is UNSUPPORTED_ENDPOINT_TYPE, as on a
Kafka broker, and any other value INVALID_REQUEST; both with no brokers.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from .metadata import brokers_of
from ..metadata.acls import AclOperation, ResourceType
from .registry import NOT_REQUESTED, RequestContext, handles

ENDPOINT_BROKERS = 1
ENDPOINT_CONTROLLERS = 2


@handles(60, 0, 1)
async def handle_describe_cluster(ctx: RequestContext, request: Any) -> Any:
    endpoint_type = getattr(request, "endpoint_type", ENDPOINT_BROKERS)
    answer: dict[str, Any] = {
        "throttle_time": 0, "error_code": 0, "error_message": None, "endpoint_type": endpoint_type,
        "cluster_id": ctx.broker.cluster_id, "controller_id": ctx.broker.controller_id, "brokers": [],
        "cluster_authorized_operations": ctx.authorized_operations(ResourceType.CLUSTER)
        if getattr(request, "include_cluster_authorized_operations", False) else NOT_REQUESTED,
    }
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.CLUSTER):
        answer.update(error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                      error_message=f"{ctx.principal} may not DESCRIBE the cluster")
    elif endpoint_type == ENDPOINT_CONTROLLERS:
        answer.update(error_code=int(ErrorCode.UNSUPPORTED_ENDPOINT_TYPE),
                      error_message="this is a broker: ask it for brokers (endpoint type 1), not controllers")
    elif endpoint_type != ENDPOINT_BROKERS:
        answer.update(error_code=int(ErrorCode.INVALID_REQUEST), error_message=f"unknown endpoint type {endpoint_type}")
    else:
        answer["brokers"] = [{"broker_id": b["node_id"], **b} for b in brokers_of(ctx)]
    return ctx.respond(answer)
