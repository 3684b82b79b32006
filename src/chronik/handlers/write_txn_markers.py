"""WriteTxnMarkers (key 27): a transaction coordinator on another node has markers written here.

Each marker (commit or abort of one producer's transaction) is appended to
every named partition this node leads, and answered once durable (and, for a
replicated partition, below the high watermark: acks=all rules), per
partition; a partition not led here gets NOT_LEADER_OR_FOLLOWER (the
coordinator looks the leader up again and retries).  v0 is gone from Kafka 4
and not served; v2 (KIP-890 part 2's transaction version) neither.
"""

from __future__ import annotations

from typing import Any

from ..protocol import ErrorCode
from ..txn.markers import LocalMarkerWriter
from .registry import RequestContext, handles


@handles(27, 1, 1)
async def handle_write_txn_markers(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    writer = LocalMarkerWriter(lambda: broker.image, broker.partition_log, broker.node_id)
    answers = []
    for marker in request.markers:
        wanted = [(t.name, int(p)) for t in marker.topics for p in t.partition_indexes]
        failed = await writer.write_markers(marker.producer_id, marker.producer_epoch, bool(marker.transaction_result),
                                            marker.coordinator_epoch, wanted)
        by_topic: dict[str, list[dict[str, int]]] = {}
        for key in wanted:
            code = failed.get(key, ErrorCode.NONE)
            if code == ErrorCode.NONE and broker.image.topics.get(key[0]) is None:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            by_topic.setdefault(key[0], []).append({"partition_index": key[1], "error_code": int(code)})
        answers.append({"producer_id": marker.producer_id,
                        "topics": [{"name": n, "partitions": ps} for n, ps in by_topic.items()]})
    return ctx.respond(markers=answers)
