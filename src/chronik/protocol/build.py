"""Build kio message objects of any version from one plain description.

kio has one frozen dataclass per message *and version*; a handler would
otherwise need one construction per version.  :func:`build` takes the schema
class of the negotiated version and a nested ``dict`` written once for all
versions, and:

* keeps only the keys that the version has (a field added in v5 is dropped
  for v3), and fills fields it leaves out with their defaults;
* builds nested entities (and tuples of them) from nested dicts (and lists);
* converts plain values to the types kio's writer expects: ``int`` error
  codes to kio's ``ErrorCode``, milliseconds to ``timedelta``, epoch
  milliseconds (``-1`` = none) to an aware ``datetime``, hex or
  :class:`uuid.UUID` topic ids.

A missing field without a default raises :class:`KeyError` naming the entity
and field: a version-specific required field must be given explicitly.
"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, Callable, TypeVar

from kio.schema.errors import ErrorCode as KioErrorCode
from kio.serial._introspect import EntityField, EntityTupleField, classify_field

_T = TypeVar("_T")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_ZERO_UUID = uuid.UUID(int=0)


def _error_code(value: Any) -> KioErrorCode:
    return value if isinstance(value, KioErrorCode) else KioErrorCode(int(value))


def _timedelta(value: Any) -> datetime.timedelta:
    return value if isinstance(value, datetime.timedelta) else datetime.timedelta(milliseconds=int(value))


def _datetime(value: Any) -> datetime.datetime | None:
    if value is None or isinstance(value, datetime.datetime):
        return value
    if int(value) < 0:
        return None
    return _EPOCH + datetime.timedelta(milliseconds=int(value))


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(hex=str(value))


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "error_code": _error_code,
    "timedelta_i32": _timedelta,
    "timedelta_i64": _timedelta,
    "datetime_i64": _datetime,
    "uuid": _uuid,
}


def _field_builder(field: Field[Any]) -> Callable[[Any], Any]:
    match classify_field(field):
        case EntityField(type_=nested):
            nested_builder = _builder(nested)
            return lambda value: None if value is None else (value if isinstance(value, nested) else nested_builder(value))
        case EntityTupleField(type_=nested):
            nested_builder = _builder(nested)
            return lambda value: None if value is None else tuple(
                v if isinstance(v, nested) else nested_builder(v) for v in value
            )
    convert = _CONVERTERS.get(field.metadata.get("kafka_type", ""))
    if convert is None:
        return _identity
    if "tuple" in str(field.type):
        return lambda value: tuple(convert(v) for v in value)
    return convert


def _identity(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@functools.cache
def _builder(entity: type[_T]) -> Callable[[Mapping[str, Any]], _T]:
    plan = [(f.name, _field_builder(f), f.default is not MISSING or f.default_factory is not MISSING) for f in fields(entity)]  # type: ignore[arg-type]

    def build_entity(data: Mapping[str, Any]) -> _T:
        kwargs = {}
        for name, convert, has_default in plan:
            if name in data:
                kwargs[name] = convert(data[name])
            elif not has_default:
                raise KeyError(f"{entity.__module__}.{entity.__qualname__} needs field {name!r}")
        return entity(**kwargs)

    return build_entity


def build(entity: type[_T], data: Mapping[str, Any] | None = None, /, **values: Any) -> _T:
    """An instance of kio's ``entity`` from ``data`` (and/or keyword values)."""
    if data is None:
        data = values
    elif values:
        data = {**data, **values}
    return _builder(entity)(data)


def has_field(entity: type, name: str) -> bool:
    """Whether this version of an entity has field ``name``."""
    return name in _field_names(entity)


@functools.cache
def _field_names(entity: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(entity))


def is_zero_uuid(value: uuid.UUID | None) -> bool:
    return value is None or value == _ZERO_UUID


def error_codes(message: Any) -> set[int]:
    """Every non-zero ``error_code`` anywhere in a kio message (for metrics).

    The walk is compiled once per entity class, visiting only fields that
    are, or can contain, an error code.
    """
    found: set[int] = set()
    _error_walker(type(message))(message, found)
    return found


@functools.cache
def _error_walker(entity: type) -> Callable[[Any, set[int]], None]:
    own = [f.name for f in fields(entity) if f.metadata.get("kafka_type") == "error_code"]
    nested: list[tuple[str, bool, Callable[[Any, set[int]], None]]] = []
    for f in fields(entity):
        match classify_field(f):
            case EntityField(type_=inner) if _may_hold_errors(inner):
                nested.append((f.name, False, _error_walker(inner)))
            case EntityTupleField(type_=inner) if _may_hold_errors(inner):
                nested.append((f.name, True, _error_walker(inner)))

    def walk(message: Any, found: set[int]) -> None:
        for name in own:
            code = getattr(message, name)
            if code:
                found.add(int(code.value if hasattr(code, "value") else code))
        for name, many, inner_walk in nested:
            value = getattr(message, name)
            if value is None:
                continue
            if many:
                for item in value:
                    inner_walk(item, found)
            else:
                inner_walk(value, found)

    return walk


@functools.cache
def _may_hold_errors(entity: type) -> bool:
    for f in fields(entity):
        if f.metadata.get("kafka_type") == "error_code":
            return True
        match classify_field(f):
            case EntityField(type_=inner) | EntityTupleField(type_=inner):
                if _may_hold_errors(inner):
                    return True
    return False
