"""The Kafka listener: one trio task per connection, requests answered in order.

Per connection, handlers run up to their return one at a time in arrival
order (so appends happen in request order); a handler that must wait -- a
produce for its fsync, a fetch for new data -- hands back a deferred answer
and the next request proceeds, so the requests a client pipelines share
group commits.  Responses still go back strictly in request order
(:mod:`.connection`).  A Produce with acks=0 gets no response.

Limits: ``max.connections`` / ``max.connections.per.ip`` (a connection
over a cap is closed before a byte is read), ``connections.max.idle.ms``,
``request_arrival_timeout_ms`` (slow senders), and the per-connection budget
of queued answers (:mod:`.connection`).  Every warning about one peer is
logged at most once a minute per kind, however often the peer retries.

Errors:

* a TLS client on this plaintext listener (its ClientHello read as a frame
  size) gets its connection closed and one clear log line;
* a frame over ``socket.request.max.bytes`` or with a negative size cannot
  be resynchronised: it is logged and the connection is closed;
* an API or version that no handler serves gets UNSUPPORTED_VERSION in a
  layout its client decodes (for ApiVersions, a v0 response listing what is
  served, so the client can downgrade; Produce v0-v2 of pre-0.11 clients a
  response of their version); where no layout is known the connection is
  closed with one log line, as Kafka does (see :func:`unsupported_version_answer`);
* a malformed request body is logged and the connection is closed (Kafka
  does the same: the stream position can no longer be trusted);
* a handler's exception gets an error response built from the request
  (every topic/partition/resource it names carries the error): a storage
  error -- the log directory failed -- KAFKA_STORAGE_ERROR, as Kafka
  answers for an offline log directory; anything else UNKNOWN_SERVER_ERROR,
  logged with its traceback;
* anything else going wrong on one connection closes that connection only:
  the server keeps serving the others.

Cancellation: the listener nursery owns every connection task; cancelling
it closes every socket.  A request being handled when its connection is
cancelled is abandoned; a produce that was already appended still becomes
durable (the WAL owns that), it is only not answered.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import trio

from ..config import HostPort
from ..handlers import lookup, served_versions
from ..handlers.registry import Deferred, Encoded, RateLimit, RequestContext
from ..handlers.services import BrokerServices
from ..protocol import (
    ErrorCode,
    FrameDecoder,
    InvalidFrame,
    MalformedMessage,
    TlsHandshake,
    UnsupportedVersion,
    api_version_range,
    decode_request_frame,
    encode_frame,
    encode_response,
    peek_request_ids,
    response_schema,
)
from ..protocol.build import build, error_codes
from ..protocol.error_responses import LEGACY_PRODUCE_VERSIONS, error_response, legacy_produce_error_response
from ..storage import GroupCommitter, StorageError
from .connection import Buffers, ConnectionIdle, PendingResponse, RequestTimedOut, SendStalled, serve_pipelined
from .limits import ConnectionLimits, LogLimiter

log = logging.getLogger(__name__)

API_VERSIONS = 18
PRODUCE = 0


@runtime_checkable
class KafkaServices(BrokerServices, Protocol):
    """What the listener uses of the node: the handlers' services, and the group committer
    (a burst of requests read from a socket starts a group commit at once)."""

    committer: GroupCommitter


async def open_kafka_listeners(listen: HostPort) -> list[trio.SocketListener]:
    """Bind the Kafka listener(s) for ``listen``; with port 0, only one (so one port to advertise).

    :func:`listener_addresses` tells the bound addresses.  The caller owns the
    listeners (:func:`serve_kafka` closes them when it ends).
    """
    try:
        listeners = await trio.open_tcp_listeners(listen.port, host=listen.host or None)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen for Kafka clients on {listen}: {exc.strerror or exc}") from exc
    if listen.port == 0:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    return listeners


def listener_addresses(listeners: list[trio.SocketListener]) -> list[HostPort]:
    """The addresses the listeners are bound to."""
    return [HostPort(*listener.socket.getsockname()[:2]) for listener in listeners]


async def serve_kafka(broker: KafkaServices, listeners: list[trio.SocketListener], *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve clients on ``listeners`` (from :func:`open_kafka_listeners`) until cancelled.

    ``started`` once clients can connect.  Cancellation closes the listeners
    and every connection.
    """
    for address in listener_addresses(listeners):
        log.info("listening for Kafka clients on %s:%d (advertised as %s)", address.host, address.port, broker.advertised)

    listener = Listener(broker)
    handle = functools.partial(serve_connection, broker, listener=listener)

    async with trio.open_nursery() as nursery:
        for tcp_listener in listeners:
            nursery.start_soon(accept_connections, tcp_listener, handle, nursery, listener.refused)
        task_status.started()


#: Seconds between two log lines about the same peer (or about refused connections).
LOG_INTERVAL = 60.0
#: accept() errors that mean "out of file descriptors or memory for now": wait and retry.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_SECONDS = 0.1


async def accept_connections(tcp_listener: trio.SocketListener, handle: Callable[[trio.SocketStream], Awaitable[None]],
                             nursery: trio.Nursery, log_limiter: LogLimiter) -> None:
    """Accept until cancelled; each connection is served by ``handle`` in a task of ``nursery``.

    Like ``trio.serve_listeners`` but without its per-connection wrapper:
    ``handle`` closes its own stream (no forced close raising Cancelled per
    connection, no extra frame per idle connection), and running out of file
    descriptors is logged once per interval, not ten times a second.
    Cancellation: the listening socket is closed.
    """
    async with tcp_listener:
        while True:
            try:
                stream = await tcp_listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                held = log_limiter.allow("accept")
                if held is not None:
                    log.error("cannot accept connections: %s (%d more since the last line); retrying",
                              os.strerror(exc.errno), held)
                await trio.sleep(_ACCEPT_RETRY_SECONDS)
            else:
                nursery.start_soon(handle, stream)


class Listener:
    """What the connections of one Kafka listener share: the connection caps and the log limiters."""

    def __init__(self, broker: KafkaServices) -> None:
        config = broker.config
        self.limits = ConnectionLimits(config.max_connections, config.max_connections_per_ip)
        self.per_peer = LogLimiter(LOG_INTERVAL)  # one line per peer IP and kind of trouble
        self.refused = LogLimiter(LOG_INTERVAL)  # one line for all refused connections

    def warn(self, peer: str, kind: str, message: str, *args: object) -> None:
        """Log ``message`` at warning unless this peer had a line of this kind within the interval."""
        held = self.per_peer.allow((peer, kind))
        if held is not None:
            if held:
                message += " (%d more like it since the last line)"
                args = (*args, held)
            log.warning(message, *args)


def _addresses(stream: trio.SocketStream) -> tuple[str, str]:
    """(client IP, "host:port" of the listener it reached); "?" for what the socket no longer knows."""
    try:
        client_host = str(stream.socket.getpeername()[0])
    except OSError:
        client_host = "?"
    try:
        local = stream.socket.getsockname()
        here = str(HostPort(str(local[0]), int(local[1])))
    except OSError:
        here = "?"
    return client_host, here


async def serve_connection(broker: KafkaServices, stream: trio.SocketStream, listener: Listener | None = None) -> None:
    """Serve one client: requests pipelined, responses in request order (see :mod:`.connection`).

    A connection over ``max.connections`` or ``max.connections.per.ip`` is
    closed at once (one log line per interval for all of them); one idle for
    ``connections.max.idle.ms`` is closed quietly (debug log, as Kafka does).
    """
    listener = listener or Listener(broker)
    client_host, here = _addresses(stream)
    refusal = listener.limits.admit(client_host)
    if refusal is not None:
        stream.socket.close()
        held = listener.refused.allow()
        if held is not None:
            log.warning("refusing connections: %s (%d more refused since the last line)", refusal, held)
        return
    config = broker.config
    decoder = FrameDecoder(config.socket_request_max_bytes)

    def dispatch(frame: bytes) -> Awaitable[Buffers | PendingResponse | None]:
        return handle_frame(broker, frame, client_host)

    broker.metrics.connections.inc()
    try:
        async with stream:
            await serve_pipelined(stream, decoder, dispatch, burst_end=broker.committer.start_now,
                                  idle_timeout=config.connections_max_idle_ms / 1000,
                                  request_timeout=config.request_arrival_timeout_ms / 1000)
    except TlsHandshake:
        listener.warn(client_host, "tls", "TLS client on the PLAINTEXT listener %s from %s: closing its connections "
                      "(give it security.protocol=PLAINTEXT)", here, client_host)
    except InvalidFrame as exc:
        listener.warn(client_host, "frame", "closing connection from %s: %s", client_host, exc)
    except MalformedMessage as exc:
        listener.warn(client_host, "malformed", "closing connection from %s: malformed request: %s", client_host, exc)
    except ConnectionIdle as exc:
        log.debug("closing connection from %s: %s", client_host, exc)
    except (RequestTimedOut, SendStalled) as exc:
        listener.warn(client_host, "slow", "closing connection from %s: %s", client_host, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away
    except _CloseConnection:
        pass  # already logged
    except Exception:
        log.exception("closing connection from %s after an unexpected error", client_host)
    finally:
        broker.metrics.connections.dec()
        listener.limits.release(client_host)


class _CloseConnection(Exception):
    """The request cannot be answered in a way the client would understand (already logged)."""


async def handle_frame(broker: BrokerServices, frame: bytes, client_host: str,
                       principal: str = "User:ANONYMOUS") -> Buffers | PendingResponse | None:
    """Decode and dispatch one request from ``principal``; return its encoded response, a pending one, or None."""
    api_key, api_version, correlation_id = peek_request_ids(frame)
    registration = lookup(api_key, api_version)
    if registration is None:
        return unsupported_version_answer(frame, api_key, api_version, correlation_id, client_host)
    try:
        header, request = decode_request_frame(frame)
    except UnsupportedVersion:  # registered but unknown to the codec: cannot happen (handles() checks)
        return unsupported_version_answer(frame, api_key, api_version, correlation_id, client_host)
    ctx = RequestContext(broker, header, client_host, principal)
    return await _answer(ctx, request, registration.handle(ctx, request), time.perf_counter())


# Module-level functions, not closures of handle_frame: a closure that refers
# to itself (as a deferred answer's would) is a reference cycle, left for the
# garbage collector -- several objects per request, collected in long pauses.


async def _answer(ctx: RequestContext, request: Any, work: Awaitable[Any], started: float) -> Buffers | PendingResponse | None:
    """Await the handler (or its deferred part) and encode what it returns.

    A handler that raises gets an error response built from the request
    (:func:`~chronik.protocol.error_responses.error_response`): a storage
    error (the log directory failed) KAFKA_STORAGE_ERROR, logged as a warning,
    rate-limited; anything else UNKNOWN_SERVER_ERROR, logged with its traceback.
    """
    broker = ctx.broker
    api_key, api_version, correlation_id = ctx.header.api_key, ctx.header.api_version, ctx.header.correlation_id
    try:
        response = await work
        if isinstance(response, Deferred):
            return PendingResponse(functools.partial(_answer_deferred, ctx, request, response, started), response.ready,
                                   response.reserve)
        if isinstance(response, Encoded):
            broker.metrics.record_request(_api_name(api_key), time.perf_counter() - started,
                                          {_error_name(code) for code in response.errors})
            return encode_frame([response.payload])
        buffers = None if response is None else encode_frame(encode_response(api_key, api_version, correlation_id, response))
    except Exception as exc:
        if isinstance(exc, StorageError):
            code, message = ErrorCode.KAFKA_STORAGE_ERROR, str(exc)
            if _storage_warnings.allow(api_key):
                log.warning("answering %s KAFKA_STORAGE_ERROR: %s", _api_name(api_key), exc)
        else:
            code, message = ErrorCode.UNKNOWN_SERVER_ERROR, None
            log.exception("handler of API %d v%d failed for %s", api_key, api_version, ctx.client_host)
        broker.metrics.record_request(_api_name(api_key), time.perf_counter() - started, {code.name})
        try:
            response = error_response(response_schema(api_key, api_version), code, request, message)
            return encode_frame(encode_response(api_key, api_version, correlation_id, response))
        except Exception:
            log.exception("cannot build an error response to API %d v%d; closing the connection from %s",
                          api_key, api_version, ctx.client_host)
            raise _CloseConnection from None
    errors = {_error_name(code) for code in error_codes(response)} if response is not None else set()
    broker.metrics.record_request(_api_name(api_key), time.perf_counter() - started, errors)
    return buffers


def _answer_deferred(ctx: RequestContext, request: Any, deferred: Deferred,
                     started: float) -> Awaitable[Buffers | PendingResponse | None]:
    return _answer(ctx, request, deferred.finish(), started)


_storage_warnings = RateLimit(10.0)
_unsupported_warnings = RateLimit(10.0)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _api_name(api_key: int) -> str:
    known = api_version_range(api_key)
    return known.name if known is not None else str(api_key)


def unsupported_version_answer(frame: bytes, api_key: int, api_version: int, correlation_id: int,
                               client_host: str) -> Buffers:
    """UNSUPPORTED_VERSION for a version no handler serves, in a layout that version's client decodes.

    * ApiVersions gets a v0 response with the served list (KIP-511: the
      client retries with a version from it);
    * Produce v0-v2 (message formats v0/v1, pre-0.11 clients) gets a
      response of its own version naming every partition of the request;
    * another version the codec knows gets a response of that version built
      from the request (see :func:`~chronik.protocol.error_responses.error_response`);
    * anything else -- an unknown API, a version no layout is known for, a
      request that does not parse, Produce v0-v2 with acks=0 (it expects no
      answer) -- closes the connection with one log line, as Kafka does:
      a bare error code would read as garbage to the client.
    """
    if api_key == API_VERSIONS:
        from ..handlers.api_versions import api_versions_body

        schema = response_schema(API_VERSIONS, 0)  # a newer client's first request: normal, not logged
        return encode_frame(encode_response(API_VERSIONS, 0, correlation_id,
                                            build(schema, api_versions_body(ErrorCode.UNSUPPORTED_VERSION))))
    served = lookup_range(api_key)
    known = api_version_range(api_key)
    why = f"{_api_name(api_key)} v{api_version} is not supported" + (
        f" (this broker serves v{served[0]}-v{served[1]})" if served
        else " (this broker does not serve this API)" if known is not None else " (unknown API)")
    try:
        if api_key == PRODUCE and api_version in LEGACY_PRODUCE_VERSIONS:
            payload, acks_zero = legacy_produce_error_response(frame, ErrorCode.UNSUPPORTED_VERSION)
            if not acks_zero:
                if _unsupported_warnings.allow((client_host, api_key, api_version)):
                    log.warning("%s from %s: message formats v0/v1 (pre-0.11 clients) are not supported; "
                                "answering UNSUPPORTED_VERSION", why, client_host)
                return encode_frame([payload])
        elif known is not None and api_version in known:
            _, request = decode_request_frame(frame)
            response = error_response(response_schema(api_key, api_version), ErrorCode.UNSUPPORTED_VERSION, request)
            if _unsupported_warnings.allow((client_host, api_key, api_version)):
                log.warning("%s from %s; answering UNSUPPORTED_VERSION", why, client_host)
            return encode_frame(encode_response(api_key, api_version, correlation_id, response))
    except (MalformedMessage, UnsupportedVersion) as exc:
        why += f", and the request does not parse ({exc})"
    log.warning("closing connection from %s: %s", client_host, why)
    raise _CloseConnection


def lookup_range(api_key: int) -> tuple[int, int] | None:
    """The versions of ``api_key`` this broker serves, or None."""
    for served in served_versions():
        if served.api_key == api_key:
            return served.min_version, served.max_version
    return None
