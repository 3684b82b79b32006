"""WriteTxnMarkers (key 27): a transaction coordinator on another node has markers written here.

Each marker (commit or abort of one producer's transaction) is appended to
every named partition this node leads, and answered once durable (and, for a
replicated partition, below the high watermark: acks=all rules), per
partition; a partition not led here gets NOT_LEADER_OR_FOLLOWER (the
coordinator looks the leader up again and retries), and one holding a marker
of that producer from a newer coordinator epoch TRANSACTION_COORDINATOR_FENCED
(the sender is a deposed coordinator; nothing is appended).

Before writing, a node that does not coordinate transactions itself waits (up
to :data:`CATCH_UP_SECONDS`) until its replicated copy of the coordinator's
state no longer shows the producer's transaction Ongoing at the marker's
epoch: the coordinator persisted the decision before sending the markers, and
once this node has applied it the KIP-890 check of Produce here refuses that
transaction's late batches, so none can land after its marker and leave a
transaction hanging.  Until then the partitions are answered
COORDINATOR_LOAD_IN_PROGRESS (retried).  The node that coordinates (a single
node; the controller) has the coordinator's state itself, so it does not wait:
a marker for a transaction it shows Ongoing comes from no decision of its own
but from an operator (``kafka-transactions.sh abort``, ``Admin.abortTransaction``),
and is written as Kafka writes it, refused only by the coordinator-epoch check.
On another node such an abort is answered COORDINATOR_LOAD_IN_PROGRESS after
the wait (it cannot be told from a marker whose decision this node has not
applied yet); an abort of a hanging transaction (one the coordinator no longer
shows Ongoing at that epoch) is written at once everywhere.  v0 is gone from
Kafka 4 and not served; v2 (KIP-890 part 2's transaction version) neither.
"""

from __future__ import annotations

from typing import Any

import trio

from ..protocol import ErrorCode
from ..txn.markers import LocalMarkerWriter
from .registry import RequestContext, handles


CATCH_UP_SECONDS = 5.0


async def caught_up(ctx: RequestContext, producer_id: int, producer_epoch: int) -> bool:
    """Whether this node coordinates transactions, or its metadata shows the producer's
    transaction decided (waits a while)."""
    if ctx.broker.transactions.availability() is None:
        return True  # the coordinator's own state: nothing to catch up with
    with trio.move_on_after(CATCH_UP_SECONDS):
        while True:
            ongoing = any(t.producer_id == producer_id and t.producer_epoch == producer_epoch and t.state == "Ongoing"
                          for t in ctx.broker.image.transactions.values())
            if not ongoing:
                return True
            await trio.sleep(0.01)
    return False


@handles(27, 1, 1)
async def handle_write_txn_markers(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    writer = LocalMarkerWriter(lambda: broker.image, broker.partition_log, broker.node_id, broker.clock)
    answers = []
    for marker in request.markers:
        wanted = [(t.name, int(p)) for t in marker.topics for p in t.partition_indexes]
        if not await caught_up(ctx, marker.producer_id, marker.producer_epoch):
            failed = {key: ErrorCode.COORDINATOR_LOAD_IN_PROGRESS for key in wanted}
        else:
            failed = await writer.write_markers(marker.producer_id, marker.producer_epoch,
                                                bool(marker.transaction_result), marker.coordinator_epoch, wanted)
        by_topic: dict[str, list[dict[str, int]]] = {}
        for key in wanted:
            code = failed.get(key, ErrorCode.NONE)
            if code == ErrorCode.NONE and broker.image.topics.get(key[0]) is None:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            by_topic.setdefault(key[0], []).append({"partition_index": key[1], "error_code": int(code)})
        answers.append({"producer_id": marker.producer_id,
                        "topics": [{"name": n, "partitions": ps} for n, ps in by_topic.items()]})
    return ctx.respond(markers=answers)
