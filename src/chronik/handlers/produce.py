"""Produce (key 0): validate, assign offsets, append durably, answer.

Per partition: the ``records`` field is split into batches (v2 only), each
checked (length, CRC-32C, record count, compression id) and appended exactly
as sent apart from the base offset (and LogAppendTime stamping on topics
configured for it).  A topic whose ``compression.type`` names a codec gets
every batch in another codec recompressed before the append, as Kafka does
(``producer``, the default, keeps the zero-copy path).  A compacted topic
(``cleanup.policy`` with ``compact``) refuses a batch holding a record
without a key with INVALID_RECORD, as Kafka's ``LogValidator`` does.  With acks=1 or acks=all the response waits until every
batch is durable (on one node the in-sync replicas are this node, so acks=all
means the same); acks=0 gets no response.  In cluster mode, for a partition
with more than one replica, acks=all also waits until the high watermark
passes the batches, i.e. until every in-sync replica has them durable (see
:mod:`chronik.cluster.replication`): it is refused with NOT_ENOUGH_REPLICAS
while the ISR is smaller than ``min.insync.replicas``, answered
NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below it meanwhile, and
REQUEST_TIMED_OUT if the request's timeout passes first.  A batch refused by the
idempotent-producer rules fails its partition with the error those rules give;
a retried batch is answered with its original offset and not stored again.

Transactional batches (the transactional bit, v3+ requests naming a
``transactional_id``) are checked against the transaction coordinator's state
first (KIP-890 part 1): the producer id must be the transactional id's
(INVALID_PRODUCER_ID_MAPPING), its epoch not older (INVALID_PRODUCER_EPOCH),
and the partition must have been added to the ongoing transaction
(INVALID_TXN_STATE), so a zombie or a confused producer cannot leave a
transaction hanging in a partition.  A fenced producer's older epoch is also
refused by the partition's producer state once the abort marker carries the
bumped epoch.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import trio

from ..log.partition import AppendInfo, PartitionLog
from ..log.producer_state import SequenceError
from ..metadata import CommandRejected
from ..metadata.acls import AclOperation, ResourceType
from ..metadata.topic_configs import is_compacted
from ..protocol import (
    BatchHeader,
    Compression,
    ErrorCode,
    InvalidRecord,
    ProtocolError,
    first_null_key,
    parse_batch_header,
    recompress_batch,
    split_batches,
    validate_batch,
)
from ..storage import StorageError
from ..protocol.produce_response import FIRST_VERSION, LAST_VERSION, PartitionProduceResult, encode_produce_response
from ..txn import TransactionCoordinator
from .registry import Encoded, RequestContext, handles

log = logging.getLogger(__name__)


def partition_result(index: int, code: ErrorCode, base_offset: int = -1, log_append_time: int = -1,
                     log_start_offset: int = -1, message: str | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "error_code": int(code),
        "base_offset": base_offset,
        "log_append_time": log_append_time,
        "log_start_offset": log_start_offset,
        "record_errors": [],
        "error_message": message,
    }


TOPIC_CODECS = {"uncompressed": Compression.NONE, "gzip": Compression.GZIP, "snappy": Compression.SNAPPY,
                "lz4": Compression.LZ4, "zstd": Compression.ZSTD}
"""A topic's ``compression.type`` -> the codec its batches are stored in (``producer``: absent, kept as sent)."""

TransactionCheck = Callable[[BatchHeader], "ErrorCode | None"]


def append_records(partition_log: PartitionLog, records: bytes | None, max_message_bytes: int,
                   log_append_time: bool, check_transaction: TransactionCheck | None = None, *,
                   compacted: bool = False, compression: Compression | None = None) -> tuple[list[AppendInfo], int, int]:
    """Validate and append every batch of one partition's ``records``.

    ``check_transaction`` vets each transactional batch (None: refuse them);
    ``compacted``: refuse records without a key; ``compression``: store the
    batches in this codec (None: as sent).
    Returns the appends, their bytes and their record count; raises ProtocolError/SequenceError.
    """
    if not records:
        raise InvalidRecord("the produce request has no record batch for this partition")
    batches = split_batches(bytearray(records), max_message_bytes)
    headers = [validate_batch(batch) for batch in batches]
    for header in headers:
        if header.is_control:
            raise InvalidRecord("clients may not produce control batches")
        if header.is_transactional:
            if check_transaction is None:
                raise SequenceError(ErrorCode.INVALID_TXN_STATE,
                                    "a transactional batch needs the request's transactional_id")
            refused = check_transaction(header)
            if refused is not None:
                raise SequenceError(refused, f"transactional batch of producer {header.producer_id} epoch "
                                             f"{header.producer_epoch} refused: {refused.name}")
    if compacted:
        for batch, header in zip(batches, headers):
            if first_null_key(batch, header) is not None:
                raise InvalidRecord(f"Compacted topic cannot accept message without key in topic partition "
                                    f"{partition_log.topic}-{partition_log.partition}.")
    if compression is not None:
        for n, (batch, header) in enumerate(zip(batches, headers)):
            if header.compression is not compression:
                batches[n] = memoryview(recompress_batch(batch, header, compression))
                headers[n] = parse_batch_header(batches[n])
    now = int(time.time() * 1000) if log_append_time else None
    infos = [partition_log.append_batch(batch, header, log_append_time=now) for batch, header in zip(batches, headers)]
    return infos, sum(h.size for h in headers), sum(h.records_count for h in headers)


def encoded_response(ctx: RequestContext, responses: list[dict[str, Any]]) -> Encoded:
    """The ProduceResponse, written by the hand-written encoder (the hot path)."""
    topics = [
        (t["name"], [
            PartitionProduceResult(p["index"], p["error_code"], p["base_offset"], p["log_append_time"],
                                   p["log_start_offset"], p["error_message"])
            for p in t["partition_responses"]
        ])
        for t in responses
    ]
    errors = frozenset(p.error_code for _, partitions in topics for p in partitions if p.error_code)
    return ctx.encoded(encode_produce_response(ctx.api_version, ctx.header.correlation_id, topics), errors)


@handles(0, FIRST_VERSION, LAST_VERSION)
async def handle_produce(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    metrics = broker.metrics
    acks = request.acks
    transactional_id = getattr(request, "transactional_id", None)
    responses: list[dict[str, Any]] = []
    waits: list[tuple[dict[str, Any], PartitionLog, AppendInfo, tuple[str, int, int] | None]] = []
    if transactional_id is not None and not ctx.authorized(
            AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
        return encoded_response(ctx, [
            {"name": t.name, "partition_responses": [
                partition_result(p.index, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED) for p in t.partition_data]}
            for t in request.topic_data]) if acks != 0 else None
    for topic_data in request.topic_data:
        name = topic_data.name
        results: list[dict[str, Any]] = []
        responses.append({"name": name, "partition_responses": results})
        if not ctx.authorized(AclOperation.WRITE, ResourceType.TOPIC, name):
            results.extend(partition_result(p.index, ErrorCode.TOPIC_AUTHORIZATION_FAILED)
                           for p in topic_data.partition_data)
            continue
        topic = broker.image.topics.get(name)
        if (topic is None and acks in (0, 1, -1) and transactional_id is None
                and broker.config.auto_create_topics_enable and ctx.may_create_topic(name)):
            try:
                topic = await broker.auto_create_topic(name, ctx.origin)
            except CommandRejected:
                topic = None
        configs = broker.topic_config(topic) if topic is not None else {}
        for partition_data in topic_data.partition_data:
            index = partition_data.index
            if acks not in (0, 1, -1):
                results.append(partition_result(index, ErrorCode.INVALID_REQUIRED_ACKS))
                continue
            if transactional_id is not None and topic is not None:
                # Before this node's leadership is checked (just below), not after: the wait lets
                # leadership move, and a batch appended once this node follows would sit in its
                # log where the leader has another (the replicas would diverge).
                await broker.transactions.wait_partition_added(transactional_id, name, index)
                topic = broker.image.topics.get(name)
            partition_log = await broker.partition_log(name, index) if topic is not None else None
            if partition_log is None:
                results.append(partition_result(index, broker.missing_log_error(name, index)))
                continue
            replicated = broker.consensus is not None and len(topic.partitions[index].replicas) > 1
            in_sync = None  # acks=all on a replicated partition: (topic, partition, min.insync.replicas, leader epoch)
            if replicated and acks == -1:
                in_sync = (name, index, int(configs["min.insync.replicas"]), topic.partitions[index].leader_epoch)
                isr = topic.partitions[index].isr
                if len(isr) < in_sync[2]:
                    results.append(partition_result(
                        index, ErrorCode.NOT_ENOUGH_REPLICAS, log_start_offset=partition_log.log_start_offset,
                        message=f"the ISR {isr} is smaller than min.insync.replicas={in_sync[2]}"))
                    continue
            check = None
            if transactional_id is not None:
                check = functools.partial(_verify, broker.transactions, transactional_id, name, index)
            try:
                infos, nbytes, nrecords = append_records(
                    partition_log, partition_data.records, int(configs["max.message.bytes"]),
                    configs["message.timestamp.type"] == "LogAppendTime", check,
                    compacted=is_compacted(configs["cleanup.policy"]),
                    compression=TOPIC_CODECS.get(configs["compression.type"]),
                )
            except ProtocolError as exc:
                log.warning("produce to %s-%d from %s refused: %s", name, index, ctx.client_host, exc)
                results.append(partition_result(index, exc.error_code, log_start_offset=partition_log.log_start_offset,
                                                message=str(exc)))
                continue
            except SequenceError as exc:
                results.append(partition_result(index, exc.error, log_start_offset=partition_log.log_start_offset,
                                                message=str(exc)))
                continue
            except StorageError as exc:
                log.error("produce to %s-%d failed: %s", name, index, exc)
                results.append(partition_result(index, ErrorCode.KAFKA_STORAGE_ERROR, message=str(exc)))
                continue
            metrics.bytes_in.inc(nbytes)
            metrics.records_appended.inc(nrecords)
            result = partition_result(index, ErrorCode.NONE, infos[0].base_offset, infos[0].log_append_time,
                                      partition_log.log_start_offset)
            results.append(result)
            waits.append((result, partition_log, infos[-1], in_sync))
    if acks == 0:
        return None

    appended_at = time.perf_counter()

    async def wait_in_sync(result: dict[str, Any], partition_log: PartitionLog, info: AppendInfo,
                           in_sync: tuple[str, int, int, int]) -> None:
        """acks=all on a replicated partition: wait until every in-sync replica has the batch."""
        timeout = request.timeout.total_seconds()
        with trio.move_on_after(timeout if timeout > 0 else math.inf):
            await partition_log.wait_high_watermark(info.last_offset + 1)
        name, index, min_insync, epoch = in_sync
        topic = broker.image.topics.get(name)
        partition = topic.partitions[index] if topic is not None and index < len(topic.partitions) else None
        if partition is None or (partition.leader, partition.leader_epoch) != (broker.node_id, epoch):
            # leadership moved while the ISR was copying: the new leader may not keep the records
            result.update(error_code=int(ErrorCode.NOT_LEADER_OR_FOLLOWER), base_offset=-1,
                          error_message="this node stopped leading the partition before the ISR had the records")
            return
        if partition_log.high_watermark <= info.last_offset:
            result.update(error_code=int(ErrorCode.REQUEST_TIMED_OUT), base_offset=-1,
                          error_message="the in-sync replicas did not all store the records in time")
            return
        isr = partition.isr
        if len(isr) < min_insync:
            result.update(error_code=int(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND), base_offset=-1,
                          error_message=f"the ISR shrank to {isr}, below min.insync.replicas={min_insync}")

    async def respond_when_durable() -> Any:
        for result, partition_log, info, in_sync in waits:
            try:
                await partition_log.wait_durable(info)
            except StorageError as exc:
                result.update(error_code=int(ErrorCode.KAFKA_STORAGE_ERROR), base_offset=-1, error_message=str(exc))
                continue
            if in_sync is not None:
                await wait_in_sync(result, partition_log, info, in_sync)
        if waits:
            metrics.produce_duration.observe(time.perf_counter() - appended_at)
        return encoded_response(ctx, responses)

    if not waits:
        return await respond_when_durable()
    # Appended in request order above; the wait for the fsync is deferred so
    # the connection's next requests join the same group commit.  A wait for
    # the fsync alone may complete in line (``ready``); one for the ISR has a
    # deadline, so it needs a task of its own.
    ready: Callable[[], bool] | None = None
    if all(in_sync is None and info.appended is not None for _, _, info, in_sync in waits):
        if len(waits) == 1:
            _, partition_log, info, _ = waits[0]
            ready = functools.partial(partition_log.durable_settled, info)
        else:
            ready = functools.partial(_all_durable_settled, waits)
    return ctx.later(respond_when_durable, ready)


def _verify(transactions: TransactionCoordinator, transactional_id: str, topic: str, partition: int,
            header: BatchHeader) -> ErrorCode | None:
    return transactions.verify_partition(transactional_id, header.producer_id, header.producer_epoch, topic, partition)


def _all_durable_settled(waits: list[tuple[Any, PartitionLog, AppendInfo, Any]]) -> bool:
    return all(partition_log.durable_settled(info) for _, partition_log, info, _ in waits)
