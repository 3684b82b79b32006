"""Length-prefixed framing of the Kafka wire protocol.

Wire format: every request and every response is one *frame*::

    size     INT32, big-endian, signed: number of bytes that follow
    payload  `size` bytes (request or response header, then the body)

A negative size is never valid.  A size above the receiver's limit (Kafka's
``socket.request.max.bytes``, 100 MiB by default) is refused as soon as the
prefix is read, before any memory is set aside for the payload.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

from .errors import FrameTooLarge, InvalidFrame, TlsHandshake
from .primitives import INT32, BytesLike

DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
"""Kafka's default ``socket.request.max.bytes`` (104857600)."""

SIZE_PREFIX_BYTES = 4
_MAX_INT32 = 2**31 - 1
#: A TLS record header starts with content type 22 (handshake) and major
#: version 3; read as a Kafka size prefix that is 0x1603XXYY (~369 MB).
_TLS_HANDSHAKE_RECORD = 0x1603
_TLS_MAX_MINOR = 4  # SSL 3.0 (0) .. TLS 1.3 (4; ClientHellos say 1 for compatibility)


class FrameDecoder:
    """Splits a received byte stream into frame payloads (sans-I/O).

    Feed bytes in whatever chunks they arrive (one byte at a time works), then
    take complete payloads with :meth:`next_frame` or by iterating::

        decoder.feed(data)
        for payload in decoder:
            handle(payload)

    Invariants:

    * ``_buffer[_start:]`` holds the bytes fed and not yet returned; nothing
      else is kept, so memory is bounded by what the caller chose to feed,
      and once every complete frame is returned and no partial one is left
      the buffer is empty (its capacity released too).
    * A payload is returned as ``bytes`` without its 4-byte size prefix, in
      stream order, exactly once.
    * After an :class:`InvalidFrame` the stream cannot be resynchronised: every
      later :meth:`next_frame` raises an equal error (a fresh exception each
      time: one object raised again and again would chain every raise's
      frames onto its traceback, and keep them alive), and the connection
      must be closed.
    * A stream that starts with a TLS record header (a TLS client on a
      plaintext listener) raises :class:`TlsHandshake` on its first prefix,
      whatever the size limit.
    """

    __slots__ = ("_buffer", "_error", "_max_frame_bytes", "_start", "_started")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not 0 <= max_frame_bytes <= _MAX_INT32:
            raise ValueError(f"max_frame_bytes must be within 0..{_MAX_INT32}, not {max_frame_bytes}")
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0
        self._error: Callable[[], InvalidFrame] | None = None
        self._started = False  # a frame has been returned

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
            raise self._error()
        start = self._start
        available = len(self._buffer) - start
        if available < SIZE_PREFIX_BYTES:
            return None
        (size,) = INT32.unpack_from(self._buffer, start)
        if not self._started and size >> 16 == _TLS_HANDSHAKE_RECORD and size >> 8 & 0xFF <= _TLS_MAX_MINOR:
            self._error = TlsHandshake
        elif size < 0:
            self._error = functools.partial(InvalidFrame, f"negative frame size {size}")
        elif size > self._max_frame_bytes:
            self._error = functools.partial(FrameTooLarge, size, self._max_frame_bytes)
        if self._error is not None:
            raise self._error()
        end = start + SIZE_PREFIX_BYTES + size
        if len(self._buffer) < end:
            return None
        with memoryview(self._buffer) as view:
            payload = bytes(view[start + SIZE_PREFIX_BYTES : end])
        if end == len(self._buffer):
            # All consumed: drop the buffer, whose capacity is that of the
            # largest burst received -- an idle connection keeps none of it.
            self._buffer = bytearray()
            end = 0
        self._start = end
        self._started = True
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
