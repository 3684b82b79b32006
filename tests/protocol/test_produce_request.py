"""The hand-written ProduceRequest pre-scan decides exactly as the generic path does.

Requests are written here by hand (independently of kio's writer), for every
version 3-9, with null and non-null transactional ids and records, several
topics and partitions, and -- in v9 -- unknown tagged fields in any of the
body's tagged sections.  Each is decoded through the fast path
(``decode_request``) and through the generic pre-scan plus kio's reader; both
must give the same object, or both refuse the bytes.  Truncations and
single-byte corruptions of every request are checked the same way.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronik.protocol import MalformedMessage, decode_request, encode_request, request_schema
from chronik.protocol.messages import _FAST_SCANS, _decode, _find_fast_scan, _reader
from chronik.protocol.prescan import prescan
from chronik.protocol.primitives import encode_unsigned_varint
from chronik.protocol.produce_request import FIRST_VERSION, LAST_VERSION, scan_produce_request

VERSIONS = range(FIRST_VERSION, LAST_VERSION + 1)

# A tagged-field section: (tag, payload) pairs, tags ascending as KIP-482 requires.
tags = st.lists(st.tuples(st.integers(0, 300), st.binary(max_size=6)), max_size=2, unique_by=lambda t: t[0]).map(sorted)
partition = st.tuples(st.integers(-(2**31), 2**31 - 1), st.one_of(st.none(), st.binary(max_size=40)), tags)
topic = st.tuples(st.text(min_size=1, max_size=12), st.lists(partition, max_size=3), tags)
request = st.tuples(
    st.one_of(st.none(), st.text(max_size=10)),  # transactional_id
    st.integers(-(2**15), 2**15 - 1),  # acks
    st.integers(-(2**31), 2**31 - 1),  # timeout_ms
    st.lists(topic, max_size=3),
    tags,
)


def _tagged(fields: list[tuple[int, bytes]]) -> bytes:
    out = encode_unsigned_varint(len(fields))
    for tag, payload in fields:
        out += encode_unsigned_varint(tag) + encode_unsigned_varint(len(payload)) + payload
    return out


def write_body(version: int, value: tuple, *, with_tags: bool) -> bytes:
    """A ProduceRequest body of ``version``; tagged fields only in v9 and only if ``with_tags``."""
    transactional_id, acks, timeout_ms, topics, body_tags = value
    flexible = version >= 9

    def string(text: str | None) -> bytes:
        if text is None:
            return b"\x00" if flexible else struct.pack(">h", -1)
        data = text.encode()
        return encode_unsigned_varint(len(data) + 1) + data if flexible else struct.pack(">h", len(data)) + data

    def nullable_bytes(data: bytes | None) -> bytes:
        if data is None:
            return b"\x00" if flexible else struct.pack(">i", -1)
        return encode_unsigned_varint(len(data) + 1) + data if flexible else struct.pack(">i", len(data)) + data

    def count(n: int) -> bytes:
        return encode_unsigned_varint(n + 1) if flexible else struct.pack(">i", n)

    def section(fields: list[tuple[int, bytes]]) -> bytes:
        return _tagged(fields if with_tags else []) if flexible else b""

    out = string(transactional_id) + struct.pack(">hi", acks, timeout_ms) + count(len(topics))
    for name, partitions, topic_tags in topics:
        out += string(name) + count(len(partitions))
        for index, records, partition_tags in partitions:
            out += struct.pack(">i", index) + nullable_bytes(records) + section(partition_tags)
        out += section(topic_tags)
    return out + section(body_tags)


def generic(version: int, buf: bytes, offset: int = 0):  # type: ignore[no-untyped-def]
    """What the generic path makes of the body: the request, or MalformedMessage."""
    schema = request_schema(0, version)
    try:
        body, start, _end = prescan(schema, buf, offset)
        return _reader(schema)(body, start)[0]
    except Exception:  # whatever kio raises, _decode maps it to MalformedMessage
        return MalformedMessage


def fast(version: int, buf: bytes, offset: int = 0):  # type: ignore[no-untyped-def]
    try:
        return decode_request(0, version, buf, offset)
    except MalformedMessage:
        return MalformedMessage


def assert_same(version: int, buf: bytes, offset: int = 0) -> None:
    expected = generic(version, buf, offset)
    assert fast(version, buf, offset) == expected
    end = scan_produce_request(version, buf, offset)
    if end is not None:  # the plain case: the generic walk agrees, with nothing to cut out
        assert prescan(request_schema(0, version), buf, offset) == (buf, offset, end)


@settings(max_examples=150, deadline=None)
@given(value=request, with_tags=st.booleans(), prefix=st.binary(max_size=3))
def test_the_fast_path_decodes_as_the_generic_path(value, with_tags, prefix) -> None:  # type: ignore[no-untyped-def]
    for version in VERSIONS:
        body = write_body(version, value, with_tags=with_tags)
        assert_same(version, prefix + body, len(prefix))
        assert_same(version, body + b"trailing bytes")


@settings(max_examples=40, deadline=None)
@given(value=request, with_tags=st.booleans(), data=st.data())
def test_truncated_and_corrupted_bodies_are_decided_as_the_generic_path_decides(value, with_tags, data) -> None:  # type: ignore[no-untyped-def]
    for version in VERSIONS:
        body = write_body(version, value, with_tags=with_tags)
        for cut in range(len(body)):
            assert_same(version, body[:cut])
        for _ in range(8):
            at = data.draw(st.integers(0, max(len(body) - 1, 0)))
            byte = data.draw(st.integers(0, 255))
            assert_same(version, body[:at] + bytes([byte]) + body[at + 1 :])


@pytest.mark.parametrize("version", VERSIONS)
def test_plain_requests_take_the_fast_path_and_match_kio_writer(version: int) -> None:
    """kio's own writer's bytes: the fast scan accepts them and the decoded request round-trips."""
    value = ("tx", -1, 30_000, [("topic", [(0, b"\x00" * 70, []), (3, None, [])], []), ("other", [(1, b"abc", [])], [])], [])
    body = write_body(version, value, with_tags=False)
    decoded = decode_request(0, version, body)
    assert scan_produce_request(version, body, 0) == len(body)
    written = b"".join(bytes(b) for b in encode_request(0, version, 7, "c", decoded))
    assert written.endswith(body)
    assert _decode(request_schema(0, version), body, 0) == generic(version, body)
    used = _FAST_SCANS[request_schema(0, version)]  # what decode_request looked up (on first use)
    assert used is not None and used.func is scan_produce_request and used.args == (version,)


def test_only_produce_requests_have_a_fast_scan() -> None:
    from chronik.protocol import response_schema

    assert _find_fast_scan(response_schema(0, 9)) is None
    assert _find_fast_scan(request_schema(3, 12)) is None  # Metadata
    assert _find_fast_scan(request_schema(0, 9)).args == (9,)  # type: ignore[union-attr]


def test_a_tagged_field_sends_v9_down_the_generic_path() -> None:
    value = (None, 1, 100, [("t", [(0, b"xyz", [(5, b"hi")])], [])], [])
    body = write_body(9, value, with_tags=True)
    assert scan_produce_request(9, body, 0) is None
    (topic,) = decode_request(0, 9, body).topic_data
    assert topic.partition_data[0].records == b"xyz"
