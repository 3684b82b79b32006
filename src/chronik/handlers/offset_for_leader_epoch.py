"""OffsetForLeaderEpoch (key 23, v2-v4): where a leader epoch ends in a partition's log.

Consumers (KIP-320) and followers ask it to detect log truncation.  Per
partition, after the checks Kafka makes in this order:

* ``current_leader_epoch`` (-1: not checked) below the partition's leader
  epoch is FENCED_LEADER_EPOCH (the asker is behind), above it
  UNKNOWN_LEADER_EPOCH (this node is behind);
* a partition this node does not have is UNKNOWN_TOPIC_OR_PARTITION, one it
  does not lead NOT_LEADER_OR_FOLLOWER.

The answer for ``leader_epoch`` equal to the partition's current epoch is
that epoch and the log end offset (the epoch is still open, so it "ends"
where the next record goes; followers may be ahead of the high watermark, so
it is the end offset, not the high watermark).  For a later epoch it is
Kafka's "undefined" (-1, -1) with no error.  An earlier epoch is answered
from the log's epoch cache (:meth:`PartitionLog.epoch_end`): the largest
epoch at or below it that this log has, ending where the next one starts --
so a consumer that read under epoch 0 and asks the new leader after a
failover learns that epoch 0 ends where it read, not that its log was
truncated.  An epoch older than every epoch here is answered with itself and
the start of the oldest one, as Kafka's leader-epoch cache does.  Errors
carry (-1, -1).
"""

from __future__ import annotations

from typing import Any

from ..metadata import TopicImage
from ..protocol import ErrorCode
from .delete_records import leader_log
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles

UNDEFINED = -1


def _fencing_error(topic: TopicImage | None, partition: int, current_leader_epoch: int) -> ErrorCode | None:
    if current_leader_epoch == UNDEFINED or topic is None or not 0 <= partition < len(topic.partitions):
        return None
    leader_epoch = topic.partitions[partition].leader_epoch
    if current_leader_epoch < leader_epoch:
        return ErrorCode.FENCED_LEADER_EPOCH
    if current_leader_epoch > leader_epoch:
        return ErrorCode.UNKNOWN_LEADER_EPOCH
    return None


def epoch_end(ctx: RequestContext, topic: str, request: Any) -> dict[str, Any]:
    answer = {"partition": request.partition, "error_code": 0, "leader_epoch": UNDEFINED, "end_offset": UNDEFINED}
    if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, topic):
        answer["error_code"] = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        return answer
    fencing = _fencing_error(ctx.broker.image.topics.get(topic), request.partition, request.current_leader_epoch)
    found = fencing if fencing is not None else leader_log(ctx, topic, request.partition)
    if isinstance(found, ErrorCode):
        answer["error_code"] = int(found)
        return answer
    partition_image, partition_log = found
    if request.leader_epoch == partition_image.leader_epoch:
        answer.update(leader_epoch=partition_image.leader_epoch, end_offset=partition_log.log_end_offset)
    elif 0 <= request.leader_epoch < partition_image.leader_epoch:
        epoch, end = partition_log.epoch_end(request.leader_epoch)
        answer.update(leader_epoch=epoch if epoch >= 0 else request.leader_epoch, end_offset=end)
    return answer


@handles(23, 2, 4)
async def handle_offset_for_leader_epoch(ctx: RequestContext, request: Any) -> Any:
    await ctx.broker.logs.in_step_with(ctx.broker.image)
    return ctx.respond(throttle_time=0, topics=[
        {"topic": t.topic, "partitions": [epoch_end(ctx, t.topic, p) for p in t.partitions]} for t in request.topics
    ])
