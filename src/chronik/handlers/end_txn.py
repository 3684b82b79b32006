"""EndTxn (key 26): commit or abort the producer's ongoing transaction.

Answered once the decision (PrepareCommit/PrepareAbort) is durable in the
metadata log, as Kafka answers it; the markers follow (a transaction with group
offsets, or with a partition another node leads, is answered once complete:
see :mod:`chronik.txn.coordinator`); a retry of a decision already completed is
answered NONE, the opposite decision INVALID_TXN_STATE.  v5 (KIP-890 part 2,
an epoch bump per transaction) is not served.
"""

from __future__ import annotations

from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles
from .txn_errors import fenced_for_version


@handles(26, 0, 4)
async def handle_end_txn(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
    error = await ctx.broker.transactions.end_txn(request.transactional_id, request.producer_id,
                                                 request.producer_epoch, bool(request.committed))
    return ctx.respond(throttle_time=0, error_code=int(fenced_for_version(error, ctx.api_version, 2)))
