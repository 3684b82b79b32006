"""AddPartitionsToTxn (key 24): partitions join a producer's transaction.

v0-3 (producers) name one transaction; v4 (KIP-890, broker to coordinator)
a batch of them, each possibly ``verify_only`` (is the partition already in
the ongoing transaction? NONE or INVALID_TXN_STATE, nothing is added).  A
partition that does not exist fails with UNKNOWN_TOPIC_OR_PARTITION and the
others of its transaction with OPERATION_NOT_ATTEMPTED (Kafka's rule); the
coordinator's errors (:mod:`chronik.txn.state`) apply to every partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles
from .txn_errors import fenced_for_version


def _results(errors: dict[tuple[str, int], ErrorCode]) -> list[dict[str, Any]]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), code in errors.items():
        by_topic.setdefault(topic, []).append({"partition_index": partition, "partition_error_code": int(code)})
    return [{"name": topic, "results_by_partition": results} for topic, results in by_topic.items()]


async def _add(ctx: RequestContext, transactional_id: str, producer_id: int, producer_epoch: int,
               topics: Iterable[Any], verify_only: bool) -> dict[tuple[str, int], ErrorCode]:
    image = ctx.broker.image
    wanted = [(t.name, int(p)) for t in topics for p in t.partitions]
    missing = {key for key in wanted
               if (topic := image.topics.get(key[0])) is None or not 0 <= key[1] < len(topic.partitions)}
    if missing:
        return {key: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if key in missing else ErrorCode.OPERATION_NOT_ATTEMPTED
                for key in wanted}
    # as Kafka: WRITE on the transactional id, then WRITE on every topic (the others: not attempted)
    if not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
        return {key: ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED for key in wanted}
    denied = {name for name in {key[0] for key in wanted} if not ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name)}
    if denied:
        return {key: ErrorCode.TOPIC_AUTHORIZATION_FAILED if key[0] in denied else ErrorCode.OPERATION_NOT_ATTEMPTED
                for key in wanted}
    errors = await ctx.broker.transactions.add_partitions(transactional_id, producer_id, producer_epoch, wanted,
                                                         verify_only=verify_only)
    return {key: fenced_for_version(code, ctx.api_version, 2) for key, code in errors.items()}


@handles(24, 0, 4)
async def handle_add_partitions_to_txn(ctx: RequestContext, request: Any) -> Any:
    if ctx.api_version >= 4:
        results = []
        for txn in request.transactions:
            errors = await _add(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics,
                                txn.verify_only)
            results.append({"transactional_id": txn.transactional_id, "topic_results": _results(errors)})
        return ctx.respond(throttle_time=0, error_code=0, results_by_transaction=results)
    errors = await _add(ctx, request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                        request.v3_and_below_producer_epoch, request.v3_and_below_topics, False)
    return ctx.respond(throttle_time=0, results_by_topic_v3_and_below=_results(errors))
