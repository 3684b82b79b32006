"""OffsetFetch (key 9): committed offsets (-1 where none), for one group (v1-7) or several (v8+).

Null topics (v2+) ask for every committed offset of the group.  A node that
does not coordinate groups answers NOT_COORDINATOR (its copy of the offsets
may lag the coordinator's).
Offsets staged by TxnOffsetCommit are not shown until their transaction
commits; with ``require_stable`` (v7+) a partition that has such a pending
offset is answered UNSTABLE_OFFSET_COMMIT (offset -1) so the consumer retries.  An empty group id is INVALID_GROUP_ID.  v9's member
id and epoch belong to the consumer protocol and are not checked for
classic groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles


def fetch_group(ctx: RequestContext, group_id: str, topics: Sequence[Any] | None,
                require_stable: bool = False) -> dict[str, Any]:
    """One group's answer: ``topics`` and its group-level ``error_code``."""
    wanted = None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
    refused = ErrorCode.INVALID_GROUP_ID if not group_id else ctx.broker.groups.availability()
    if refused is None and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        refused = ErrorCode.GROUP_AUTHORIZATION_FAILED
    if refused is not None:
        error = refused
        found: list[tuple[str, int, Any]] = [(topic, partition, None) for topic, partition in wanted or ()]
    else:
        error = ErrorCode.NONE
        found = ctx.broker.groups.committed_offsets(group_id, wanted)
    pending: set[tuple[str, int]] = set()
    if require_stable and error == ErrorCode.NONE:
        for staged in ctx.broker.image.pending_txn_offsets.get(group_id, {}).values():
            pending.update(staged)
    # as Kafka: a named topic the principal may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED;
    # with "all topics" such topics are left out
    may_describe: dict[str, bool] = {}
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, partition, committed in found:
        partition_error = int(error) if ctx.api_version < 2 else 0
        if refused is None:
            if topic not in may_describe:
                may_describe[topic] = ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, topic,
                                                     log_denial=wanted is not None)
            if not may_describe[topic]:
                if wanted is None:
                    continue
                committed, partition_error = None, int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        if (topic, partition) in pending and partition_error == 0:
            committed, partition_error = None, int(ErrorCode.UNSTABLE_OFFSET_COMMIT)
        by_topic.setdefault(topic, []).append({
            "partition_index": partition,
            "committed_offset": -1 if committed is None else committed.offset,
            "committed_leader_epoch": -1 if committed is None else committed.leader_epoch,
            "metadata": "" if committed is None else committed.metadata,
            "error_code": partition_error,
        })
    return {
        "group_id": group_id,
        "error_code": int(error),
        "topics": [{"name": name, "partitions": partitions} for name, partitions in by_topic.items()],
    }


@handles(9, 1, 9)
async def handle_offset_fetch(ctx: RequestContext, request: Any) -> Any:
    if ctx.api_version >= 8:
        return ctx.respond(throttle_time=0, groups=[fetch_group(ctx, g.group_id, g.topics, request.require_stable)
                                                    for g in request.groups])
    return ctx.respond(fetch_group(ctx, request.group_id, request.topics, getattr(request, "require_stable", False)),
                       throttle_time=0)
