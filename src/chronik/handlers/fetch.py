"""Fetch (key 1): durable batches below the high watermark, with long-poll.

A fetch is answered at once when it has ``min_bytes`` of data (or an error
to report); otherwise it is parked until any of its partitions' high
watermark advances -- and re-checked then, so it is answered as soon as data
arrives -- or until ``max_wait`` passes.  Limits: ``partition_max_bytes``
per partition and ``max_bytes`` in all -- never more than the broker's
``fetch.max.bytes``, whatever the request asks for -- except that the first
batch found is always sent whole so a consumer can make progress past a batch
larger than its limits (as Kafka does).  A parked fetch reserves its limit in
the connection's budget of queued answers (:mod:`chronik.server.connection`).

From v13 on, topics are named by topic id (as Metadata reports it) in the
request and the response; an unknown id gets UNKNOWN_TOPIC_ID.

Fetch sessions (KIP-227, v7+): the broker declines to create sessions (it
answers session id 0, which the protocol allows), so clients keep sending
full fetch requests; an incremental request naming a session id gets
FETCH_SESSION_ID_NOT_FOUND.  Batches are served exactly as stored.

Transactions: ``last_stable_offset`` is the partition's true LSO in every
answer.  With ``isolation_level`` 1 (READ_COMMITTED, v4+) only batches below
the LSO are served, with ``aborted_transactions`` listing every aborted
transaction whose data may lie in the returned range (marker at or after the
fetch offset, first offset below the end of the last returned batch), which
the client uses to drop aborted records; a long-poll then waits for the LSO.
A READ_COMMITTED fetch first waits for the markers of transactions the
coordinator here has answered decided (normally a millisecond or so), so a
producer reading after its commit or abort finds it decided.
"""

from __future__ import annotations

import time
from functools import partial
from collections.abc import Iterator
from typing import Any

import trio

from ..log.partition import DataWatch, OffsetOutOfRange, PartitionLog
from ..metadata.acls import AclOperation, ResourceType
from ..protocol import BufferList, ErrorCode, parse_batch_header
from .registry import RequestContext, handles

TOPIC_IDS_VERSION = 13


def partition_data(index: int, code: ErrorCode, partition_log: PartitionLog | None,
                   records: BufferList | bytes = b"", aborted: list[dict[str, int]] | None = None) -> dict[str, Any]:
    hw = partition_log.high_watermark if partition_log is not None else -1
    return {
        "partition_index": index,
        "error_code": int(code),
        "high_watermark": hw,
        "last_stable_offset": partition_log.last_stable_offset if partition_log is not None else -1,
        "log_start_offset": partition_log.log_start_offset if partition_log is not None else -1,
        "aborted_transactions": aborted,
        "preferred_read_replica": -1,
        "records": records,
    }


def read_once(ctx: RequestContext, request: Any) -> tuple[list[dict[str, Any]], int, bool, list[PartitionLog]]:
    """One pass over the requested partitions: (responses, bytes, any error, logs read)."""
    started = time.perf_counter()
    try:
        return _read_once(ctx, request)
    finally:
        ctx.broker.metrics.fetch_duration.observe(time.perf_counter() - started)


def _read_once(ctx: RequestContext, request: Any) -> tuple[list[dict[str, Any]], int, bool, list[PartitionLog]]:
    broker = ctx.broker
    budget = response_limit(ctx, request)
    total = 0
    errors = False
    logs: list[PartitionLog] = []
    responses = []
    by_id = ctx.api_version >= TOPIC_IDS_VERSION
    read_committed = getattr(request, "isolation_level", 0) == 1
    for fetch_topic in request.topics:
        if by_id:
            topic = broker.image.topics_by_id.get(fetch_topic.topic_id)
            name = topic.name if topic is not None else None
            missing = ErrorCode.UNKNOWN_TOPIC_ID
        else:
            name = fetch_topic.topic
            missing = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        partitions = []
        responses.append({"topic": name, "topic_id": getattr(fetch_topic, "topic_id", None), "partitions": partitions})
        if name is not None and not ctx.authorized(AclOperation.READ, ResourceType.TOPIC, name):
            partitions.extend(partition_data(p.partition, ErrorCode.TOPIC_AUTHORIZATION_FAILED, None)
                              for p in fetch_topic.partitions)
            errors = True
            continue
        for fetch_partition in fetch_topic.partitions:
            index = fetch_partition.partition
            partition_log = broker.led_log(name, index) if name is not None else None
            if partition_log is None:
                partitions.append(partition_data(index, broker.missing_log_error(name, index, missing), None))
                errors = True
                continue
            logs.append(partition_log)
            limit = min(fetch_partition.partition_max_bytes, budget - total)
            fetch_offset = fetch_partition.fetch_offset
            end = partition_log.last_stable_offset if read_committed else None
            try:
                batches = partition_log.read(fetch_offset, int(limit), end=end) if limit > 0 or total == 0 else []
            except OffsetOutOfRange:
                partitions.append(partition_data(index, ErrorCode.OFFSET_OUT_OF_RANGE, partition_log))
                errors = True
                continue
            aborted = None
            if read_committed:
                aborted = []
                if batches:
                    last = batches[-1]
                    upper = parse_batch_header(last).last_offset + 1
                    aborted = [{"producer_id": txn.producer_id, "first_offset": txn.first_offset}
                               for txn in partition_log.aborted_transactions(fetch_offset, upper)]
            records = BufferList(batches)  # served by reference, never joined
            total += len(records)
            partitions.append(partition_data(index, ErrorCode.NONE, partition_log, records, aborted))
    return responses, total, errors, logs


def _requested(ctx: RequestContext, request: Any) -> Iterator[tuple[str, int]]:
    """The (topic name, partition) pairs a Fetch asks for (unknown topic ids left out)."""
    by_id = ctx.api_version >= TOPIC_IDS_VERSION
    for fetch_topic in request.topics:
        if by_id:
            topic = ctx.broker.image.topics_by_id.get(fetch_topic.topic_id)
            name = topic.name if topic is not None else None
        else:
            name = fetch_topic.topic
        if name is not None:
            for fetch_partition in fetch_topic.partitions:
                yield name, fetch_partition.partition


def response_limit(ctx: RequestContext, request: Any) -> int:
    """Bytes of records one response may carry: the request's ``max_bytes`` (v3+), capped by ``fetch.max.bytes``."""
    cap = ctx.broker.config.fetch_max_bytes
    return min(request.max_bytes, cap) if ctx.api_version >= 3 else cap


@handles(1, 4, 16)
async def handle_fetch(ctx: RequestContext, request: Any) -> Any:
    session_id = getattr(request, "session_id", 0)
    session_epoch = getattr(request, "session_epoch", -1)
    if session_id != 0 and session_epoch not in (0, -1):
        return ctx.respond(throttle_time=0, error_code=int(ErrorCode.FETCH_SESSION_ID_NOT_FOUND), session_id=0, responses=[])
    deadline = trio.current_time() + request.max_wait.total_seconds()
    await ctx.broker.logs.in_step_with(ctx.broker.image)
    if getattr(request, "isolation_level", 0) == 1:  # a decided transaction's markers may be on their way
        await ctx.broker.transactions.wait_markers_written(_requested(ctx, request))
    responses, total, errors, logs = read_once(ctx, request)

    def answered() -> bool:
        return total >= request.min_bytes or errors or trio.current_time() >= deadline or not logs

    async def long_poll(arrival: DataWatch | None = None) -> Any:
        """Park until a partition's high watermark moves (then re-read) or max_wait passes."""
        nonlocal responses, total, errors, logs
        try:
            while not answered():
                if arrival is None:
                    arrival = DataWatch(logs)  # registered in the same step as the read before it
                with trio.move_on_at(deadline):
                    await arrival.wait()
                arrival.close()
                arrival = None
                responses, total, errors, logs = read_once(ctx, request)
        finally:
            if arrival is not None:
                arrival.close()
        ctx.broker.metrics.bytes_out.inc(total)
        return ctx.respond(throttle_time=0, error_code=0, session_id=0, responses=responses)

    if answered():
        return await long_poll()
    # A parked fetch is deferred, so it does not hold up the requests behind it.
    # Its watch is registered now, before the requests behind it run: a produce
    # pipelined after it must wake it even if handled before the deferred task starts.
    arrival = DataWatch(logs)
    asked = sum(p.partition_max_bytes for t in request.topics for p in t.partitions)
    return ctx.later(partial(long_poll, arrival), reserve=max(0, min(asked, response_limit(ctx, request))))
