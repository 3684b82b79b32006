"""DescribeProducers (key 61): the producer state of partitions this node leads.

Per partition: every producer id with state in the partition's log, its
epoch, last sequence, the max timestamp of its newest batch, the coordinator
epoch of its newest marker here (-1: none), and the first offset of its
ongoing transaction (-1: none) -- what ``kafka-transactions.sh find-hanging``
looks at, and what ``kafka-transactions.sh abort`` puts in its marker.  A
partition not led here gets the usual NOT_LEADER_OR_FOLLOWER /
UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from .registry import RequestContext, handles


@handles(61, 0, 0)
async def handle_describe_producers(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    topics = []
    for topic in request.topics:
        partitions = []
        for index in topic.partition_indexes:
            partition_log = await broker.partition_log(topic.name, index)
            if partition_log is None:
                partitions.append({"partition_index": index, "error_code": int(broker.missing_log_error(topic.name, index)),
                                   "active_producers": []})
                continue
            producers = [{"producer_id": p.producer_id, "producer_epoch": p.epoch, "last_sequence": p.last_sequence,
                          "last_timestamp": p.last_timestamp, "coordinator_epoch": p.coordinator_epoch,
                          "current_txn_start_offset": p.txn_start_offset}
                         for p in partition_log.producers.describe()]
            partitions.append({"partition_index": index, "error_code": int(ErrorCode.NONE), "active_producers": producers})
        topics.append({"name": topic.name, "partitions": partitions})
    return ctx.respond(throttle_time=0, topics=topics)
