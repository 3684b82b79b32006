"""Wire primitives shared by headers, the request pre-scan and record batches.

Formats (Kafka protocol guide, "Protocol Primitive Types"):

* fixed-width integers are big-endian two's complement;
* an *unsigned varint* is little-endian base-128: 7 payload bits per byte, the
  high bit set on every byte but the last (at most 5 bytes for a 32-bit value,
  10 for a 64-bit one);
* a *varint* (signed) is the zig-zag encoding of the value, then an unsigned
  varint: 0, -1, 1, -2 ... map to 0, 1, 2, 3 ...

Readers take ``(buffer, position)`` and return ``(value, next position)``.  A
truncated or over-long encoding raises :class:`ValueError`; callers turn it
into the :class:`~chronik.protocol.errors.ProtocolError` that fits their layer.
"""

from __future__ import annotations

import struct
from typing import TypeAlias

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""A contiguous byte buffer (a memoryview must be 1-dimensional of bytes)."""

VARINT_MAX_BYTES = 5
"""Longest encoding of a 32-bit varint."""
VARLONG_MAX_BYTES = 10
"""Longest encoding of a 64-bit varint."""

INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")


def read_unsigned_varint(buf: BytesLike, pos: int, max_bytes: int = VARINT_MAX_BYTES) -> tuple[int, int]:
    """Read an unsigned varint of at most ``max_bytes`` bytes at ``pos``."""
    try:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
        value = byte & 0x7F
        for index in range(1, max_bytes):
            byte = buf[pos + index]
            value |= (byte & 0x7F) << (7 * index)
            if byte < 0x80:
                return value, pos + index + 1
    except IndexError:
        raise ValueError(f"truncated varint at byte {pos}") from None
    raise ValueError(f"varint at byte {pos} is longer than {max_bytes} bytes")


def read_varint(buf: BytesLike, pos: int, max_bytes: int = VARINT_MAX_BYTES) -> tuple[int, int]:
    """Read a zig-zag (signed) varint; ``max_bytes=VARLONG_MAX_BYTES`` for a varlong."""
    raw, pos = read_unsigned_varint(buf, pos, max_bytes)
    return (raw >> 1) ^ -(raw & 1), pos


def encode_unsigned_varint(value: int) -> bytes:
    """Encode a non-negative integer as an unsigned varint."""
    if value < 0:
        raise ValueError(f"unsigned varint cannot encode {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_varint(value: int) -> bytes:
    """Encode a signed integer as a zig-zag varint (any width: varint or varlong)."""
    return encode_unsigned_varint(value << 1 if value >= 0 else ((-value) << 1) - 1)
