"""The replication wire codec: round trips, any chunking, and clear errors on bad input."""

from __future__ import annotations

import struct

import pytest

from chronik.cluster.messages import (
    Ack,
    AppendRequest,
    AppendResponse,
    Entry,
    ForwardRequest,
    ForwardResponse,
    QuorumRequest,
    QuorumResponse,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    SnapshotRequest,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)
from chronik.cluster.transport import (
    MAX_ERROR_MESSAGE_BYTES,
    WIRE_VERSION,
    CodecError,
    FrameReader,
    decode_message,
    encode_frame,
    encode_message,
    parse_address,
)
from chronik.metadata.view import QuorumReplica

MESSAGES = [
    VoteRequest(7, 1, 2, 6, 42, pre_vote=True),
    VoteRequest(2**40, 3, 1, 0, 0),
    VoteResponse(7, 2, 1, True, pre_vote=True),
    VoteResponse(8, 2, 1, False),
    AppendRequest(9, 1, 3, 10, 8, (), 10),
    AppendRequest(9, 1, 3, 10, 8, (Entry(9, b"", control=True), Entry(9, b"create topic x"), Entry(9, bytes(range(256)))), 11),
    AppendResponse(9, 3, 1, True, 13, 12),
    AppendResponse(9, 3, 1, False, 4, 0),
    ForwardRequest(0, 2, 1, 17, b"create topic y"),
    ForwardRequest(0, 2, 1, 18, b"create topic z", "User:CN=\u00e9l\u00e8ve,O=Chronik", "2001:db8::7"),
    ForwardResponse(0, 1, 2, 17, 42, 1),
    ForwardResponse(0, 1, 2, 18, -1, -1),
    ForwardResponse(0, 1, 2, 19, -1, 1, 29, "User:bob may not CREATE topic 'z'"),
    ReplicaFetchRequest(0, 2, 1, "tópic-1", "0123456789abcdef0123456789abcdef", 7, 2**40, 500, 1 << 20),
    ReplicaFetchResponse(0, 1, 2, 0, 42, 3, bytes(range(256))),
    ReplicaFetchResponse(0, 1, 2, 6, -1, -1, b""),
    ReplicaFetchRequest(0, 2, 1, "t", "0123456789abcdef0123456789abcdef", 0, 10, 500, 1 << 20, 7),
    ReplicaFetchResponse(0, 1, 2, 0, 8, 0, b"", 6, 9),
    ReplicaFetchResponse(0, 1, 2, 0, 8, 0, b"", -1, -1, 17),
    SnapshotRequest(9, 1, 3, 2**40, 8, 300, 256, bytes(range(44))),
    SnapshotRequest(9, 1, 3, 5, 1, 0, 0, b""),
    SnapshotResponse(9, 3, 1, 2**40, 256, False),
    SnapshotResponse(9, 3, 1, 5, 300, True),
    Ack(0, 2, 1, 2**40),
    QuorumRequest(4, 2, 1, 2**40),
    QuorumResponse(7, 1, 2, 2**40, 0, 1, 1234, (QuorumReplica(1, 1234, 1_700_000_000_123, 1_700_000_000_123),
                                                QuorumReplica(2, 1200, 1_700_000_000_100, 1_700_000_000_050),
                                                QuorumReplica(3, -1, -1, -1))),
    QuorumResponse(0, 2, 3, 5, 6, -1, -1, ()),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message) -> None:  # type: ignore[no-untyped-def]
    assert decode_message(encode_message(message)) == message


def test_frame_reader_accepts_any_chunking() -> None:
    stream = b"".join(encode_frame(m) for m in MESSAGES)
    reader = FrameReader()
    out = []
    for byte in stream:
        out.extend(reader.feed(bytes([byte])))
    assert out == MESSAGES
    assert FrameReader().feed(stream) == MESSAGES


@pytest.mark.parametrize("cut", [0, 1, 5, 20, 40, 60])
def test_truncated_body_is_a_clear_error(cut: int) -> None:
    body = encode_message(MESSAGES[5])
    with pytest.raises(CodecError, match="truncated"):
        decode_message(body[:cut])


def test_bad_version_type_and_trailing_bytes() -> None:
    body = bytearray(encode_message(MESSAGES[0]))
    with pytest.raises(CodecError, match="trailing"):
        decode_message(bytes(body) + b"x")
    body[0] = 9
    with pytest.raises(CodecError, match="version 9"):
        decode_message(bytes(body))
    body[0], body[1] = WIRE_VERSION, 77
    with pytest.raises(CodecError, match="unknown message type 77"):
        decode_message(bytes(body))


def test_entry_length_beyond_the_frame_is_an_error() -> None:
    body = bytearray(encode_message(AppendRequest(1, 1, 2, 0, 0, (Entry(1, b"abc"),), 0)))
    struct.pack_into(">I", body, len(body) - 3 - 4, 1 << 30)  # the entry's length field
    with pytest.raises(CodecError, match="truncated entry 0"):
        decode_message(bytes(body))


def test_oversized_or_garbage_frames() -> None:
    with pytest.raises(CodecError, match="exceeds the limit"):
        FrameReader(max_frame_bytes=1024).feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(CodecError):
        FrameReader().feed(struct.pack(">I", 5) + b"\x01\x01abc")


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9291") == ("127.0.0.1", 9291)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("localhost", ":1", "h:x", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_forward_strings_are_bounded_and_checked() -> None:
    """A principal too long for its str16 is refused at encoding; a refusal's message is cut
    to MAX_ERROR_MESSAGE_BYTES; a principal that is not UTF-8 is a clear error."""
    with pytest.raises(CodecError, match="principal of 65536 bytes"):
        encode_message(ForwardRequest(0, 2, 1, 1, b"", "x" * 65536, ""))
    long = ForwardResponse(0, 1, 2, 1, -1, 1, 29, "\u00e9" * MAX_ERROR_MESSAGE_BYTES)
    decoded = decode_message(encode_message(long))
    assert isinstance(decoded, ForwardResponse)
    assert decoded.error_message == "\u00e9" * (MAX_ERROR_MESSAGE_BYTES // 2)
    body = bytearray(encode_message(ForwardRequest(0, 2, 1, 1, b"p", "User:a", "h")))
    body[body.index(b"User:a")] = 0xFF
    with pytest.raises(CodecError, match="principal is not UTF-8"):
        decode_message(bytes(body))


def test_a_quorum_response_whose_voter_count_lies_is_an_error() -> None:
    body = bytearray(encode_message(QuorumResponse(7, 1, 2, 1, 0, 1, 9, (QuorumReplica(1, 9, 5, 5),))))
    struct.pack_into(">I", body, len(body) - 28 - 4, 1 << 31)  # the voter count
    with pytest.raises(CodecError, match="truncated QuorumResponse voter 1"):
        decode_message(bytes(body))
