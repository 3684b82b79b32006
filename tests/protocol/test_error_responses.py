"""Error responses built from the request alone (Kafka's getErrorResponse), for every served API version."""

from __future__ import annotations

import pytest

from chronik.handlers import served_versions
from chronik.protocol import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    parse_request_header,
    parse_response_header,
    request_header_version,
    request_schema,
    response_header_version,
    response_schema,
)
from chronik.protocol.build import build, error_codes
from chronik.protocol.error_responses import error_response

EVERY_SERVED_VERSION = [(r.api_key, v) for r in served_versions() for v in range(r.min_version, r.max_version + 1)]


def roundtrip_request(api_key: int, version: int, body: dict) -> object:
    raw = b"".join(bytes(b) for b in encode_request(api_key, version, 1, "t", build(request_schema(api_key, version), body)))
    header = parse_request_header(raw, request_header_version(api_key, version))
    return decode_request(api_key, version, raw, header.size)


def roundtrip_response(api_key: int, version: int, response: object) -> object:
    raw = b"".join(bytes(b) for b in encode_response(api_key, version, 9, response))
    _, size = parse_response_header(raw, response_header_version(api_key, version))
    return decode_response(api_key, version, raw, size)


@pytest.mark.parametrize(("api_key", "version"), EVERY_SERVED_VERSION)
def test_every_served_version_has_an_encodable_error_response(api_key: int, version: int) -> None:
    roundtrip_response(api_key, version, error_response(response_schema(api_key, version), 56))


@pytest.mark.parametrize("version", [2, 4, 7])
def test_create_topics_names_every_topic(version: int) -> None:
    request = roundtrip_request(19, version, {"topics": [
        {"name": n, "num_partitions": 3, "replication_factor": 1, "assignments": [], "configs": []} for n in ("a", "b")],
        "timeout": 1000, "validate_only": False})
    response = roundtrip_response(19, version, error_response(response_schema(19, version), 56, request, "disk failed"))
    assert [(t.name, t.error_code) for t in response.topics] == [("a", 56), ("b", 56)]
    if version >= 1:
        assert {t.error_message for t in response.topics} == {"disk failed"}


@pytest.mark.parametrize("version", [1, 6])
def test_delete_topics_names_every_topic_of_a_string_array(version: int) -> None:
    body = {"topic_names": ["x", "y"], "timeout": 1000} if version < 6 else {
        "topics": [{"name": "x", "topic_id": None}, {"name": "y", "topic_id": None}], "timeout": 1000}
    request = roundtrip_request(20, version, body)
    response = roundtrip_response(20, version, error_response(response_schema(20, version), 56, request))
    assert [(t.name, t.error_code) for t in response.responses] == [("x", 56), ("y", 56)]


def test_produce_and_offset_commit_name_every_partition() -> None:
    request = roundtrip_request(0, 9, {"transactional_id": None, "acks": -1, "timeout": 100, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": None}, {"index": 4, "records": None}]}]})
    response = roundtrip_response(0, 9, error_response(response_schema(0, 9), 56, request))
    assert [(t.name, [(p.index, p.error_code, p.base_offset) for p in t.partition_responses])
            for t in response.responses] == [("t", [(0, 56, -1), (4, 56, -1)])]
    request = roundtrip_request(8, 8, {"group_id": "g", "generation_id_or_member_epoch": 1, "member_id": "m",
                                       "group_instance_id": None, "topics": [
                                           {"name": "t", "partitions": [{"partition_index": 1, "committed_offset": 5,
                                                                         "committed_leader_epoch": -1,
                                                                         "committed_metadata": None}]}]})
    response = roundtrip_response(8, 8, error_response(response_schema(8, 8), 56, request))
    assert set(error_codes(response)) == {56}
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in response.topics] == [("t", [1])]
