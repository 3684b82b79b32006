"""ListTransactions (key 66): the transactional ids this node coordinates (``kafka-transactions.sh list``).

Filters: states (Kafka's names; unknown ones are echoed in
``unknown_state_filters``), producer ids, and (v1+) ``duration_filter``:
only transactions running longer than that many milliseconds (how operators
find hanging ones).  A node that does not coordinate lists nothing (as a Kafka
broker leading no ``__transaction_state`` partition); while the coordinator
is loading it answers COORDINATOR_LOAD_IN_PROGRESS.
"""

from __future__ import annotations

import time
from typing import Any

from ..protocol import ErrorCode
from ..txn.state import COMPLETE_ABORT, COMPLETE_COMMIT, EMPTY, ONGOING, PREPARE_ABORT, PREPARE_COMMIT
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles

STATES = (EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT, COMPLETE_ABORT, "PrepareEpochFence", "Dead")


@handles(66, 0, 1)
async def handle_list_transactions(ctx: RequestContext, request: Any) -> Any:
    coordinator = ctx.broker.transactions
    refused = coordinator.availability()
    unknown = [s for s in request.state_filters if s not in STATES]
    if refused == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
        return ctx.respond(throttle_time=0, error_code=int(refused), unknown_state_filters=unknown,
                           transaction_states=[])
    duration = getattr(request, "duration_filter", -1)
    now = int(time.time() * 1000)
    listed = []
    for txn in coordinator.transactions() if refused is None else []:
        if request.state_filters and txn.state not in request.state_filters:
            continue
        if request.producer_id_filters and txn.producer_id not in request.producer_id_filters:
            continue
        if duration >= 0 and (txn.state != ONGOING or now - txn.started_ms <= duration):
            continue
        if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, txn.transactional_id,
                              log_denial=False):  # as Kafka: listed only if the principal may describe it
            continue
        listed.append({"transactional_id": txn.transactional_id, "producer_id": txn.producer_id,
                       "transaction_state": txn.state})
    return ctx.respond(throttle_time=0, error_code=0, unknown_state_filters=unknown, transaction_states=listed)
