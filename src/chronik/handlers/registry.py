"""The handler registry: which API versions this broker serves, and by what.

A handler module registers one async function per API with :func:`handles`,
naming the versions it fully serves.  ApiVersions is derived from this table
(never a hand-kept list), and the server dispatches through it: an API or
version not registered is answered UNSUPPORTED_VERSION.

A handler is ``async def handle(ctx: RequestContext, request) -> response``;
it builds its response with ``ctx.respond({...})`` from one description
written for all the versions it serves (see :mod:`chronik.protocol.build`).
Returning ``None`` means "send no response" (Produce with acks=0).

Pipelining: the connection runs each handler up to its return in arrival
order, one at a time, so whatever a handler does before returning (validate,
append to a log) happens in request order.  A handler whose answer must wait
(for durability, for new data) returns ``ctx.later(finish)`` instead: the
connection goes on with the next request while ``finish()`` completes, and
responses are still written in request order.  If ``finish()`` only waits
for something already under way (an fsync queued by the handler), pass
``ready`` too -- a cheap predicate telling that ``finish()`` would return
without waiting (and then without yielding): the connection then completes
the answer in line, in order, without a task of its own.

Cancellation: handlers are cancelled only when the connection or the server
shuts down; a cancelled handler sends nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..protocol import ApiVersionRange, RequestHeader, api_version_range, response_schema
from ..protocol.build import build

if TYPE_CHECKING:
    from ..config import HostPort
    from .services import BrokerServices

Handler = Callable[["RequestContext", Any], Awaitable[Any]]

log = logging.getLogger("chronik.handlers")


class RateLimit:
    """At most one event per key per ``seconds`` (for log lines a client or a flood would repeat).

    Remembers at most ``max_keys`` keys (then starts afresh), so a stream of
    new keys cannot grow it without bound.
    """

    def __init__(self, seconds: float, max_keys: int = 10_000) -> None:
        self.seconds = seconds
        self.max_keys = max_keys
        self._last: dict[object, float] = {}

    def allow(self, key: object) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        return True


_UNSUPPORTED_FEATURES = RateLimit(600.0)


@dataclass(frozen=True, slots=True)
class Registration:
    api_key: int
    min_version: int
    max_version: int
    handle: Handler


@dataclass(slots=True)
class RequestContext:
    """What a handler knows about the request besides its body."""

    broker: "BrokerServices"
    header: RequestHeader
    client_host: str
    principal: str = "User:ANONYMOUS"
    listener: str | None = None
    """Name of the listener the request came through (None: not through a listener, e.g. a test)."""
    advertised: "HostPort | None" = None
    """The address that listener advertises (Metadata, FindCoordinator); None: the node's registered one."""

    @property
    def advertised_address(self) -> "HostPort":
        """This node's address as the client should dial it: its listener's advertised address."""
        return self.advertised or self.broker.advertised

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def response_type(self) -> type:
        return response_schema(self.header.api_key, self.header.api_version)

    def respond(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> Any:
        """The response of the negotiated version, built from ``data``/``values``."""
        return build(self.response_type, data, **values)

    def later(self, finish: Callable[[], Awaitable[Any]], ready: Callable[[], bool] | None = None,
              reserve: int = 0) -> "Deferred":
        """A response that ``finish()`` will produce while the connection reads on (see the module docstring).

        ``reserve``: the bytes the response may grow to, held against the
        connection's budget of queued answers until it is sent.
        """
        return Deferred(finish, ready, reserve)

    def warn_unsupported(self, feature: str, detail: str = "") -> None:
        """Log, once per client and feature every 10 minutes, that a client uses ``feature``,
        which this broker does not support: the client only sees an error code, or
        times out retrying, and the operator would otherwise never know why."""
        client_id = self.header.client_id
        if _UNSUPPORTED_FEATURES.allow((self.client_host, client_id, feature)):
            log.warning("client %r from %s uses %s%s, which this broker does not support", client_id,
                        self.client_host, feature, f" ({detail})" if detail else "")

    def encoded(self, payload: bytes, errors: frozenset[int]) -> "Encoded":
        """A response a hand-written encoder produced (response header included)."""
        return Encoded(payload, errors)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A response already encoded, header included, by a hot path's own encoder.

    ``errors`` holds its non-zero error codes (for the request-error metrics).
    """

    payload: bytes
    errors: frozenset[int]


@dataclass(frozen=True, slots=True)
class Deferred:
    """A handler's answer still being completed (see the module docstring).

    ``finish()`` returns the response (or None for none); it runs in the
    connection's nursery (or, with ``ready``, in its writer) and is cancelled
    with the connection.
    """

    finish: Callable[[], Awaitable[Any]]
    ready: Callable[[], bool] | None = None
    reserve: int = 0


_REGISTRY: dict[int, Registration] = {}


def handles(api_key: int, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``api_key`` versions min..max."""
    known = api_version_range(api_key)
    if known is None or not (known.min_version <= min_version <= max_version <= known.max_version):
        raise ValueError(f"the codec cannot serve API {api_key} versions {min_version}..{max_version}")

    def register(handle: Handler) -> Handler:
        if api_key in _REGISTRY:
            raise ValueError(f"API {api_key} already has a handler")
        _REGISTRY[api_key] = Registration(api_key, min_version, max_version, handle)
        return handle

    return register


def lookup(api_key: int, api_version: int) -> Registration | None:
    """The handler serving this API version, or None."""
    registration = _REGISTRY.get(api_key)
    if registration is None or not registration.min_version <= api_version <= registration.max_version:
        return None
    return registration


def served_versions() -> tuple[ApiVersionRange, ...]:
    """What ApiVersions advertises: exactly the registered handlers' ranges."""
    out = []
    for key in sorted(_REGISTRY):
        r = _REGISTRY[key]
        known = api_version_range(key)
        assert known is not None
        out.append(ApiVersionRange(key, r.min_version, r.max_version, known.name))
    return tuple(out)
