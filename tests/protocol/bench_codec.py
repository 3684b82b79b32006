"""Micro-benchmark of the message codec: chronik's decode/encode vs raw kio.

Not a test (pytest does not collect it).  Run from the repository root::

    python -m tests.protocol.bench_codec

Prints the best of several runs, in microseconds per call, for a typical
ProduceRequest v9 (one topic; one or ten partitions, each with a 10-record,
~1.2 KiB batch) and the matching ProduceResponse v9.
"""

from __future__ import annotations

import datetime
import io
import timeit
from collections.abc import Callable

from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.produce.v9.response import PartitionProduceResponse, ProduceResponse, TopicProduceResponse
from kio.serial import entity_reader, entity_writer

from chronik.protocol import Record, decode_request, decode_request_frame, encode_batch, encode_request, encode_response
from chronik.protocol.prescan import prescan


def best_microseconds(call: Callable[[], object], number: int = 20_000, repeat: int = 7) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def produce_request(partitions: int) -> ProduceRequest:
    records = [Record(i, 1_700_000_000_000 + i, b"key-%d" % i, b"v" * 100) for i in range(10)]
    batch = bytes(encode_batch(records))
    return ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(
            TopicProduceData(
                name="events",
                partition_data=tuple(PartitionProduceData(index=i, records=batch) for i in range(partitions)),
            ),
        ),
    )


def produce_response(partitions: int) -> ProduceResponse:
    return ProduceResponse(
        responses=(
            TopicProduceResponse(
                name="events",
                partition_responses=tuple(
                    PartitionProduceResponse(index=i, error_code=ErrorCode.none, base_offset=1000, record_errors=())
                    for i in range(partitions)
                ),
            ),
        ),
        throttle_time=datetime.timedelta(0),
    )


def report(partitions: int) -> None:
    read_raw = entity_reader(ProduceRequest)
    write_raw = entity_writer(ProduceResponse)
    request = produce_request(partitions)
    frame = b"".join(encode_request(0, 9, 1, "bench", request))
    body = frame[frame.index(b"bench") + len(b"bench") + 1 :]  # after the header's empty tagged fields
    response = produce_response(partitions)

    def kio_encode() -> bytes:
        with io.BytesIO() as out:
            write_raw(out, response)
            return out.getvalue()

    rows: list[tuple[str, Callable[[], object], int]] = [
        ("decode, raw kio", lambda: read_raw(body, 0), 20_000),
        ("decode_request", lambda: decode_request(0, 9, body), 20_000),
        ("  of which prescan", lambda: prescan(ProduceRequest, body, 0), 20_000),
        ("decode_request_frame", lambda: decode_request_frame(frame), 20_000),
        ("encode response, raw kio", kio_encode, 5_000),
        ("encode_response", lambda: encode_response(0, 9, 1, response), 5_000),
    ]
    print(f"ProduceRequest v9, 1 topic x {partitions} partition(s), {len(body)} byte body")
    for label, call, number in rows:
        print(f"  {label:<26} {best_microseconds(call, number):7.2f} us")


def main() -> None:
    for partitions in (1, 10):
        report(partitions)


if __name__ == "__main__":
    main()
