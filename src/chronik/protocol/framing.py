"""Length-prefixed framing of the Kafka wire protocol.

Wire format: every request and every response is one *frame*::

    size     INT32, big-endian, signed: number of bytes that follow
    payload  `size` bytes (request or response header, then the body)

A negative size is never valid.  A size above the receiver's limit (Kafka's
``socket.request.max.bytes``, 100 MiB by default) is refused as soon as the
prefix is read, before any memory is set aside for the payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import FrameTooLarge, InvalidFrame
from .primitives import INT32, BytesLike

DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
"""Kafka's default ``socket.request.max.bytes`` (104857600)."""

SIZE_PREFIX_BYTES = 4
_MAX_INT32 = 2**31 - 1


class FrameDecoder:
    """Splits a received byte stream into frame payloads (sans-I/O).

    Feed bytes in whatever chunks they arrive (one byte at a time works), then
    take complete payloads with :meth:`next_frame` or by iterating::

        decoder.feed(data)
        for payload in decoder:
            handle(payload)

    Invariants:

    * ``_buffer[_start:]`` holds the bytes fed and not yet returned; nothing
      else is kept, so memory is bounded by what the caller chose to feed.
    * A payload is returned as ``bytes`` without its 4-byte size prefix, in
      stream order, exactly once.
    * After an :class:`InvalidFrame` the stream cannot be resynchronised: every
      later :meth:`next_frame` raises the same error, and the connection must
      be closed.
    """

    __slots__ = ("_buffer", "_error", "_max_frame_bytes", "_start")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not 0 <= max_frame_bytes <= _MAX_INT32:
            raise ValueError(f"max_frame_bytes must be within 0..{_MAX_INT32}, not {max_frame_bytes}")
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0
        self._error: InvalidFrame | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned as part of a frame."""
        return len(self._buffer) - self._start

    def feed(self, data: BytesLike) -> None:
        """Append received bytes to the stream."""
        if self._start:
            # Drop the bytes of frames already returned; what remains is at most
            # one partial frame, so this costs O(bytes received) overall.
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete payload, or ``None`` until more bytes are fed.

        :raises InvalidFrame: the size prefix is negative.
        :raises FrameTooLarge: the size prefix exceeds ``max_frame_bytes``.
        """
        if self._error is not None:
            raise self._error
        start = self._start
        available = len(self._buffer) - start
        if available < SIZE_PREFIX_BYTES:
            return None
        (size,) = INT32.unpack_from(self._buffer, start)
        if size < 0:
            self._error = InvalidFrame(f"negative frame size {size}")
            raise self._error
        if size > self._max_frame_bytes:
            self._error = FrameTooLarge(size, self._max_frame_bytes)
            raise self._error
        end = start + SIZE_PREFIX_BYTES + size
        if len(self._buffer) < end:
            return None
        with memoryview(self._buffer) as view:
            payload = bytes(view[start + SIZE_PREFIX_BYTES : end])
        self._start = end
        return payload

    def __iter__(self) -> Iterator[bytes]:
        """Yield every complete payload currently buffered."""
        while (payload := self.next_frame()) is not None:
            yield payload


def encode_frame(parts: Iterable[BytesLike]) -> list[BytesLike]:
    """Prefix a payload, given as a sequence of buffers, with its size.

    Returns ``[size_prefix, *parts]`` without joining anything, so large record
    payloads are written from where they already are.

    :raises ValueError: the payload is larger than a frame can describe.
    """
    buffers: list[BytesLike] = [b""]
    size = 0
    for part in parts:
        size += memoryview(part).nbytes
        buffers.append(part)
    if size > _MAX_INT32:
        raise ValueError(f"payload of {size} bytes does not fit in one frame")
    buffers[0] = INT32.pack(size)
    return buffers
