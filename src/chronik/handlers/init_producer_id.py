"""InitProducerId (key 22): producer ids for idempotent and transactional producers.

Ids come from blocks allocated through the metadata log, so they are unique
across restarts.  An idempotent producer (no transactional id) gets a fresh
id, also when re-initialising (v3+, KIP-360).  With a ``transactional_id`` the
transaction coordinator (:mod:`chronik.txn`) answers: a new id at epoch 0, or
the id's epoch bumped (fencing every older producer of it, whose open
transaction is aborted first); CONCURRENT_TRANSACTIONS while a transaction
of the id is completing; INVALID_TRANSACTION_TIMEOUT for a timeout above
``transaction.max.timeout.ms``; PRODUCER_FENCED (INVALID_PRODUCER_EPOCH
before v4) for a caller naming an older producer id/epoch (v3+).
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles
from .txn_errors import fenced_for_version


@handles(22, 0, 5)
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
        timeout_ms = int(request.transaction_timeout.total_seconds() * 1000)
        error, producer_id, epoch = await ctx.broker.transactions.init_producer_id(
            request.transactional_id, timeout_ms, getattr(request, "producer_id", -1),
            getattr(request, "producer_epoch", -1))
        return ctx.respond(throttle_time=0, error_code=int(fenced_for_version(error, ctx.api_version, 4)),
                           producer_id=producer_id, producer_epoch=epoch)
    producer_id = await ctx.broker.next_producer_id()
    return ctx.respond(throttle_time=0, error_code=0, producer_id=producer_id, producer_epoch=0)
