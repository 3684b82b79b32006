"""Error responses built from the request alone, for any API: Kafka's ``getErrorResponse``.

When a request cannot be served at all -- its log directory failed, its
handler broke, its version is not served -- the client must still get an
answer it can decode, under its correlation id, that carries the error where
that response version keeps its errors:

* a top-level ``error_code`` field (Fetch v7+, FindCoordinator, ...) gets it;
* an error-bearing array (one whose entries, or whose entries' arrays, have
  an ``error_code``) is filled by *mirroring the request*: one entry per
  request entry, with the fields both share by name copied over (topic name,
  partition index, resource name ...) and every ``error_code`` set.  A
  response array is paired with the request's array in the same position
  among the arrays of its level (Produce ``topic_data`` -> ``responses``,
  ``partition_data`` -> ``partition_responses``); a request array of plain
  strings (DeleteTopics ``topic_names``, DeleteGroups ``groups_names``) fills
  the first string field of each response entry;
* everything else gets its default, or "nothing": -1 for integers (offsets,
  ids), empty strings and arrays.

So CreateTopics after a failed log directory answers every topic
KAFKA_STORAGE_ERROR, as Kafka does, instead of closing the connection.

:func:`legacy_produce_error_response` answers Produce v0-v2 (message formats
v0/v1, pre-0.11 clients; removed in Kafka 4 and not known to the codec) in
the layout those clients decode, from a small hand parse of the request.
"""

from __future__ import annotations

import struct
from dataclasses import MISSING, Field, fields
from typing import Any

from kio.serial._introspect import EntityField, EntityTupleField, classify_field

from .build import build
from .errors import MalformedMessage
from .headers import parse_request_header

__all__ = ["error_response", "legacy_produce_error_response", "LEGACY_PRODUCE_VERSIONS"]


def error_response(schema: type, code: int, request: Any = None, message: str | None = None) -> Any:
    """A response of ``schema`` carrying ``code`` everywhere it has an error code (see the module docstring).

    ``request`` (the decoded request, of the same API) is mirrored into the
    error-bearing arrays; without it they are empty.  ``message`` fills the
    ``error_message`` fields, where the version has them.
    """
    return build(schema, _values(schema, code, request, message))


def _values(schema: type, code: int, source: Any, message: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    source_arrays = _arrays(source) if source is not None and not isinstance(source, str) else []
    paired = 0
    for field in fields(schema):
        kind = field.metadata.get("kafka_type")
        if kind == "error_code":
            values[field.name] = int(code)
            continue
        if field.name == "error_message" and message is not None:
            values[field.name] = message
            continue
        classified = classify_field(field)
        if isinstance(classified, EntityTupleField) and _bears_errors(classified.type_):
            entries = source_arrays[paired] if paired < len(source_arrays) else ()
            paired += 1
            values[field.name] = [_entry(classified.type_, code, entry, message) for entry in entries]
            continue
        if source is not None and not isinstance(source, str) and not isinstance(classified, (EntityField, EntityTupleField)) \
                and hasattr(source, field.name) and not isinstance(getattr(source, field.name), tuple):
            values[field.name] = getattr(source, field.name)
            continue
        if field.default is MISSING and field.default_factory is MISSING:
            values[field.name] = _zero(field)
    return values


def _entry(schema: type, code: int, source: Any, message: str | None) -> dict[str, Any]:
    values = _values(schema, code, source, message)
    if isinstance(source, str):  # an array of names: the entry's first string field names it
        for field in fields(schema):
            if field.metadata.get("kafka_type") == "string" and field.name != "error_message":
                values[field.name] = source
                break
    return values


def _arrays(source: Any) -> list[tuple[Any, ...]]:
    """The array fields of a decoded request entity, in order (entity arrays and arrays of strings)."""
    out = []
    for field in fields(source):
        value = getattr(source, field.name)
        if isinstance(value, tuple):
            out.append(value)
        elif value is None and "tuple" in str(field.type):
            out.append(())  # a null array (Metadata: all topics): nothing to mirror
    return out


def _bears_errors(schema: type) -> bool:
    for field in fields(schema):
        if field.metadata.get("kafka_type") == "error_code":
            return True
        classified = classify_field(field)
        if isinstance(classified, EntityTupleField) and _bears_errors(classified.type_):
            return True
    return False


def _zero(field: Field[Any]) -> Any:
    kafka_type = field.metadata.get("kafka_type")
    if "tuple" in str(field.type):
        return ()
    if kafka_type is None:  # a nested entity
        return None
    if kafka_type == "string":
        return ""
    if kafka_type == "bool":
        return False
    if kafka_type == "uuid":
        return None
    if kafka_type in ("bytes", "records"):
        return b""
    return -1 if kafka_type.startswith("int") else 0


# -- Produce v0-v2 -------------------------------------------------------------

LEGACY_PRODUCE_VERSIONS = range(0, 3)
"""Produce versions of message formats v0/v1 (pre-0.11 clients): not served, but answered."""

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def legacy_produce_error_response(frame: bytes, code: int) -> tuple[bytes, bool]:
    """``(response payload, acks_zero)`` for a Produce v0-v2 request ``frame``.

    The response (header v0 and body of the request's version) gives every
    partition of the request ``code``, base offset -1.  A Produce with acks=0
    expects no response (``acks_zero`` True: the caller must not send it).

    Layout (Kafka's ProduceRequest/ProduceResponse specs, versions 0-2):
    request ``acks:int16 timeout:int32 [name:string [index:int32 records:bytes]]``;
    response ``[name:string [index:int32 error_code:int16 base_offset:int64
    log_append_time_ms:int64 (v2)]] throttle_time_ms:int32 (v1+)``.

    :raises MalformedMessage: the request does not parse.
    """
    header = parse_request_header(frame, 1)
    version = header.api_version
    if version not in LEGACY_PRODUCE_VERSIONS:
        raise ValueError(f"Produce v{version} is not a legacy version")
    reader = _Reader(frame, header.size)
    acks = reader.int16()
    reader.int32()  # timeout
    topics = []
    for _ in range(reader.count()):
        name = reader.string()
        partitions = []
        for _ in range(reader.count()):
            partitions.append(reader.int32())
            reader.skip_bytes()
        topics.append((name, partitions))
    out = bytearray(_I32.pack(header.correlation_id))
    out += _I32.pack(len(topics))
    for name, partitions in topics:
        out += _I16.pack(len(name)) + name
        out += _I32.pack(len(partitions))
        for index in partitions:
            out += struct.pack(">ihq", index, code, -1)
            if version >= 2:
                out += struct.pack(">q", -1)
    if version >= 1:
        out += _I32.pack(0)
    return bytes(out), acks == 0


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedMessage(f"Produce request truncated at byte {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self) -> int:
        return _I16.unpack(self._take(2))[0]

    def int32(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def count(self) -> int:
        n = self.int32()
        if n < 0 or n > len(self.data):
            raise MalformedMessage(f"absurd array length {n} in a Produce request")
        return n

    def string(self) -> bytes:
        n = self.int16()
        if n < 0:
            raise MalformedMessage("null topic name in a Produce request")
        return bytes(self._take(n))

    def skip_bytes(self) -> None:
        n = self.int32()
        if n > 0:
            self._take(n)
