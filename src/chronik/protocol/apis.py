"""The API table: which ``(api_key, api_version)`` pairs the codec knows.

The schemas are kio's, generated from Kafka's JSON message specs: one Python
module per API version holding a frozen dataclass for the request and one for
the response, each with ``__api_key__``, ``__version__`` and ``__flexible__``
(true from the spec's first ``flexibleVersions`` on).  Schema modules are
imported on first use, so importing the codec does not import ~600 of them.

Which of these versions the broker *advertises* is not decided here: ApiVersions
is derived from the handlers actually registered, and a handler may serve a
narrower range than the codec can parse.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from kio.index import load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.static.constants import EntityType
from kio.static.protocol import RequestPayload, ResponsePayload

from .errors import UnsupportedVersion

API_VERSIONS_KEY: Final = 18
"""ApiVersions, whose response header stays v0 even in flexible versions."""


@dataclass(frozen=True, slots=True)
class ApiVersionRange:
    """Versions ``min_version..max_version`` (inclusive) of one API."""

    api_key: int
    min_version: int
    max_version: int
    name: str
    """kio's snake_case name of the API, e.g. ``"produce"``."""

    def __contains__(self, api_version: object) -> bool:
        return isinstance(api_version, int) and self.min_version <= api_version <= self.max_version


def _build_ranges() -> dict[int, ApiVersionRange]:
    ranges = {}
    for api_key, name in api_key_map.items():
        versions = [
            version
            for version, entities in schema_name_map[name].items()
            if EntityType.request in entities and EntityType.response in entities
        ]
        if versions:
            ranges[api_key] = ApiVersionRange(api_key, min(versions), max(versions), name)
    return ranges


_RANGES: Final = _build_ranges()


def known_api_versions() -> tuple[ApiVersionRange, ...]:
    """Every API the codec can decode requests and encode responses for, by key."""
    return tuple(_RANGES[key] for key in sorted(_RANGES))


def api_version_range(api_key: int) -> ApiVersionRange | None:
    """The versions the codec knows for ``api_key``, or ``None`` for an unknown API."""
    return _RANGES.get(api_key)


def _check_known(api_key: int, api_version: int) -> None:
    known = _RANGES.get(api_key)
    if known is None or api_version not in known:
        raise UnsupportedVersion(api_key, api_version)


@functools.cache
def request_schema(api_key: int, api_version: int) -> type[RequestPayload]:
    """kio's request class for this API version.

    :raises UnsupportedVersion: the codec does not know this API version.
    """
    _check_known(api_key, api_version)
    return load_request_schema(api_key, api_version)


@functools.cache
def response_schema(api_key: int, api_version: int) -> type[ResponsePayload]:
    """kio's response class for this API version.

    :raises UnsupportedVersion: the codec does not know this API version.
    """
    _check_known(api_key, api_version)
    return load_response_schema(api_key, api_version)
