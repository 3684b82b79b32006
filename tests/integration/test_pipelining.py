"""Requests pipelined on one connection: handled in order, answered in order, waits overlapped."""

from __future__ import annotations

import struct
import time

from chronik.protocol import decode_response

from .brokerproc import BrokerProcess
from .raw import Raw, create_topic, fetch_frame, produce_frame


def correlation_id(response: bytes) -> int:
    return struct.unpack_from(">i", response)[0]


def test_pipelined_produces_are_answered_in_order_with_consecutive_offsets(broker: BrokerProcess) -> None:
    with Raw(broker) as raw:
        create_topic(raw, "pipe")
        raw.send(b"".join(produce_frame("pipe", 0, b"v%d" % i, correlation_id=i) for i in range(200)))
        offsets = []
        for i in range(200):
            response = raw.read_frame()
            assert response is not None
            assert correlation_id(response) == i
            (topic,) = decode_response(0, 9, response, 5).responses
            (partition,) = topic.partition_responses
            assert partition.error_code == 0
            offsets.append(partition.base_offset)
    assert offsets == list(range(200))


def test_a_parked_fetch_does_not_hold_up_a_produce_behind_it(broker: BrokerProcess) -> None:
    """Fetch (max_wait 8 s, empty partition) then Produce on the same connection: the produce is
    handled at once, its record wakes the fetch, and both answers arrive, in order, quickly.

    Repeated on fresh partitions: the produce behind the fetch may be handled before the
    deferred fetch task starts, and that append must still wake it (a lost wake-up once
    made one round in a few wait the whole 8 s)."""
    rounds = 30
    with Raw(broker) as raw:
        create_topic(raw, "park", partitions=rounds)
        for partition in range(rounds):
            started = time.monotonic()
            raw.send(fetch_frame("park", 0, partition=partition, max_wait_ms=8000, correlation_id=1)
                     + produce_frame("park", partition, b"x", correlation_id=2))
            first, second = raw.read_frame(), raw.read_frame()
            elapsed = time.monotonic() - started
            assert first is not None and second is not None
            assert (correlation_id(first), correlation_id(second)) == (1, 2)
            (topic,) = decode_response(1, 12, first, 5).responses
            assert topic.partitions[0].high_watermark == 1
            assert elapsed < 4, f"round {partition}: the produce waited behind the parked fetch ({elapsed:.1f} s)"
