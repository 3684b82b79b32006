from __future__ import annotations

import contextlib
import datetime
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.api_versions.v3.request import ApiVersionsRequest as KioApiVersionsRequestV3
from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
from kio.schema.errors import ErrorCode as KioErrorCode
from kio.schema.fetch.v12.response import FetchableTopicResponse, FetchResponse, PartitionData
from kio.schema.fetch.v15.request import FetchPartition, FetchRequest, FetchTopic, ReplicaState
from kio.schema.metadata.v12.response import MetadataResponse
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.produce.v9.response import PartitionProduceResponse, ProduceResponse, TopicProduceResponse

from chronik.protocol import (
    ErrorCode,
    FrameDecoder,
    MalformedMessage,
    UnsupportedVersion,
    decode_request,
    decode_request_frame,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
    known_api_versions,
    parse_response_header,
    peek_request_ids,
    request_schema,
    response_schema,
)
from chronik.protocol.prescan import prescan

from . import real_clients as kp


def joined(buffers: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(buffers)


def kafka_python_payload(request: object, correlation_id: int = 7, client_id: str = "golden") -> bytes:
    request.with_header(correlation_id=correlation_id, client_id=client_id)  # type: ignore[attr-defined]
    return bytes(request.encode(header=True))  # type: ignore[attr-defined]


def produce_v9(records: bytes | None = b"batch") -> ProduceRequest:
    return ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(TopicProduceData(name="events", partition_data=(PartitionProduceData(index=3, records=records),)),),
    )


# --- golden frames from kafka-python's independent encoder ---------------------------------


@pytest.mark.parametrize("version", [3, 7, 8, 9, 11])
def test_produce_request_from_kafka_python(version: int) -> None:
    request = kp.ProduceRequest[version](
        transactional_id="txn" if version >= 8 else None,
        acks=1,
        timeout_ms=1500,
        topic_data=[
            kp.ProduceRequest.TopicProduceData(
                name="events",
                partition_data=[
                    kp.ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=b"\x00" * 70),
                    kp.ProduceRequest.TopicProduceData.PartitionProduceData(index=1, records=None),
                ],
            )
        ],
    )
    header, body = decode_request_frame(kafka_python_payload(request, correlation_id=31))
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (0, version, 31, "golden")
    assert body.transactional_id == ("txn" if version >= 8 else None)
    assert (body.acks, body.timeout) == (1, datetime.timedelta(milliseconds=1500))
    [topic] = body.topic_data
    assert topic.name == "events"
    assert [(p.index, p.records) for p in topic.partition_data] == [(0, b"\x00" * 70), (1, None)]


@pytest.mark.parametrize("version", [0, 3, 4])
def test_api_versions_request_from_kafka_python(version: int) -> None:
    fields = {"client_software_name": "kafka-python", "client_software_version": "3.0"} if version >= 3 else {}
    header, body = decode_request_frame(kafka_python_payload(kp.ApiVersionsRequest[version](**fields)))
    assert (header.api_key, header.api_version, header.header_version) == (18, version, 2 if version >= 3 else 1)
    if version >= 3:
        assert (body.client_software_name, body.client_software_version) == ("kafka-python", "3.0")


@pytest.mark.parametrize("version", [4, 9, 12])
def test_metadata_request_with_null_and_listed_topics(version: int) -> None:
    listed = [kp.MetadataRequest.MetadataRequestTopic(name="a"), kp.MetadataRequest.MetadataRequestTopic(name="bb")]
    for topics in (None, listed):
        fields = {"topics": topics, "allow_auto_topic_creation": True}
        if 8 <= version <= 10:
            fields["include_cluster_authorized_operations"] = False
        if version >= 8:
            fields["include_topic_authorized_operations"] = False
        _header, body = decode_request_frame(kafka_python_payload(kp.MetadataRequest[version](**fields)))
        names = None if body.topics is None else [t.name for t in body.topics]
        assert names == (None if topics is None else ["a", "bb"])


# --- responses read back by kafka-python -----------------------------------------------------


def test_api_versions_response_v3_has_header_v0_and_leaves_default_tags_out() -> None:
    response = ApiVersionsResponse(
        error_code=ErrorCode.NONE,  # chronik's enum encodes like kio's
        api_keys=(
            ApiVersion(api_key=0, min_version=3, max_version=9),
            ApiVersion(api_key=18, min_version=0, max_version=3),
        ),
        throttle_time=datetime.timedelta(0),
    )
    payload = joined(encode_response(18, 3, 77, response))
    assert payload == (
        b"\x00\x00\x00\x4d"  # correlation id; header v0: no tagged-field byte
        b"\x00\x00"  # error_code
        b"\x03"  # 2 api keys, each with empty tags:
        b"\x00\x00\x00\x03\x00\x09\x00"  # Produce 3-9
        b"\x00\x12\x00\x00\x00\x03\x00"  # ApiVersions 0-3
        b"\x00\x00\x00\x00"  # throttle_time_ms
        b"\x00"  # no tagged field: supported/finalized features and zk_migration_ready at default
    )
    decoded = kp.ApiVersionsResponse[3].decode(payload, header=True)
    assert decoded.header.correlation_id == 77
    assert [(k.api_key, k.max_version) for k in decoded.api_keys] == [(0, 9), (18, 3)]


def test_produce_response_v9_read_by_kafka_python() -> None:
    response = ProduceResponse(
        responses=(
            TopicProduceResponse(
                name="events",
                partition_responses=(
                    PartitionProduceResponse(
                        index=3, error_code=KioErrorCode.none, base_offset=1234, log_start_offset=0, record_errors=()
                    ),
                ),
            ),
        ),
        throttle_time=datetime.timedelta(0),
    )
    payload = joined(encode_response(0, 9, 5, response))
    assert parse_response_header(payload, 1) == (5, 5)
    decoded = kp.ProduceResponse[9].decode(payload, header=True)
    [topic] = decoded.responses
    [partition] = topic.partition_responses
    assert (decoded.header.correlation_id, topic.name, partition.index, partition.base_offset) == (5, "events", 3, 1234)
    assert partition.log_append_time_ms == -1
    assert decode_response(0, 9, payload, 5) == response


def test_optional_tagged_fields_are_written_only_when_not_default() -> None:
    def partition(**tags: object) -> PartitionData:
        return PartitionData(
            partition_index=0,
            error_code=KioErrorCode.none,
            high_watermark=10,
            last_stable_offset=10,
            log_start_offset=0,
            aborted_transactions=(),
            records=b"",
            **tags,  # type: ignore[arg-type]
        )

    def encoded(p: PartitionData) -> bytes:
        response = FetchResponse(
            throttle_time=datetime.timedelta(0),
            error_code=KioErrorCode.none,
            session_id=0,
            responses=(FetchableTopicResponse(topic="t", partitions=(p,)),),
        )
        return joined(encode_response(1, 12, 1, response))

    default = encoded(partition())
    # header(5) throttle(4) error(2) session(4) topics(1) name(2) partitions(1) index(4) error(2)
    # hw(8) lso(8) lso(8) aborted(1) preferred replica(4) records(1), then the partition's tags:
    assert default[5 + 4 + 2 + 4 + 1 + 2 + 1 + 4 + 2 + 8 * 3 + 1 + 4 + 1 :] == b"\x00\x00\x00"
    with_leader = encoded(partition(current_leader=type(partition().current_leader)(leader_id=2, leader_epoch=5)))
    assert len(with_leader) > len(default)
    assert decode_response(1, 12, with_leader, 5).responses[0].partitions[0].current_leader.leader_id == 2


def test_record_payloads_are_not_copied_on_encode() -> None:
    records = bytes(range(256)) * 400
    response = FetchResponse(
        throttle_time=datetime.timedelta(0),
        error_code=KioErrorCode.none,
        session_id=0,
        responses=(
            FetchableTopicResponse(
                topic="t",
                partitions=(
                    PartitionData(
                        partition_index=0,
                        error_code=KioErrorCode.none,
                        high_watermark=1,
                        last_stable_offset=1,
                        log_start_offset=0,
                        aborted_transactions=(),
                        records=records,
                    ),
                ),
            ),
        ),
    )
    buffers = encode_response(1, 12, 9, response)
    assert any(buffer is records for buffer in buffers)
    assert decode_response(1, 12, joined(buffers), 5) == response


def test_encode_rejects_an_object_of_another_version() -> None:
    with pytest.raises(TypeError, match="v12"):
        encode_response(
            3,
            11,
            1,
            MetadataResponse(
                throttle_time=datetime.timedelta(0), brokers=(), cluster_id=None, controller_id=0, topics=()
            ),
        )


# --- unknown tagged fields (KIP-482) --------------------------------------------------------


def test_unknown_top_level_tags_are_skipped() -> None:
    request = KioApiVersionsRequestV3(client_software_name="x", client_software_version="1")
    body = joined(encode_request(18, 3, 1, "c", request))
    assert body.endswith(b"\x00")
    with_tags = body[:-1] + b"\x02" + b"\x05\x03abc" + b"\xe8\x07\x00"  # tags 5 and 1000 (a 2-byte varint)
    _header, decoded = decode_request_frame(with_tags)
    assert decoded == request


def test_unknown_tags_in_nested_array_elements_are_skipped() -> None:
    body = (
        b"\x00"  # transactional_id: null compact string
        b"\xff\xff"  # acks -1
        b"\x00\x00\x75\x30"  # timeout 30000 ms
        b"\x02"  # 1 topic
        b"\x07events"
        b"\x02"  # 1 partition
        b"\x00\x00\x00\x03"  # index 3
        b"\x06batch"  # records
        b"\x01\x09\x02hi"  # partition: 1 unknown tagged field: tag 9, 2 bytes
        b"\x02\x00\x00\x01\x01!"  # topic: 2 unknown tagged fields: tag 0 (empty), tag 1 (1 byte)
        b"\x00"  # request: no tags
    )
    assert decode_request(0, 9, body) == produce_v9()


def test_unknown_tag_inside_a_known_tagged_struct_is_skipped() -> None:
    request = FetchRequest(
        replica_state=ReplicaState(replica_id=4, replica_epoch=9),
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        topics=(
            FetchTopic(
                topic_id=uuid.UUID(int=1),
                partitions=(FetchPartition(partition=0, fetch_offset=5, partition_max_bytes=1024),),
            ),
        ),
        forgotten_topics_data=(),
    )
    body = joined(encode_request(1, 15, 1, None, request))
    # The body ends with the tag section: count 1, tag 1, size 13, INT32 + INT64 + empty tags.
    assert body[-16:-13] == b"\x01\x01\x0d" and body[-1:] == b"\x00"
    patched = body[:-16] + b"\x01\x01\x11" + body[-13:-1] + b"\x01\x07\x02zz"
    _header, decoded = decode_request_frame(patched)
    assert decoded == request


def test_known_tag_with_a_wrong_declared_size_is_malformed() -> None:
    request = FetchRequest(
        replica_state=ReplicaState(replica_id=4, replica_epoch=9),
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        topics=(),
        forgotten_topics_data=(),
    )
    body = joined(encode_request(1, 15, 1, None, request))
    patched = body[:-16] + b"\x01\x01\x0e" + body[-13:] + b"\x00"  # declares one byte more than it holds
    with pytest.raises(MalformedMessage, match="tagged field 1"):
        decode_request_frame(patched)


# --- hostile and random input --------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_key", "version", "body"),
    [
        # Each of these made kio's native reader allocate n pointers up front, n from the wire;
        # its Rust allocator then aborts the whole process when that fails.
        (3, 12, b"\xff\xff\xff\xff\x0f" + b"\x00" * 10),  # compact array of 2**32 - 2 topics
        (3, 12, b"\xff\xff\xff\xff\x7f" + b"\x00" * 10),  # ... of 2**35 - 2
        (3, 4, b"\x7f\xff\xff\xff" + b"\x00" * 10),  # legacy array of 2**31 - 1
        (0, 9, b"\x00\xff\xff\x00\x00\x00\x01\x02\x02a\xff\xff\xff\xff\x0f"),  # nested partitions array
        (0, 3, b"\xff\xff\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x01a\x7f\xff\xff\xff"),
    ],
)
def test_hostile_array_counts_are_rejected_before_kio_allocates(api_key: int, version: int, body: bytes) -> None:
    with pytest.raises(MalformedMessage, match="cannot fit"):
        decode_request(api_key, version, body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\xff",  # truncated acks
        b"\x00\xff\xff\x00\x00\x00\x01\x02\x08events",  # topic name overruns the body
        b"\x00\xff\xff\x00\x00\x00\x01\x02\x07events\x02\x00\x00\x00\x03\x06bat",  # records overrun
        b"\x00\xff\xff\x00\x00\x00\x01\x02\x07events\x02\x00\x00\x00\x03\x06batch\x00\x00\x01",  # tag overruns
        b"\x00\xff\xff\x00\x00\x00\x01\x02\x07ev\xffnts\x02\x00\x00\x00\x03\x06batch\x00\x00\x00",  # bad UTF-8
        b"\x80\x80\x80\x80\x80\x80",  # over-long varint
    ],
)
def test_malformed_produce_bodies(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_request(0, 9, body)


def test_unsupported_versions_are_reported_with_the_correlation_id_readable() -> None:
    payload = kafka_python_payload(kp.ProduceRequest[9](transactional_id=None, acks=1, timeout_ms=1, topic_data=[]))
    unknown_version = payload[:2] + b"\x00\x63" + payload[4:]  # Produce v99
    assert peek_request_ids(unknown_version) == (0, 99, 7)
    with pytest.raises(UnsupportedVersion) as caught:
        decode_request_frame(unknown_version)
    assert caught.value.error_code == ErrorCode.UNSUPPORTED_VERSION
    with pytest.raises(UnsupportedVersion):
        decode_request(0, 2, b"")  # removed in Kafka 4.0
    with pytest.raises(UnsupportedVersion):
        decode_request(7, 0, b"")  # ControlledShutdown: no longer in the specs


GOLDEN_PAYLOADS = [
    kafka_python_payload(
        kp.ProduceRequest[9](
            transactional_id="t",
            acks=-1,
            timeout_ms=10,
            topic_data=[
                kp.ProduceRequest.TopicProduceData(
                    name="topic",
                    partition_data=[
                        kp.ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=b"r" * 30)
                    ],
                )
            ],
        )
    ),
    kafka_python_payload(
        kp.ProduceRequest[3](
            transactional_id=None,
            acks=1,
            timeout_ms=10,
            topic_data=[
                kp.ProduceRequest.TopicProduceData(
                    name="topic",
                    partition_data=[
                        kp.ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=b"r" * 30)
                    ],
                )
            ],
        )
    ),
    kafka_python_payload(
        kp.MetadataRequest[12](
            topics=[kp.MetadataRequest.MetadataRequestTopic(name="x")],
            allow_auto_topic_creation=True,
            include_topic_authorized_operations=False,
        )
    ),
    kafka_python_payload(kp.ApiVersionsRequest[3](client_software_name="c", client_software_version="1")),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GOLDEN_PAYLOADS), st.data())
def test_mutated_real_requests_decode_or_raise_malformed_message(payload: bytes, data: st.DataObject) -> None:
    mutated = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(8, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(8, len(mutated)))
    with contextlib.suppress(MalformedMessage, UnsupportedVersion):
        decode_request_frame(bytes(mutated[:cut]))


API_VERSION_PAIRS = [(a.api_key, v) for a in known_api_versions() for v in range(a.min_version, a.max_version + 1)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(API_VERSION_PAIRS), st.binary(max_size=64), st.booleans())
def test_random_bodies_decode_or_raise_malformed_message(pair: tuple[int, int], body: bytes, as_response: bool) -> None:
    decode = decode_response if as_response else decode_request
    with contextlib.suppress(MalformedMessage):
        decode(*pair, body)


# --- every schema: kio's writer and the pre-scan agree --------------------------------------


@pytest.mark.parametrize(("api_key", "version"), API_VERSION_PAIRS)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_round_trip_of_every_schema(api_key: int, version: int, data: st.DataObject) -> None:
    request = data.draw(st.from_type(request_schema(api_key, version)))
    payload = joined(encode_request(api_key, version, 11, "rt", request))
    header, decoded = decode_request_frame(payload)
    assert (header.correlation_id, decoded) == (11, request)
    assert prescan(type(request), payload, header.size)[2] == len(payload)  # the walk ends where the body does

    response = data.draw(st.from_type(response_schema(api_key, version)))
    payload = joined(encode_response(api_key, version, 12, response))
    correlation_id, size = parse_response_header(payload, 0 if api_key == 18 else int(type(response).__flexible__))
    decoded_response = decode_response(api_key, version, payload, size)
    # Compared as bytes: a drawn timestamp in a zone where it falls in a DST fold
    # decodes as the same instant in UTC, which Python's datetime equality calls
    # unequal (PEP 495), though the wire value is the same.
    assert correlation_id == 12 and joined(encode_response(api_key, version, 12, decoded_response)) == payload
    assert prescan(type(response), payload, size)[2] == len(payload)


def test_known_api_versions_are_contiguous_and_cover_the_core_apis() -> None:
    ranges = {a.api_key: (a.min_version, a.max_version) for a in known_api_versions()}
    assert ranges[0] == (3, 13) and ranges[1] == (4, 18) and ranges[18] == (0, 4) and ranges[3] == (0, 13)
    for api in known_api_versions():
        for version in range(api.min_version, api.max_version + 1):
            assert request_schema(api.api_key, version).__version__ == version
            assert version in api


def test_writable_frames_are_accepted() -> None:
    body = bytearray(joined(encode_request(0, 9, 1, None, produce_v9())))
    _header, request = decode_request_frame(body)
    assert request == produce_v9()


def test_null_arrays_only_where_the_spec_allows_them() -> None:
    null_topics = b"\x00" + b"\x01" + b"\x00" + b"\x00"  # topics: null; auto-create; authorized ops; no tags
    assert decode_request(3, 12, null_topics).topics is None
    null_topic_data = b"\x00\xff\xff\x00\x00\x00\x01\x00\x00"  # ProduceRequest v9 with topic_data: null
    with pytest.raises(MalformedMessage, match="not nullable"):
        decode_request(0, 9, null_topic_data)
    with pytest.raises(MalformedMessage, match="not nullable"):
        decode_request(0, 3, b"\xff\xff\xff\xff\x00\x00\x00\x01\xff\xff\xff\xff")  # v3: legacy null array


def test_empty_records_are_compact_length_one_and_null_is_zero() -> None:
    empty, null = (joined(encode_request(0, 9, 1, None, produce_v9(records))) for records in (b"", None))
    assert empty.endswith(b"\x00\x00\x00\x03" + b"\x01" + b"\x00\x00\x00")  # index, empty records, 3 tag sections
    assert null.endswith(b"\x00\x00\x00\x03" + b"\x00" + b"\x00\x00\x00")
    assert decode_request_frame(empty)[1] == produce_v9(b"")
    assert decode_request_frame(null)[1] == produce_v9(None)


def test_real_client_frames_fed_one_byte_at_a_time() -> None:
    stream = b""
    for payload in GOLDEN_PAYLOADS:
        stream += b"".join(encode_frame([payload]))
    decoder = FrameDecoder()
    decoded = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        decoded.extend(decode_request_frame(payload) for payload in decoder)
    assert [header.api_key for header, _body in decoded] == [0, 0, 3, 18]


def test_api_versions_of_an_unknown_version_can_be_answered_in_v0() -> None:
    # Kafka's answer to ApiVersions v99: a v0 response (header v0) with UNSUPPORTED_VERSION
    # and the supported list, so that the client can pick a version both sides know.
    payload = kafka_python_payload(kp.ApiVersionsRequest[3](client_software_name="c", client_software_version="1"))
    future = payload[:2] + b"\x00\x63" + payload[4:]
    ids = peek_request_ids(future)
    with pytest.raises(UnsupportedVersion):
        decode_request_frame(future)
    answer = ApiVersionsResponseV0(
        error_code=ErrorCode.UNSUPPORTED_VERSION, api_keys=(ApiVersionV0(api_key=18, min_version=0, max_version=4),)
    )
    reply = joined(encode_response(18, 0, ids.correlation_id, answer))
    decoded = kp.ApiVersionsResponse[0].decode(reply, header=True)
    assert (decoded.header.correlation_id, decoded.error_code) == (7, 35)
    assert [(k.api_key, k.min_version, k.max_version) for k in decoded.api_keys] == [(18, 0, 4)]
