"""AddOffsetsToTxn (key 25): the transaction will also commit a consumer group's offsets.

The group's offsets are then sent with TxnOffsetCommit and become visible
when the transaction commits (see :mod:`chronik.txn.coordinator`).
"""

from __future__ import annotations

from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles
from .txn_errors import fenced_for_version


@handles(25, 0, 3)
async def handle_add_offsets_to_txn(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.GROUP_AUTHORIZATION_FAILED))
    error = await ctx.broker.transactions.add_offsets(request.transactional_id, request.producer_id,
                                                     request.producer_epoch, request.group_id)
    return ctx.respond(throttle_time=0, error_code=int(fenced_for_version(error, ctx.api_version, 2)))
