"""Message bodies: decode requests and encode responses (and the reverse, for clients).

The object model is kio's: one frozen dataclass per message and version,
generated from Kafka's JSON message specs (see :mod:`.apis`).  A handler for
Produce v9 receives a ``kio.schema.produce.v9.request.ProduceRequest`` and
returns a ``kio.schema.produce.v9.response.ProduceResponse``.

Decoding (untrusted bytes): :func:`.prescan.prescan` walks the body first,
bounding every length and cutting out unknown tagged fields, then kio's native
reader builds the objects.  (A ProduceRequest is first walked by the faster
hand-written :func:`.produce_request.scan_produce_request`; only what it does
not call plain goes through the generic walk.)  Any malformation surfaces as
:class:`~.errors.MalformedMessage`.  Bytes after the body are ignored, as Kafka
does.  The frame must not be mutated while it is decoded; decoded values never
refer to it (kio copies strings and record payloads out).

Encoding (trusted objects): kio's writer, which leaves out every tagged field
equal to its default (librdkafka before 2.2 cannot connect to a broker that
always sends them).  The result is a list of buffers to hand to
:func:`.framing.encode_frame`.  A message that can carry record payloads
(FetchResponse, ProduceRequest...) is written into a sink that keeps those
payloads by reference, so a FetchResponse is never joined into one big
``bytes``; any other message is one ``bytes``.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final, TypeVar, cast

from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import EntityField, EntityTupleField, classify_field, get_schema_field_type
from kio.serial.errors import SerialError
from kio.static.protocol import Payload, RequestPayload, ResponsePayload

from .apis import request_schema, response_schema
from .errors import MalformedMessage
from .headers import (
    RequestHeader,
    encode_request_header,
    encode_response_header,
    parse_request_header,
    peek_request_ids,
    request_header_version,
    response_header_version,
)
from .prescan import prescan
from .produce_request import FIRST_VERSION as PRODUCE_FIRST
from .produce_request import LAST_VERSION as PRODUCE_LAST
from .produce_request import scan_produce_request
from .primitives import BytesLike

PRODUCE_KEY: Final = 0
_ZERO_COPY_MIN_BYTES: Final = 4096
"""Writes at least this large are kept by reference instead of copied."""

_P = TypeVar("_P", bound=Payload)

# What the pre-scan raises on a body that does not fit its schema (ValueError),
# and what kio's native reader raises on the values the pre-scan
# does not check: bad UTF-8, a boolean other than 0/1, null in a non-nullable
# field, a timestamp or duration out of Python's range.
_KIO_DECODE_ERRORS: Final = (SerialError, ValueError, OverflowError, struct.error)


def decode_request_frame(frame: BytesLike) -> tuple[RequestHeader, RequestPayload]:
    """Parse a whole request frame payload: header, then body.

    For an unsupported API version the correlation id is still readable with
    :func:`.headers.peek_request_ids` before calling this.

    :raises UnsupportedVersion: the codec does not know the API version.
    :raises MalformedMessage: the header or body does not parse.
    """
    api_key, api_version, _ = peek_request_ids(frame)
    header = parse_request_header(frame, request_header_version(api_key, api_version))
    return header, decode_request(api_key, api_version, frame, header.size)


def decode_request(api_key: int, api_version: int, frame: BytesLike, offset: int = 0) -> RequestPayload:
    """Decode the request body starting at ``frame[offset]``.

    :raises UnsupportedVersion: the codec does not know the API version.
    :raises MalformedMessage: the body does not parse.
    """
    return _decode(request_schema(api_key, api_version), frame, offset)


def decode_response(api_key: int, api_version: int, frame: BytesLike, offset: int = 0) -> ResponsePayload:
    """Decode the response body starting at ``frame[offset]``.

    :raises UnsupportedVersion: the codec does not know the API version.
    :raises MalformedMessage: the body does not parse.
    """
    return _decode(response_schema(api_key, api_version), frame, offset)


def encode_response(api_key: int, api_version: int, correlation_id: int, response: ResponsePayload) -> list[BytesLike]:
    """Encode response header and body as a list of buffers (no size prefix).

    :raises UnsupportedVersion: the codec does not know the API version.
    :raises TypeError: ``response`` is not kio's response class for this version.
    """
    _check_schema(response, response_schema(api_key, api_version))
    header = encode_response_header(correlation_id, response_header_version(api_key, api_version))
    return _encode(header, response)


def encode_request(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None, request: RequestPayload
) -> list[BytesLike]:
    """Encode request header and body as a list of buffers (no size prefix).

    :raises UnsupportedVersion: the codec does not know the API version.
    :raises TypeError: ``request`` is not kio's request class for this version.
    """
    _check_schema(request, request_schema(api_key, api_version))
    header_version = request_header_version(api_key, api_version)
    header = encode_request_header(api_key, api_version, correlation_id, client_id, header_version)
    return _encode(header, request)


def _check_schema(message: Payload, expected: type[Payload]) -> None:
    if type(message) is not expected:
        raise TypeError(
            f"expected {expected.__module__}.{expected.__qualname__}, got {type(message).__module__}."
            f"{type(message).__qualname__}"
        )


def _decode(schema: type[_P], frame: BytesLike, offset: int) -> _P:
    if type(frame) is not bytes:
        # kio only parses read-only buffers (so that it may release the GIL).
        frame = memoryview(frame).toreadonly()
    try:
        fast_scan = _FAST_SCANS[schema] if schema in _FAST_SCANS else _find_fast_scan(schema)
        if fast_scan is not None and fast_scan(frame, offset) is not None:
            body, start = frame, offset
        else:
            body, start, _end = prescan(schema, frame, offset)
        message, _size = _reader(schema)(body, start)
    except _KIO_DECODE_ERRORS as exc:
        raise MalformedMessage(f"malformed {schema.__module__}.{schema.__qualname__}: {exc}") from exc
    return cast(_P, message)


_FAST_SCANS: Final[dict[type, Callable[[BytesLike, int], int | None] | None]] = {}
"""Hand-written pre-scans of the hottest bodies (None: the schema has none), filled
on first use of each schema: where one says the body is the plain case, kio
reads it as is; otherwise the generic pre-scan decides."""


def _find_fast_scan(schema: type) -> Callable[[BytesLike, int], int | None] | None:
    """The pre-scan of ``schema``, remembered in :data:`_FAST_SCANS`.  Looked up by the
    schema's own API key and version rather than built for every version up front,
    which imported 14 ProduceRequest/Response schema modules with the codec (30-100 ms)."""
    version = getattr(schema, "__version__", None)
    scan = None
    if getattr(schema, "__api_key__", None) == PRODUCE_KEY and version is not None \
            and PRODUCE_FIRST <= version <= PRODUCE_LAST and schema is request_schema(PRODUCE_KEY, version):
        scan = functools.partial(scan_produce_request, version)
    _FAST_SCANS[schema] = scan
    return scan


@functools.cache
def _reader(schema: type[Payload]) -> Callable[[BytesLike, int], tuple[Any, int]]:
    return entity_reader(schema)


@functools.cache
def _writer(schema: type[Payload]) -> Callable[[Any, Any], None]:
    return entity_writer(schema)


class BufferList:
    """Several buffers that encode as one ``bytes``/``records`` value, never joined.

    A FetchResponse's ``records`` is the stored batches back to back; passing
    them as a ``BufferList`` lets the encoder emit the length prefix and then
    the batches by reference, so no record byte is copied into a new string.
    """

    __slots__ = ("parts", "_size")

    def __init__(self, parts: list[BytesLike]) -> None:
        self.parts = parts
        self._size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


class _GatherSink:
    """A ``write()`` target for kio's writers that does not copy large buffers.

    Writes shorter than :data:`_ZERO_COPY_MIN_BYTES` are appended to a
    bytearray; a longer one (a record payload) closes that bytearray and is
    kept by reference.  :meth:`buffers` returns the pieces in write order.
    """

    __slots__ = ("_parts", "_small")

    def __init__(self) -> None:
        self._parts: list[BytesLike] = []
        self._small = bytearray()

    def write(self, data: BytesLike | BufferList) -> int:
        size = len(data)
        if isinstance(data, BufferList):
            if self._small:
                self._parts.append(self._small)
                self._small = bytearray()
            self._parts.extend(data.parts)
            return size
        if size < _ZERO_COPY_MIN_BYTES:
            self._small += data
        else:
            if self._small:
                self._parts.append(self._small)
                self._small = bytearray()
            self._parts.append(data)
        return size

    def buffers(self) -> list[BytesLike]:
        if self._small:
            self._parts.append(self._small)
            self._small = bytearray()
        return self._parts


def _encode(header: bytes, message: Payload) -> list[BytesLike]:
    schema = type(message)
    if not _carries_records(schema):
        # No payload worth keeping by reference: BytesIO's C-level write() is
        # faster than the sink's Python one (about 4 µs per small response).
        with io.BytesIO(header) as out:
            out.seek(len(header))
            _writer(schema)(out, message)
            return [out.getvalue()]
    sink = _GatherSink()
    sink.write(header)
    _writer(schema)(sink, message)
    return sink.buffers()


@functools.cache
def _carries_records(entity_type: type) -> bool:
    """Whether an entity, or one nested in it, has a ``records`` field."""
    for field in fields(entity_type):
        match classify_field(field):
            case EntityField(type_=nested) | EntityTupleField(type_=nested):
                if _carries_records(nested):
                    return True
            case _:
                if get_schema_field_type(field) == "records":
                    return True
    return False
