"""The hand-written ProduceResponse encoder writes exactly what kio writes, for every version."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chronik.protocol import encode_response, response_schema
from chronik.protocol.build import build
from chronik.protocol.produce_response import FIRST_VERSION, LAST_VERSION, PartitionProduceResult, encode_produce_response

partition = st.builds(
    PartitionProduceResult,
    index=st.integers(0, 2**31 - 1),
    error_code=st.sampled_from([0, 2, 3, 10, 45, 87]),
    base_offset=st.integers(-1, 2**63 - 1),
    log_append_time=st.one_of(st.just(-1), st.integers(0, 2**42)),
    log_start_offset=st.integers(-1, 2**63 - 1),
    error_message=st.one_of(st.none(), st.text(max_size=40)),
)
topics = st.lists(st.tuples(st.text(min_size=1, max_size=30), st.lists(partition, max_size=4)), max_size=4)


def kio_bytes(version: int, correlation_id: int, data: list[tuple[str, list[PartitionProduceResult]]], throttle: int) -> bytes:
    response = build(response_schema(0, version), {
        "throttle_time": throttle,
        "responses": [
            {"name": name, "partition_responses": [
                {"index": p.index, "error_code": p.error_code, "base_offset": p.base_offset,
                 "log_append_time": p.log_append_time, "log_start_offset": p.log_start_offset,
                 "record_errors": [], "error_message": p.error_message} for p in partitions]}
            for name, partitions in data
        ],
    })
    return b"".join(bytes(b) for b in encode_response(0, version, correlation_id, response))


@settings(max_examples=60, deadline=None)
@given(data=topics, correlation_id=st.integers(-(2**31), 2**31 - 1), throttle=st.integers(0, 10_000))
def test_byte_for_byte_equal_to_kio_for_every_version(data, correlation_id, throttle) -> None:  # type: ignore[no-untyped-def]
    for version in range(FIRST_VERSION, LAST_VERSION + 1):
        expected = kio_bytes(version, correlation_id, data, throttle)
        assert encode_produce_response(version, correlation_id, data, throttle) == expected, version
