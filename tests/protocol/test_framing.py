from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chronik.protocol import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameTooLarge, InvalidFrame, TlsHandshake, encode_frame


def frame(payload: bytes) -> bytes:
    return b"".join(encode_frame([payload]))


def test_default_limit_is_kafkas_socket_request_max_bytes() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == 104857600


def test_frames_fed_one_byte_at_a_time() -> None:
    payloads = [b"first", b"", b"x" * 1000, b"last"]
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder()
    received: list[bytes] = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        received.extend(decoder)
    assert received == payloads
    assert decoder.buffered_bytes == 0


def test_several_frames_in_one_chunk_and_a_partial_tail() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame(b"a") + frame(b"bc") + frame(b"def")[:5])
    assert list(decoder) == [b"a", b"bc"]
    assert decoder.next_frame() is None
    decoder.feed(frame(b"def")[5:])
    assert decoder.next_frame() == b"def"
    assert decoder.next_frame() is None


def test_negative_size_is_rejected_and_the_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff\xff\xfe")
    with pytest.raises(InvalidFrame, match="negative"):
        decoder.next_frame()
    decoder.feed(frame(b"ok"))
    with pytest.raises(InvalidFrame):
        decoder.next_frame()


def test_oversize_is_rejected_from_the_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.feed((1025).to_bytes(4, "big"))  # no payload byte has arrived
    with pytest.raises(FrameTooLarge) as caught:
        decoder.next_frame()
    assert (caught.value.size, caught.value.limit) == (1025, 1024)
    assert isinstance(caught.value, InvalidFrame)


def test_a_failed_decoder_raises_a_fresh_error_each_time() -> None:
    """One exception object raised again and again would collect every raise's frames on its traceback."""
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.feed((5000).to_bytes(4, "big"))
    errors = []
    for _ in range(2):
        with pytest.raises(FrameTooLarge) as caught:
            decoder.next_frame()
        errors.append(caught.value)
    assert errors[0] is not errors[1] and str(errors[0]) == str(errors[1])


@pytest.mark.parametrize("minor", [0, 1, 3, 4])
def test_a_tls_client_hello_is_recognised_whatever_the_limit(minor: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=2**31 - 1)
    decoder.feed(bytes([0x16, 0x03, minor, 0x02, 0x00, 0x01]))  # record header of a ClientHello
    with pytest.raises(TlsHandshake):
        decoder.next_frame()


def test_a_tls_like_size_after_the_first_frame_is_only_a_size() -> None:
    decoder = FrameDecoder(max_frame_bytes=2**31 - 1)
    decoder.feed(frame(b"first") + bytes([0x16, 0x03, 0x01, 0x02]))
    assert decoder.next_frame() == b"first"
    assert decoder.next_frame() is None  # waits for 369 MB, as the (raised) limit allows


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.feed(frame(b"y" * 16))
    assert decoder.next_frame() == b"y" * 16


def test_hostile_size_does_not_allocate() -> None:
    decoder = FrameDecoder()
    decoder.feed((DEFAULT_MAX_FRAME_BYTES).to_bytes(4, "big") + b"abc")
    assert decoder.next_frame() is None
    assert decoder.buffered_bytes == 7


def test_encode_frame_keeps_the_parts_and_prefixes_the_total_size() -> None:
    big = bytearray(b"r" * 10_000)
    parts = encode_frame([b"head", memoryview(big), b""])
    assert parts[0] == (10_004).to_bytes(4, "big")
    assert isinstance(parts[2], memoryview) and parts[2].obj is big  # not copied
    decoder = FrameDecoder()
    decoder.feed(b"".join(parts))
    assert decoder.next_frame() == b"head" + bytes(big)


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_any_split_of_a_stream_yields_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    received: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
        received.extend(decoder)
    assert received == payloads


@given(st.lists(st.binary(max_size=64), max_size=10))
def test_random_bytes_only_yield_frames_or_invalid_frame(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(max_frame_bytes=4096)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            for payload in decoder:
                assert len(payload) <= 4096
    except InvalidFrame:
        pass
