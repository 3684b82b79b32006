"""Bounds-checked walk of a message body, compiled from kio's schema classes.

Why it exists.  kio 0.6.5 parses bodies in native code (about 1 µs for a small
ProduceRequest), but on bytes from the network it has two defects:

1. A tagged field with a tag it does not know raises ``KeyError``, where
   KIP-482 says a reader must skip it (newer clients add tags freely).
2. It sizes arrays from the wire before reading them (Rust
   ``Vec::with_capacity(n)``).  A 15-byte body announcing 2**35 elements makes
   that allocation fail, and Rust's allocation-failure handler *aborts the
   process*: no exception, no cleanup, one request kills the broker.

Neither can be fixed from Python: the entity reader is native and handles
tagged fields inside.  So every body is walked here first, with the same
schema (kio's dataclasses, classified by kio's own introspection helpers, as
its reader does), and the walk:

* checks every length and count against the bytes that remain: an array of
  ``n`` elements needs ``n * (smallest element size)`` bytes, the check Kafka's
  Java parser makes before it allocates;
* checks that a known tagged field's declared size is what its schema reads
  (kio ignores the declared size, so a mismatch would silently shift the rest);
* notes the byte range of every unknown tagged field, so it can be cut out and
  its section's count rewritten before kio sees the body.  kio ignores the
  sizes of enclosing tagged fields, so nothing else needs rewriting.

It builds no objects.  Values (UTF-8, booleans, nulls in non-nullable fields)
are still checked by kio.  Every scanner returns a position no greater than
the ``end`` it was given, or raises :class:`ValueError`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import Field, dataclass, fields
from typing import Final, TypeAlias

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

from .primitives import INT16, INT32, BytesLike, encode_unsigned_varint, read_unsigned_varint

Edit: TypeAlias = tuple[int, int, bytes]
"""Replace ``buf[start:end]`` by ``bytes``."""
Scan: TypeAlias = Callable[[BytesLike, int, int, list[Edit]], int]
"""``(buf, pos, end, edits) -> position after the scanned item``."""

_FIXED_SIZES: Final = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "error_code": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "uuid": 16,
}
_LENGTH_PREFIXED: Final = frozenset({"string", "bytes", "records"})


@dataclass(frozen=True, slots=True)
class _Compiled:
    scan: Scan
    min_size: int
    """Fewest bytes any encoding of the item takes."""


def prescan(entity_type: type, buf: BytesLike, offset: int) -> tuple[BytesLike, int, int]:
    """Walk ``buf[offset:]`` as ``entity_type``; return what kio may safely parse.

    Returns ``(buffer, start, body_end)``: ``buffer`` and ``start`` are ``buf``
    and ``offset`` unchanged when the body holds no unknown tagged field, else
    a new ``bytes`` without them and 0.  ``body_end`` is where the body ends in
    ``buf``; bytes after it are allowed (Kafka ignores them too).

    :raises ValueError: the body does not fit the schema.
    """
    edits: list[Edit] = []
    try:
        body_end = _entity(entity_type, False).scan(buf, offset, len(buf), edits)
    except struct.error as exc:  # a fixed-width length prefix past the end of buf
        raise ValueError(str(exc)) from exc
    if not edits:
        return buf, offset, body_end
    edits.sort()
    pieces: list[BytesLike] = []
    cursor = offset
    for start, stop, replacement in edits:
        pieces += (buf[cursor:start], replacement)
        cursor = stop
    pieces.append(buf[cursor:body_end])
    return b"".join(pieces), 0, body_end


def _overrun(what: str, pos: int, end: int) -> ValueError:
    return ValueError(f"{what} ends at byte {pos}, past the end of its data at byte {end}")


def _fixed(size: int) -> Scan:
    def scan_fixed(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
        pos += size
        if pos > end:
            raise _overrun(f"{size}-byte fixed-width field(s)", pos, end)
        return pos

    return scan_fixed


def _scan_compact_bytes(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
    if pos < end and buf[pos] < 0x80:  # one-byte length: the common case, inlined
        length_plus_one = buf[pos]
        pos += 1
    else:
        length_plus_one, pos = read_unsigned_varint(buf, pos)
    if length_plus_one:
        pos += length_plus_one - 1
    if pos > end:
        raise _overrun("compact string/bytes", pos, end)
    return pos


def _length_prefixed(prefix: struct.Struct, what: str) -> _Compiled:
    def scan_length_prefixed(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
        (length,) = prefix.unpack_from(buf, pos)
        pos += prefix.size + max(length, 0)
        if length < -1:
            raise ValueError(f"negative {what} length {length}")
        if pos > end:
            raise _overrun(what, pos, end)
        return pos

    return _Compiled(scan_length_prefixed, prefix.size)


_COMPACT_BYTES: Final = _Compiled(_scan_compact_bytes, 1)
_LEGACY_STRING: Final = _length_prefixed(INT16, "string")
_LEGACY_BYTES: Final = _length_prefixed(INT32, "bytes")


def _primitive(kafka_type: str, flexible: bool) -> int | _Compiled:
    """A fixed size, or a scanner for a length-prefixed type (nullability does not change layout)."""
    size = _FIXED_SIZES.get(kafka_type)
    if size is not None:
        return size
    if kafka_type not in _LENGTH_PREFIXED:
        raise TypeError(f"no scanner for Kafka type {kafka_type!r}")
    if flexible:
        return _COMPACT_BYTES
    return _LEGACY_STRING if kafka_type == "string" else _LEGACY_BYTES


def _as_compiled(item: int | _Compiled) -> _Compiled:
    return _Compiled(_fixed(item), item) if isinstance(item, int) else item


def _array(element: _Compiled, flexible: bool, nullable: bool) -> _Compiled:
    scan_element, min_size = element.scan, element.min_size
    if min_size < 1:
        # Every count check below relies on elements taking room.
        raise TypeError("array elements must take at least one byte")

    def scan_elements(buf: BytesLike, pos: int, end: int, edits: list[Edit], count: int) -> int:
        # count is -1 for null: kio would hand None to code expecting a tuple.
        if count < 0 and not nullable:
            raise ValueError("null array in a field that is not nullable")
        if pos > end:
            raise _overrun("array length", pos, end)
        if count * min_size > end - pos:
            raise ValueError(f"array of {count} elements cannot fit in the {end - pos} bytes left")
        for _ in range(count):
            pos = scan_element(buf, pos, end, edits)
        return pos

    if flexible:

        def scan_compact_array(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
            if pos < end and buf[pos] < 0x80:  # fewer than 127 elements: inlined
                count_plus_one = buf[pos]
                pos += 1
            else:
                count_plus_one, pos = read_unsigned_varint(buf, pos)
            return scan_elements(buf, pos, end, edits, count_plus_one - 1)

        return _Compiled(scan_compact_array, 1)

    def scan_legacy_array(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
        (count,) = INT32.unpack_from(buf, pos)
        if count < -1:
            raise ValueError(f"negative array length {count}")
        return scan_elements(buf, pos + INT32.size, end, edits, count)

    return _Compiled(scan_legacy_array, INT32.size)


def _tag_section(tagged: dict[int, Scan]) -> Scan:
    def scan_tags(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
        if pos < end and buf[pos] == 0:  # no tagged field: the common case
            return pos + 1
        count_start = pos
        count, pos = read_unsigned_varint(buf, pos)
        count_end = pos
        kept = count
        for _ in range(count):
            field_start = pos
            tag, pos = read_unsigned_varint(buf, pos)
            size, pos = read_unsigned_varint(buf, pos)
            data_end = pos + size
            if data_end > end:
                raise _overrun(f"tagged field {tag}", data_end, end)
            scan = tagged.get(tag)
            if scan is None:
                edits.append((field_start, data_end, b""))
                kept -= 1
            elif scan(buf, pos, data_end, edits) != data_end:
                raise ValueError(f"tagged field {tag} declares {size} bytes, its schema reads fewer")
            pos = data_end
        if pos > end:
            raise _overrun("tagged fields", pos, end)
        if kept != count:
            edits.append((count_start, count_end, encode_unsigned_varint(kept)))
        return pos

    return scan_tags


def _field(field: Field[object], flexible: bool) -> int | _Compiled:
    match classify_field(field):
        case PrimitiveField():
            return _primitive(get_schema_field_type(field), flexible)
        case PrimitiveTupleField():
            element = _as_compiled(_primitive(get_schema_field_type(field), flexible))
            return _array(element, flexible, is_optional(field))
        case EntityField(type_=nested):
            # Same nullability rule as kio's reader, tagged or not.
            return _entity(nested, is_optional(field))
        case EntityTupleField(type_=nested):
            return _array(_entity(nested, False), flexible, is_optional(field))
    raise TypeError(f"unclassifiable field {field!r}")


@functools.cache
def _entity(entity_type: type, nullable: bool) -> _Compiled:
    """Compile a scanner for one kio entity class: fields in order, then tags if flexible.

    Runs of fixed-width fields are merged into a single bounds check.
    """
    flexible: bool = entity_type.__flexible__  # type: ignore[attr-defined]
    steps: list[Scan] = []
    tagged: dict[int, Scan] = {}
    fixed_run = 0
    min_size = 0
    for field in fields(entity_type):
        compiled = _field(field, flexible)
        tag = get_field_tag(field)
        if tag is not None:
            tagged[tag] = _as_compiled(compiled).scan
        elif isinstance(compiled, int):
            fixed_run += compiled
            min_size += compiled
        else:
            if fixed_run:
                steps.append(_fixed(fixed_run))
                fixed_run = 0
            steps.append(compiled.scan)
            min_size += compiled.min_size
    if fixed_run:
        steps.append(_fixed(fixed_run))
    if flexible:
        steps.append(_tag_section(tagged))
        min_size += 1
    elif tagged:
        raise TypeError(f"{entity_type.__name__} has tagged fields but is not flexible")
    scan_fields = _chain(tuple(steps))
    if not nullable:
        return _Compiled(scan_fields, min_size)

    def scan_nullable(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
        # KIP-893 marker: INT8 -1 for null, anything else for present.
        if pos >= end:
            raise _overrun("nullable struct marker", pos + 1, end)
        if buf[pos] == 0xFF:
            return pos + 1
        return scan_fields(buf, pos + 1, end, edits)

    return _Compiled(scan_nullable, 1)


def _chain(steps: tuple[Scan, ...]) -> Scan:
    if len(steps) == 1:
        return steps[0]

    def scan_chain(buf: BytesLike, pos: int, end: int, edits: list[Edit]) -> int:
        for step in steps:
            pos = step(buf, pos, end, edits)
        return pos

    return scan_chain
