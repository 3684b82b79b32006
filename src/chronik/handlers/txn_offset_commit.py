"""TxnOffsetCommit (key 28): a consumer group's offsets, inside a transaction.

The offsets are staged durably (a ``StageTxnOffsets`` metadata command) and
become the group's committed offsets only when the transaction commits (its
CompleteCommit, applied after every marker); an abort drops them.  Until
then OffsetFetch does not show them, and answers UNSTABLE_OFFSET_COMMIT to
``require_stable`` requests.  The group must have been added with
AddOffsetsToTxn (else INVALID_TXN_STATE); the producer id and epoch must be
the transaction's (INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED --
INVALID_PRODUCER_EPOCH before v3).  The group generation and member (v3+)
are not checked.
"""

from __future__ import annotations

from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles
from .txn_errors import fenced_for_version


@handles(28, 0, 4)
async def handle_txn_offset_commit(ctx: RequestContext, request: Any) -> Any:
    entries = [(t.name, p.partition_index, p) for t in request.topics for p in t.partitions]
    refused = ctx.broker.groups.availability()
    if refused is None and not request.group_id:
        refused = ErrorCode.INVALID_GROUP_ID
    if refused is None and not ctx.authorized(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        refused = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    if refused is None and not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        refused = ErrorCode.GROUP_AUTHORIZATION_FAILED
    if refused is None:  # as Kafka: a topic the principal may not READ fails alone, the rest are not attempted
        denied = {t.name for t in request.topics if not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, t.name)}
        if denied:
            by_topic = {t.name: [{"partition_index": p.partition_index,
                                  "error_code": int(ErrorCode.TOPIC_AUTHORIZATION_FAILED if t.name in denied
                                                    else ErrorCode.OPERATION_NOT_ATTEMPTED)} for p in t.partitions]
                        for t in request.topics}
            return ctx.respond(throttle_time=0, topics=[{"name": n, "partitions": ps} for n, ps in by_topic.items()])
    codes: list[ErrorCode]
    if refused is not None:
        codes = [refused] * len(entries)
    else:
        offsets = [[topic, partition, p.committed_offset, getattr(p, "committed_leader_epoch", -1), p.committed_metadata]
                   for topic, partition, p in entries]
        error, results = await ctx.broker.transactions.stage_offsets(
            request.transactional_id, request.group_id, request.producer_id, request.producer_epoch, offsets)
        if error != ErrorCode.NONE:
            codes = [fenced_for_version(error, ctx.api_version, 3)] * len(entries)
        else:
            codes = [ErrorCode.NONE if r is None else ErrorCode[r] for r in results]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition, _), code in zip(entries, codes):
        by_topic.setdefault(topic, []).append({"partition_index": partition, "error_code": int(code)})
    return ctx.respond(throttle_time=0, topics=[{"name": n, "partitions": ps} for n, ps in by_topic.items()])
