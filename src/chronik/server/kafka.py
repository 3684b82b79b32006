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
* an API or version that no handler serves gets an UNSUPPORTED_VERSION
  response with the request's correlation id (for ApiVersions, a v0
  response listing what is served, so the client can downgrade);
* a malformed request body is logged and the connection is closed (Kafka
  does the same: the stream position can no longer be trusted);
* a handler's unexpected exception (or a response that cannot be encoded)
  is logged with its traceback; if the response has a top-level error code
  the client gets UNKNOWN_SERVER_ERROR in it and the connection goes on,
  otherwise (an empty response would read as success) the connection is
  closed so the client retries elsewhere or later;
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
from dataclasses import MISSING, fields
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..config import HostPort
from ..handlers import lookup, served_versions
from ..handlers.registry import Deferred, Encoded, RequestContext
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
from .connection import Buffers, ConnectionIdle, PendingResponse, RequestTimedOut, SendStalled, serve_pipelined
from .limits import ConnectionLimits, LogLimiter

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)

API_VERSIONS = 18


async def serve_kafka(broker: "Broker", *, task_status: trio.TaskStatus[list[HostPort]] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``broker.config.listen`` and serve clients until cancelled.

    With listen port 0 the bound port is also advertised (the broker's
    ``advertised`` address is updated before ``started``).
    """
    from ..broker import register_self

    listen = broker.config.listen
    listeners = await trio.open_tcp_listeners(listen.port, host=listen.host or None)
    if listen.port == 0:
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = [HostPort(*listener.socket.getsockname()[:2]) for listener in listeners]
    if broker.advertised.port == 0:
        broker.advertised = HostPort(broker.advertised.host, bound[0].port)
    if broker.consensus is None:
        await register_self(broker)
    for address in bound:
        log.info("listening for Kafka clients on %s:%d (advertised as %s)", address.host, address.port, broker.advertised)

    listener = Listener(broker)
    handle = functools.partial(serve_connection, broker, listener=listener)

    async with trio.open_nursery() as nursery:
        for tcp_listener in listeners:
            nursery.start_soon(accept_connections, tcp_listener, handle, nursery, listener.refused)
        if broker.consensus is not None:
            nursery.start_soon(register_self, broker)  # once the cluster has a controller
        task_status.started(bound)


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

    def __init__(self, broker: "Broker") -> None:
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


async def serve_connection(broker: "Broker", stream: trio.SocketStream, listener: Listener | None = None) -> None:
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
    """The request cannot be answered in a way the client would understand."""


async def handle_frame(broker: "Broker", frame: bytes, client_host: str) -> Buffers | PendingResponse | None:
    """Decode and dispatch one request; return its encoded response, a pending one, or None."""
    api_key, api_version, correlation_id = peek_request_ids(frame)
    registration = lookup(api_key, api_version)
    if registration is None:
        log.warning("unsupported API %d version %d from %s", api_key, api_version, client_host)
        return encode_frame(unsupported_version_response(api_key, api_version, correlation_id))
    try:
        header, request = decode_request_frame(frame)
    except UnsupportedVersion:  # registered but unknown to the codec: cannot happen (handles() checks)
        return encode_frame(unsupported_version_response(api_key, api_version, correlation_id))
    ctx = RequestContext(broker, header, client_host)
    return await _answer(ctx, registration.handle(ctx, request), time.perf_counter())


# Module-level functions, not closures of handle_frame: a closure that refers
# to itself (as a deferred answer's would) is a reference cycle, left for the
# garbage collector -- several objects per request, collected in long pauses.


async def _answer(ctx: RequestContext, work: Awaitable[Any], started: float) -> Buffers | PendingResponse | None:
    """Await the handler (or its deferred part) and encode what it returns."""
    broker = ctx.broker
    api_key, api_version, correlation_id = ctx.header.api_key, ctx.header.api_version, ctx.header.correlation_id
    try:
        response = await work
        if isinstance(response, Deferred):
            return PendingResponse(functools.partial(_answer_deferred, ctx, response, started), response.ready,
                                   response.reserve)
        if isinstance(response, Encoded):
            broker.metrics.record_request(_api_name(api_key), time.perf_counter() - started,
                                          {_error_name(code) for code in response.errors})
            return encode_frame([response.payload])
        buffers = None if response is None else encode_frame(encode_response(api_key, api_version, correlation_id, response))
    except Exception:
        log.exception("handler of API %d v%d failed for %s", api_key, api_version, ctx.client_host)
        broker.metrics.record_request(_api_name(api_key), time.perf_counter() - started, {"UNKNOWN_SERVER_ERROR"})
        schema = response_schema(api_key, api_version)
        if not has_top_level_error(schema):
            raise _CloseConnection from None
        response = error_response(schema, ErrorCode.UNKNOWN_SERVER_ERROR)
        return encode_frame(encode_response(api_key, api_version, correlation_id, response))
    errors = {_error_name(code) for code in error_codes(response)} if response is not None else set()
    broker.metrics.record_request(_api_name(api_key), time.perf_counter() - started, errors)
    return buffers


def _answer_deferred(ctx: RequestContext, deferred: Deferred, started: float) -> Awaitable[Buffers | PendingResponse | None]:
    return _answer(ctx, deferred.finish(), started)


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _api_name(api_key: int) -> str:
    known = api_version_range(api_key)
    return known.name if known is not None else str(api_key)


def unsupported_version_response(api_key: int, api_version: int, correlation_id: int) -> list[Any]:
    """UNSUPPORTED_VERSION for a version no handler serves.

    ApiVersions gets a v0 response with the served list (KIP-511: the client
    retries with a version from it).  Another API gets an error response in
    its requested version if the codec knows it and that response has a
    top-level error code; otherwise a bare header and INT16 error code (an
    empty response without an error would read as success).
    """
    if api_key == API_VERSIONS:
        from ..handlers.api_versions import api_versions_body

        schema = response_schema(API_VERSIONS, 0)
        return encode_response(API_VERSIONS, 0, correlation_id, build(schema, api_versions_body(ErrorCode.UNSUPPORTED_VERSION)))
    known = api_version_range(api_key)
    if known is not None and api_version in known:
        schema = response_schema(api_key, api_version)
        if has_top_level_error(schema):
            return encode_response(api_key, api_version, correlation_id, error_response(schema, ErrorCode.UNSUPPORTED_VERSION))
    return [correlation_id.to_bytes(4, "big", signed=True) + int(ErrorCode.UNSUPPORTED_VERSION).to_bytes(2, "big")]


def has_top_level_error(schema: type) -> bool:
    """Whether a response of ``schema`` can carry an error without naming the request's partitions."""
    return any(field.metadata.get("kafka_type") == "error_code" for field in fields(schema))


def error_response(schema: type, code: ErrorCode) -> Any:
    """A response of ``schema`` whose top-level error fields carry ``code``; arrays empty."""
    values: dict[str, Any] = {}
    for field in fields(schema):
        kafka_type = field.metadata.get("kafka_type")
        if kafka_type == "error_code":
            values[field.name] = int(code)
        elif field.default is MISSING and field.default_factory is MISSING:
            values[field.name] = _zero(field)
    return build(schema, values)


def _zero(field: Any) -> Any:
    kafka_type = field.metadata.get("kafka_type")
    if "tuple" in str(field.type):
        return ()
    if kafka_type is None:  # a nested entity
        return None
    if kafka_type in ("string",):
        return ""
    if kafka_type == "bool":
        return False
    if kafka_type in ("uuid",):
        return None
    if kafka_type in ("bytes", "records"):
        return b""
    return -1 if kafka_type.startswith("int") else 0
