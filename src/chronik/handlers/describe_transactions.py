"""DescribeTransactions (key 65): the coordinator's state of transactional ids (``kafka-transactions.sh describe``).

Per id: NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS) from a node that
does not coordinate transactions, TRANSACTIONAL_ID_NOT_FOUND for an unknown
id; else its state (Kafka's names: Empty, Ongoing, PrepareCommit, ...),
timeout, start time (-1 unless a transaction is under way), producer id and
epoch, and its partitions.
"""

from __future__ import annotations

import datetime
from typing import Any

from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


NO_START = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(milliseconds=1)
"""-1 on the wire (the codec would read a plain -1 as "null", which this field cannot be)."""


@handles(65, 0, 0)
async def handle_describe_transactions(ctx: RequestContext, request: Any) -> Any:
    coordinator = ctx.broker.transactions
    refused = coordinator.availability()
    states = []
    for transactional_id in request.transactional_ids:
        allowed = ctx.authorized(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id)
        txn = coordinator.state(transactional_id) if refused is None and allowed else None
        if txn is None:
            error = refused or (ErrorCode.TRANSACTIONAL_ID_NOT_FOUND if allowed
                                else ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            states.append({"error_code": int(error), "transactional_id": transactional_id, "transaction_state": "",
                           "transaction_timeout": 0, "transaction_start_time": NO_START, "producer_id": -1,
                           "producer_epoch": -1, "topics": []})
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, partition in txn.partitions:
            by_topic.setdefault(topic, []).append(partition)
        states.append({
            "error_code": 0, "transactional_id": transactional_id, "transaction_state": txn.state,
            "transaction_timeout": txn.timeout_ms,
            "transaction_start_time": txn.started_ms if txn.state == "Ongoing" else NO_START,
            "producer_id": txn.producer_id, "producer_epoch": txn.producer_epoch,
            "topics": [{"topic": topic, "partitions": partitions} for topic, partitions in by_topic.items()],
        })
    return ctx.respond(throttle_time=0, transaction_states=states)
