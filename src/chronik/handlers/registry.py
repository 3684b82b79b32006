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

from ..metadata.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from ..metadata.view import Origin
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


class _DenialLog:
    """Which denials get a log line: one per (principal, host, operation, resource) a
    minute, and at most ``per_second`` lines a second in all, so neither one client
    retrying nor a flood of distinct resource names can flood the log."""

    def __init__(self, per_second: int = 20) -> None:
        self.repeats = RateLimit(60.0)
        self.per_second = per_second
        self._second = 0
        self._count = 0

    def allow(self, key: object) -> bool:
        second = int(time.monotonic())
        if second != self._second:
            self._second, self._count = second, 0
        if self._count >= self.per_second or not self.repeats.allow(key):
            return False
        self._count += 1
        return True


_DENIALS = _DenialLog()

_SUPPORTED_OPERATIONS = {
    ResourceType.TOPIC: (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
                         AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS,
                         AclOperation.ALTER_CONFIGS),
    ResourceType.GROUP: (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE),
    ResourceType.CLUSTER: (AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
                           AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER,
                           AclOperation.DESCRIBE),
}
"""Kafka's supported operations per resource type (what ``*_authorized_operations`` reports on)."""

NOT_REQUESTED = -2147483648
"""The ``*_authorized_operations`` value when the request did not ask for them."""


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
    """Who sent the request: the connection's authenticated principal
    (``User:ANONYMOUS`` on a PLAINTEXT listener, as Kafka)."""
    listener: str | None = None
    """Name of the listener the request came through (None: not through a listener, e.g. a test)."""
    advertised: "HostPort | None" = None
    """The address that listener advertises (Metadata, FindCoordinator); None: the node's registered one."""

    @property
    def advertised_address(self) -> "HostPort":
        """This node's address as the client should dial it: its listener's advertised address."""
        return self.advertised or self.broker.advertised

    @property
    def origin(self) -> Origin:
        """Who sent the request, as a metadata write it causes carries it to the controller
        (which authorizes the write again with it: see :mod:`chronik.security.commands`)."""
        return Origin(self.principal, self.client_host)

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

    def authorized(self, operation: AclOperation, resource_type: ResourceType, name: str = CLUSTER_RESOURCE_NAME,
                   *, log_denial: bool = True) -> bool:
        """Whether this request's principal may perform ``operation`` on the resource
        (the cluster when no name is given): always, without an authorizer.

        A denial is logged (INFO, logger ``chronik.handlers``, rate-limited by
        :class:`_DenialLog`) unless ``log_denial`` is false -- as Kafka, for checks
        that only filter what a response shows (Metadata hiding topics).
        """
        authorizer = self.broker.authorizer
        if authorizer is None:
            return True
        decision = authorizer.authorize(self.principal, self.client_host, operation, resource_type, name)
        if not decision.allowed and log_denial and _DENIALS.allow(
                (self.principal, self.client_host, operation, resource_type, name)):
            log.info("authorization denied: principal %s from %s may not %s %s %r (%s, API %s): %s", self.principal,
                     self.client_host, AclOperation(operation).name, ResourceType(resource_type).name, name,
                     self.header.client_id, _api_label(self.header.api_key), decision.reason)
        return decision.allowed

    def authorized_any(self, operation: AclOperation, resource_type: ResourceType) -> bool:
        """Whether the principal may ``operation`` some resource of the type (Kafka's
        ``authorizeByResourceType``; not logged): always, without an authorizer."""
        authorizer = self.broker.authorizer
        return authorizer is None or authorizer.authorize_any(self.principal, self.client_host, operation, resource_type)

    def authorized_operations(self, resource_type: ResourceType, name: str = CLUSTER_RESOURCE_NAME) -> int:
        """The ``*_authorized_operations`` bit field (KIP-430): bit ``op`` set for each operation
        Kafka supports on the resource type that the principal may perform (all of them
        without an authorizer, as Kafka); not logged."""
        return sum(1 << op for op in _SUPPORTED_OPERATIONS[resource_type]
                   if self.authorized(op, resource_type, name, log_denial=False))

    def may_create_topic(self, name: str) -> bool:
        """CREATE on the cluster or on topic ``name`` (CreateTopics, and auto-creation), as Kafka:
        the cluster check logs no denial, the topic one does."""
        return (self.authorized(AclOperation.CREATE, ResourceType.CLUSTER, log_denial=False)
                or self.authorized(AclOperation.CREATE, ResourceType.TOPIC, name))

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


def _api_label(api_key: int) -> str:
    known = api_version_range(api_key)
    return known.name if known is not None else str(api_key)
