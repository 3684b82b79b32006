"""OffsetCommit (key 8): committed offsets, durable (one metadata command per request) before the answer.

A member of a group commits with its generation (ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, REBALANCE_IN_PROGRESS when it may not);
generation -1 commits without membership into a group that has no members
(consumers that only ``assign()``, admin clients).  v2-4's retention time is
ignored (offsets are kept until deleted); v6+ stores the leader epoch; v9+
answers GROUP_ID_NOT_FOUND instead of ILLEGAL_GENERATION for a member commit
to a group that does not exist.
"""

from __future__ import annotations

from typing import Any

from ..groups import OffsetToCommit
from ..metadata.acls import AclOperation, ResourceType
from ..protocol import ErrorCode
from .registry import RequestContext, handles


@handles(8, 2, 9)
async def handle_offset_commit(ctx: RequestContext, request: Any) -> Any:
    if not ctx.authorized(AclOperation.READ, ResourceType.GROUP, request.group_id):
        return ctx.respond(throttle_time=0, topics=[
            {"name": topic.name, "partitions": [
                {"partition_index": p.partition_index, "error_code": int(ErrorCode.GROUP_AUTHORIZATION_FAILED)}
                for p in topic.partitions]}
            for topic in request.topics])
    # as Kafka: the partitions of topics the principal may not READ are refused, the others committed
    refused = {t.name for t in request.topics if not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, t.name)}
    offsets = [
        OffsetToCommit(topic.name, p.partition_index, p.committed_offset,
                       getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
        for topic in request.topics if topic.name not in refused
        for p in topic.partitions
    ]
    groups = ctx.broker.groups
    staged = groups.stage_commit(
        request.group_id,
        request.member_id,
        getattr(request, "group_instance_id", None),
        request.generation_id_or_member_epoch,
        offsets,
        unknown_group=ErrorCode.GROUP_ID_NOT_FOUND if ctx.api_version >= 9 else ErrorCode.ILLEGAL_GENERATION,
    )

    async def respond_when_durable() -> Any:
        errors = iter(await groups.finish_commit(staged))
        return ctx.respond(
            throttle_time=0,
            topics=[
                {"name": topic.name,
                 "partitions": [{"partition_index": p.partition_index,
                                 "error_code": int(ErrorCode.TOPIC_AUTHORIZATION_FAILED if topic.name in refused
                                                   else next(errors))}
                                for p in topic.partitions]}
                for topic in request.topics
            ],
        )

    # Appended in request order; the fsync wait is deferred so that commits a
    # client pipelines share one group commit.
    return ctx.later(respond_when_durable) if staged.pending is not None else await respond_when_durable()
