from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chronik.protocol import (
    MalformedMessage,
    RequestHeader,
    UnsupportedVersion,
    encode_request_header,
    encode_response_header,
    known_api_versions,
    parse_request_header,
    parse_response_header,
    peek_request_ids,
    request_header_version,
    request_schema,
    response_header_version,
    response_schema,
)

from .real_clients import ApiVersionsRequest, MetadataRequest

int16s = st.integers(-(2**15), 2**15 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
client_ids = st.none() | st.text(max_size=50)


@given(int16s, int16s, int32s, client_ids, st.sampled_from([0, 1, 2]))
def test_request_header_round_trip(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, version: int
) -> None:
    encoded = encode_request_header(api_key, api_version, correlation_id, client_id, version)
    header = parse_request_header(encoded + b"body", version)
    expected_client_id = client_id if version >= 1 else None
    assert header == RequestHeader(api_key, api_version, correlation_id, expected_client_id, version, len(encoded))
    assert peek_request_ids(encoded) == (api_key, api_version, correlation_id)


def test_v2_client_id_is_a_classic_int16_string_as_kafka_python_sends_it() -> None:
    request = ApiVersionsRequest[3](client_software_name="kafka-python", client_software_version="3.0")
    request.with_header(correlation_id=1, client_id="golden-client")
    payload = bytes(request.encode(header=True))
    assert payload[8:10] == (13).to_bytes(2, "big")  # INT16 length, not a compact varint
    header = parse_request_header(payload, 2)
    assert header == RequestHeader(18, 3, 1, "golden-client", 2, 8 + 2 + 13 + 1)


def test_v1_header_from_kafka_python() -> None:
    request = MetadataRequest[4](topics=None, allow_auto_topic_creation=False)
    request.with_header(correlation_id=99, client_id="old")
    payload = bytes(request.encode(header=True))
    header = parse_request_header(payload, request_header_version(3, 4))
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (3, 4, 99, "old")
    assert payload[header.size :] == b"\xff\xff\xff\xff\x00"  # null topics, then the boolean


def test_v2_unknown_tagged_fields_are_skipped() -> None:
    base = encode_request_header(0, 9, 5, "c", 2)[:-1]
    tags = b"\x02" + b"\x00\x03abc" + b"\x81\x01\x01z"  # two fields, the second with a 2-byte tag
    header = parse_request_header(base + tags + b"BODY", 2)
    assert header.client_id == "c"
    assert header.size == len(base + tags)


def test_null_client_id_and_invalid_utf8_as_kafka_reads_them() -> None:
    fixed = (3).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
    assert parse_request_header(fixed + b"\xff\xff", 1).client_id is None
    assert parse_request_header(fixed + b"\x00\x02\xc3\x28", 1).client_id == "\ufffd("


@pytest.mark.parametrize(
    ("payload", "version"),
    [
        (b"\x00\x03\x00", 1),  # shorter than the fixed part
        (b"\x00\x03\x00\x00\x00\x00\x00\x01\x00", 1),  # truncated client_id length
        (b"\x00\x03\x00\x00\x00\x00\x00\x01\x00\x05ab", 1),  # client_id overruns the frame
        (b"\x00\x03\x00\x00\x00\x00\x00\x01\xff\xfe", 1),  # negative length other than -1
        (b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff", 2),  # tagged fields missing
        (b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\x01\x00\x05ab", 2),  # tagged field overruns
        (b"\x00\x03\x00\x0c\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff", 2),  # over-long varint
    ],
)
def test_malformed_request_headers(payload: bytes, version: int) -> None:
    with pytest.raises(MalformedMessage):
        parse_request_header(payload, version)


@given(st.binary(max_size=40), st.sampled_from([0, 1, 2]))
def test_random_bytes_parse_or_raise_malformed_message(payload: bytes, version: int) -> None:
    try:
        header = parse_request_header(payload, version)
    except MalformedMessage:
        return
    assert header.size <= len(payload)


def test_unknown_api_still_yields_its_correlation_id() -> None:
    payload = encode_request_header(9999, 3, 4242, "x", 1)
    assert peek_request_ids(payload).correlation_id == 4242
    with pytest.raises(UnsupportedVersion) as caught:
        request_header_version(9999, 3)
    assert (caught.value.api_key, caught.value.api_version) == (9999, 3)
    with pytest.raises(UnsupportedVersion):
        response_header_version(0, 99)


def test_header_versions_agree_with_the_specs_for_every_api_version() -> None:
    for api in known_api_versions():
        for version in range(api.min_version, api.max_version + 1):
            request, response = request_schema(api.api_key, version), response_schema(api.api_key, version)
            assert request_header_version(api.api_key, version) == request.__header_schema__.__version__
            assert response_header_version(api.api_key, version) == response.__header_schema__.__version__
            assert request_header_version(api.api_key, version) == (2 if request.__flexible__ else 1)


def test_api_versions_response_header_is_always_v0() -> None:
    assert [response_header_version(18, v) for v in range(5)] == [0, 0, 0, 0, 0]
    assert request_header_version(18, 3) == 2  # while its request header is flexible
    assert response_header_version(3, 9) == 1
    assert response_header_version(3, 8) == 0


@given(int32s, st.sampled_from([0, 1]))
def test_response_header_round_trip(correlation_id: int, version: int) -> None:
    encoded = encode_response_header(correlation_id, version)
    assert len(encoded) == 4 + version  # v1 carries an empty tagged-field section, one byte
    assert parse_response_header(encoded + b"body", version) == (correlation_id, len(encoded))
