"""InitProducerId (key 22): producer ids for idempotent producers.

Ids come from blocks allocated through the metadata log, so they are unique
across restarts.  Transactions are not supported: a request with a
transactional id is refused (the ApiVersions list has no transaction APIs,
and FindCoordinator answers COORDINATOR_NOT_AVAILABLE for them).  An existing
idempotent producer re-initialising (v3+, KIP-360) gets a fresh id.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


@handles(22, 0, 4)
async def handle_init_producer_id(ctx: RequestContext, request: Any) -> Any:
    if request.transactional_id is not None and not ctx.authorized(
            AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
                           producer_id=-1, producer_epoch=-1)
    if request.transactional_id is None and not (
            ctx.authorized(AclOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, log_denial=False)
            or ctx.authorized_any(AclOperation.WRITE, ResourceType.TOPIC)):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                           producer_id=-1, producer_epoch=-1)
    if request.transactional_id is not None:
        ctx.warn_unsupported("transactions", f"InitProducerId with transactional.id {request.transactional_id!r}")
        return ctx.respond(
            throttle_time=0, error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED), producer_id=-1, producer_epoch=-1
        )
    producer_id = await ctx.broker.next_producer_id()
    return ctx.respond(throttle_time=0, error_code=0, producer_id=producer_id, producer_epoch=0)
