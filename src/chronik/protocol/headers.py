"""Request and response headers, and which header version each API version uses.

Wire formats (``RequestHeader.json`` / ``ResponseHeader.json``)::

    request header v0   api_key INT16 | api_version INT16 | correlation_id INT32
    request header v1   v0 | client_id NULLABLE_STRING
    request header v2   v1 | tagged fields
    response header v0  correlation_id INT32
    response header v1  v0 | tagged fields

``client_id`` is a classic string (INT16 length, -1 for null) in v2 too: it is
not a compact string even though v2 belongs to flexible versions.  Tagged
fields are ``UNSIGNED_VARINT count`` then, per field, ``UNSIGNED_VARINT tag |
UNSIGNED_VARINT size | size bytes``; no header tag is defined yet, so all are
skipped (KIP-482).

Which version applies: an API version whose message is *flexible* uses request
header v2 and response header v1, otherwise v1 and v0.  (Request header v0 was
only ever used by ControlledShutdown v0, gone from Kafka 4's specs and so from
the codec's table; it is still parsed.)  ApiVersions is the
exception: its response header is always v0, so a client that sent a version
the broker does not know can still read the error and the supported list.
The first 8 bytes of every request header are the same in all versions, which
is what :func:`peek_request_ids` relies on.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .apis import API_VERSIONS_KEY, request_schema, response_schema
from .errors import MalformedMessage
from .primitives import INT16, INT32, BytesLike, read_unsigned_varint

_FIXED = struct.Struct(">hhi")
_FIXED_AND_CLIENT_ID = struct.Struct(">hhih")  # v1 and v2: then the client_id length
_EMPTY_TAGGED_FIELDS = b"\x00"


class RequestIds(NamedTuple):
    """The fixed part shared by every request header version."""

    api_key: int
    api_version: int
    correlation_id: int


class RequestHeader(NamedTuple):
    """A parsed request header; the body starts at byte :attr:`size` of the frame."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int
    size: int


def request_header_version(api_key: int, api_version: int) -> int:
    """Request header version for an API version: 2 if flexible, else 1.

    :raises UnsupportedVersion: the codec does not know this API version.
    """
    return 2 if request_schema(api_key, api_version).__flexible__ else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """Response header version: 1 if flexible, else 0; always 0 for ApiVersions.

    :raises UnsupportedVersion: the codec does not know this API version.
    """
    if api_key == API_VERSIONS_KEY:
        return 0
    return 1 if response_schema(api_key, api_version).__flexible__ else 0


def peek_request_ids(frame: BytesLike) -> RequestIds:
    """Read api_key, api_version and correlation_id from a request frame.

    Works whatever the API and version, known or not, so that an unsupported
    request can still be answered under its correlation id.

    :raises MalformedMessage: the frame is shorter than 8 bytes.
    """
    return RequestIds._make(_fixed_part(frame))


def _fixed_part(frame: BytesLike) -> tuple[int, int, int]:
    if len(frame) < _FIXED.size:
        raise MalformedMessage(f"request of {len(frame)} bytes is shorter than a request header")
    return _FIXED.unpack_from(frame, 0)


def parse_request_header(frame: BytesLike, header_version: int) -> RequestHeader:
    """Parse a request header of the given version (0, 1 or 2) from a frame.

    ``client_id`` is decoded as UTF-8 with malformed sequences replaced, as
    Kafka does.  Unknown tagged fields are skipped.

    :raises MalformedMessage: the header is truncated or malformed.
    """
    if header_version not in (0, 1, 2):
        raise ValueError(f"no request header version {header_version}")
    if header_version == 0:
        api_key, api_version, correlation_id = _fixed_part(frame)
        return RequestHeader(api_key, api_version, correlation_id, None, 0, _FIXED.size)
    try:
        api_key, api_version, correlation_id, length = _FIXED_AND_CLIENT_ID.unpack_from(frame, 0)
    except struct.error:
        _fixed_part(frame)  # raises if even the fixed part is missing
        raise MalformedMessage(f"malformed request header v{header_version}: truncated client_id") from None
    pos = _FIXED_AND_CLIENT_ID.size
    client_id = None
    try:
        if length >= 0:
            if pos + length > len(frame):
                raise ValueError(f"client_id of {length} bytes overruns the frame")
            client_id = str(frame[pos : pos + length], "utf-8", "replace")
            pos += length
        elif length != -1:
            raise ValueError(f"negative client_id length {length}")
        if header_version == 2:
            if pos < len(frame) and frame[pos] == 0:  # no tagged field: the usual case
                pos += 1
            else:
                pos = _skip_tagged_fields(frame, pos)
    except (ValueError, struct.error) as exc:
        raise MalformedMessage(f"malformed request header v{header_version}: {exc}") from exc
    return RequestHeader(api_key, api_version, correlation_id, client_id, header_version, pos)


def _skip_tagged_fields(buf: BytesLike, pos: int) -> int:
    """Skip a tagged-field section at ``pos``; return the position after it.

    :raises ValueError: the section is truncated or a varint is malformed.
    """
    count, pos = read_unsigned_varint(buf, pos)
    for _ in range(count):
        _tag, pos = read_unsigned_varint(buf, pos)
        size, pos = read_unsigned_varint(buf, pos)
        pos += size
        if pos > len(buf):
            raise ValueError("tagged field overruns the buffer")
    return pos


def encode_request_header(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, header_version: int
) -> bytes:
    """Encode a request header of the given version (no tagged fields)."""
    if header_version not in (0, 1, 2):
        raise ValueError(f"no request header version {header_version}")
    out = bytearray(_FIXED.pack(api_key, api_version, correlation_id))
    if header_version >= 1:
        if client_id is None:
            out += INT16.pack(-1)
        else:
            encoded = client_id.encode()
            out += INT16.pack(len(encoded))
            out += encoded
    if header_version == 2:
        out += _EMPTY_TAGGED_FIELDS
    return bytes(out)


def encode_response_header(correlation_id: int, header_version: int) -> bytes:
    """Encode a response header of version 0 or 1 (v1 with no tagged fields)."""
    if header_version == 0:
        return INT32.pack(correlation_id)
    if header_version == 1:
        return INT32.pack(correlation_id) + _EMPTY_TAGGED_FIELDS
    raise ValueError(f"no response header version {header_version}")


def parse_response_header(frame: BytesLike, header_version: int) -> tuple[int, int]:
    """Parse a response header; return ``(correlation_id, header size)``.

    :raises MalformedMessage: the header is truncated or malformed.
    """
    if header_version not in (0, 1):
        raise ValueError(f"no response header version {header_version}")
    try:
        (correlation_id,) = INT32.unpack_from(frame, 0)
        pos = INT32.size
        if header_version == 1:
            pos = _skip_tagged_fields(frame, pos)
    except (ValueError, struct.error) as exc:
        raise MalformedMessage(f"malformed response header v{header_version}: {exc}") from exc
    return correlation_id, pos
