"""The Kafka listener: one trio task per connection, requests answered in order.

Per connection, handlers run up to their return one at a time in arrival
order (so appends happen in request order); a handler that must wait -- a
produce for its fsync, a fetch for new data -- hands back a deferred answer
and the next request proceeds, so the requests a client pipelines share
group commits.  Responses still go back strictly in request order
(:mod:`.connection`).  A Produce with acks=0 gets no response.

Limits: ``max.connections`` / ``max.connections.per.ip`` (a connection
over a cap is closed before a byte is read), ``connections.max.idle.ms``
(one :class:`~.connection.IdleTimer` for all of a listener's connections),
``request_arrival_timeout_ms`` (slow senders), and the per-connection budget
of queued answers (:mod:`.connection`).  Every warning about one peer is
logged at most once a minute per kind, however often the peer retries.
After many connections closed (the count fell to half its peak, by 500 or
more), freed memory is handed back to the operating system (:mod:`.memory`).

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

import copy
import errno
import functools
import logging
import math
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio

from ..config import HostPort
from ..config.listeners import ListenerSpec
from ..security.principal import ANONYMOUS, PrincipalMapper
from ..security.scram import AuthenticationFailed
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
from ..tlsstream import TlsSocketStream
from .security import SaslSession, enabled_mechanisms, principal_mapper, tls_context
from .connection import (
    Buffers,
    CloseAfterResponse,
    ConnectionIdle,
    IdleTimer,
    PendingResponse,
    RequestTimedOut,
    SendStalled,
    linger_until_client_closes,
    serve_pipelined,
)
from .limits import ConnectionLimits, LogLimiter
from .memory import MemoryRelease

log = logging.getLogger(__name__)

API_VERSIONS = 18
#: Seconds a TLS connection's closing handshake (close_notify) may take.
TLS_CLOSE_SECONDS = 1.0
#: Seconds a connection refused with an answer (a failed SASL exchange) waits for the client to
#: read it and close its side, before the broker closes (:func:`.connection.linger_until_client_closes`).
FAILED_AUTHENTICATION_LINGER = 5.0
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


@dataclass
class BoundListener:
    """One configured Kafka listener (:class:`~chronik.config.listeners.ListenerSpec`) and its bound sockets.

    ``advertised``: its advertised address, with port 0 replaced by the bound port.
    """

    spec: ListenerSpec
    sockets: list[trio.SocketListener]
    advertised: HostPort

    @property
    def name(self) -> str:
        return self.spec.name


async def open_listener_set(specs: Sequence[ListenerSpec]) -> list[BoundListener]:
    """Bind every listener of ``specs`` (all or none: on an error the ones bound are closed)."""
    bound: list[BoundListener] = []
    try:
        for spec in specs:
            try:
                sockets = await open_kafka_listeners(spec.bind)
            except OSError as exc:
                raise OSError(exc.errno, f"listener {spec.name} ({spec.protocol}): {exc.strerror}") from exc
            advertised = spec.advertised
            if advertised.port == 0:
                advertised = HostPort(advertised.host, listener_addresses(sockets)[0].port)
            bound.append(BoundListener(spec, sockets, advertised))
    except BaseException:
        await close_listener_set(bound)
        raise
    return bound


async def close_listener_set(bound: Sequence[BoundListener]) -> None:
    """Close every socket of ``bound`` (shielded: also when the caller is being cancelled)."""
    with trio.CancelScope(shield=True):
        for listener in bound:
            for sock in listener.sockets:
                await sock.aclose()


def listener_addresses(listeners: list[trio.SocketListener]) -> list[HostPort]:
    """The addresses the listeners are bound to."""
    return [HostPort(*listener.socket.getsockname()[:2]) for listener in listeners]


async def serve_kafka(broker: KafkaServices, listeners: list[trio.SocketListener] | list[BoundListener], *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve clients on ``listeners`` until cancelled.

    ``listeners``: from :func:`open_listener_set`, or plain sockets from
    :func:`open_kafka_listeners` (one PLAINTEXT listener advertised as the
    node's address).  ``started`` once clients can connect.  Cancellation
    closes the listeners and every connection.  Raises ValueError before
    serving when the TLS files or principal rules cannot be loaded.
    """
    bound: list[BoundListener] = [
        item if isinstance(item, BoundListener) else
        BoundListener(ListenerSpec("PLAINTEXT", HostPort("", 0), broker.advertised, "PLAINTEXT"), [item], broker.advertised)
        for item in listeners
    ]
    config = broker.config
    context = tls_context(config) if any(b.spec.tls for b in bound) else None
    mapper = principal_mapper(config)
    shared = Listener(broker)  # connection caps count over every listener
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.memory.run)
        await nursery.start(shared.idle.run)
        for item in bound:
            for address in listener_addresses(item.sockets):
                log.info("listening for Kafka clients on %s:%d (listener %s, %s, advertised as %s)", address.host,
                         address.port, item.name, item.spec.protocol, item.advertised)
            listener = shared.for_spec(item, context, mapper)
            handle = functools.partial(serve_connection, broker, listener=listener)
            for tcp_listener in item.sockets:
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
    descriptors is logged once per interval, not ten times a second.  This
    task keeps no reference to a connection it handed over: the last one of
    a storm would otherwise stay allocated (its stream and sockets, closed)
    until the next connection came, and keep the allocator arena it sits in
    mapped (:mod:`.memory`).
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
                del stream  # the connection's task owns it now (see the docstring)


class Listener:
    """What the connections of one Kafka listener share: caps, log limiters, idle timer, memory release."""

    def __init__(self, broker: KafkaServices) -> None:
        config = broker.config
        self.limits = ConnectionLimits(config.max_connections, config.max_connections_per_ip)
        self.per_peer = LogLimiter(LOG_INTERVAL)  # one line per peer IP and kind of trouble
        self.refused = LogLimiter(LOG_INTERVAL)  # one line for all refused connections
        self.memory = MemoryRelease()  # freed memory back to the OS after many connections closed
        self.idle = IdleTimer(config.connections_max_idle_ms / 1000)  # every connection's idle timeout
        self.config = config
        self.name: str | None = None
        self.protocol = "PLAINTEXT"
        self.advertised: HostPort | None = None
        self.tls: ssl.SSLContext | None = None
        self.mapper = PrincipalMapper()
        self.mechanisms: tuple[str, ...] = ()
        self.sasl = False

    def for_spec(self, bound: "BoundListener", context: ssl.SSLContext | None, mapper: PrincipalMapper) -> "Listener":
        """This listener's twin for one configured listener: all of the above shared, its own protocol."""
        twin = copy.copy(self)
        twin.name, twin.protocol, twin.advertised = bound.name, bound.spec.protocol, bound.advertised
        twin.tls = context if bound.spec.tls else None
        twin.mapper = mapper
        twin.mechanisms = enabled_mechanisms(self.config)
        twin.sasl = bound.spec.sasl
        return twin

    def warn(self, peer: str, kind: str, message: str, *args: object) -> None:
        """Log ``message`` at warning unless this peer had a line of this kind on this listener
        within the interval (a failure on one listener does not hide one on another)."""
        self.per_peer.log(log, logging.WARNING, (peer, kind, self.name), message, *args)


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
    On a TLS listener the handshake runs here, in the connection's task
    (bounded by ``request_arrival_timeout_ms``); one that fails -- plaintext
    or garbage bytes, an untrusted or missing required client certificate --
    closes the connection with one rate-limited line.  On a SASL listener
    requests go through :class:`~.security.SaslSession` until it succeeds; a
    refused exchange's answer is sent, then the connection is held (input
    discarded) until the client closes it or :data:`FAILED_AUTHENTICATION_LINGER`
    passes, and only then closed.
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
    listener.memory.count(listener.limits.total)
    config = broker.config
    decoder = FrameDecoder(config.socket_request_max_bytes)
    broker.metrics.connections.inc()
    connection: trio.abc.Stream = stream
    tls_stream: TlsSocketStream | None = None
    try:
        principal = ANONYMOUS
        if listener.tls is not None:
            tls_stream = TlsSocketStream(stream, listener.tls)
            connection = tls_stream
            try:
                with trio.fail_after(config.request_arrival_timeout_ms / 1000):
                    await tls_stream.do_handshake()
                principal = listener.mapper.principal_for_certificate(tls_stream.getpeercert())
            except (trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
                cause = exc.__cause__ or exc
                listener.warn(client_host, "tls", "TLS handshake with %s on listener %s (%s) failed: %s; closing "
                              "the connection", client_host, listener.name, here, cause)
                if _client_certificate_refused(cause):
                    # OpenSSL sent its alert (unknown_ca, certificate_required, ...) as the handshake
                    # failed: let the client read it before the close (a Java client then raises
                    # SslAuthenticationException instead of retrying until it times out).
                    transport = tls_stream.detach_transport()
                    try:
                        await linger_until_client_closes(transport, FAILED_AUTHENTICATION_LINGER)
                    finally:
                        transport.socket.close()
                return
        session = (SaslSession(listener.mechanisms, _credential_lookup(broker), config.connections_max_reauth_ms)
                   if listener.sasl else None)
        state = _ConnectionState(principal, listener, session, client_host)

        def dispatch(frame: bytes) -> Awaitable[Buffers | PendingResponse | None]:
            session = state.session
            if session is not None:
                if not session.authenticated:
                    return _sasl_step(broker, state, frame)
                state.principal = session.principal
                if session.expires is None:  # no session lifetime: the exchange is over for good
                    state.session = None
                else:
                    _check_session(broker, state, session, frame)
                    if session.reauthenticating:
                        return _sasl_step(broker, state, frame)
            return handle_frame(broker, frame, client_host, state.principal, listener.name, listener.advertised)

        try:
            await serve_pipelined(connection, decoder, dispatch, burst_end=broker.committer.start_now,
                                  idle_timer=listener.idle, request_timeout=config.request_arrival_timeout_ms / 1000)
        except CloseAfterResponse as exc:
            if exc.answered:  # the client reads the answer before our end of stream reaches it
                await linger_until_client_closes(connection, FAILED_AUTHENTICATION_LINGER)
            raise
        finally:
            # A TLS close sends close_notify: bounded, so a client that reads nothing cannot hold
            # the connection's task (cancelled, trio closes the socket at once).
            with trio.move_on_after(TLS_CLOSE_SECONDS if connection is not stream else math.inf):
                await connection.aclose()
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
    except CloseAfterResponse as exc:
        listener.warn(client_host, "auth", "closing connection from %s on listener %s: %s", client_host,
                      listener.name, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away
    except _CloseConnection:
        pass  # already logged
    except Exception:
        log.exception("closing connection from %s after an unexpected error", client_host)
    finally:
        if tls_stream is not None:
            tls_stream.close()  # a failed handshake or a cancelled close left it open
        else:
            stream.socket.close()
        broker.metrics.connections.dec()
        listener.limits.release(client_host)
        listener.memory.count(listener.limits.total)


def _client_certificate_refused(cause: BaseException) -> bool:
    """Whether a failed TLS handshake refused the client's certificate (untrusted, expired, or missing
    when ``ssl.client.auth=required``): an authentication failure the client should be told of."""
    return isinstance(cause, ssl.SSLCertVerificationError) or (
        isinstance(cause, ssl.SSLError) and cause.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE")


@dataclass(slots=True)
class _ConnectionState:
    """Who the connection is: its principal, and its SASL exchange until that succeeds (kept while the
    session has a lifetime, for re-authentication: ``connections.max.reauth.ms``)."""

    principal: str
    listener: Listener
    session: SaslSession | None
    client_host: str


def _credential_lookup(broker: BrokerServices) -> Callable[[str, str], Any]:
    def lookup(user: str, mechanism: str) -> Any:
        return broker.image.security.credential(user, mechanism)
    return lookup


SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36


async def _token(session: SaslSession, data: bytes) -> bytes:
    """``session.token(data, now)``, in a worker thread when it is CPU-heavy (PLAIN), so logins never stall the loop."""
    now = trio.current_time()
    if session.slow:
        return await trio.to_thread.run_sync(session.token, data, now)
    return session.token(data, now)


def _check_session(broker: KafkaServices, state: _ConnectionState, session: SaslSession, frame: bytes) -> None:
    """A request on an authenticated connection whose SASL session has a lifetime (KIP-368), as Kafka
    checks it: a SaslHandshake may begin a re-authentication (then ``session.reauthenticating``);
    anything else after the session expired closes the connection (:class:`_CloseConnection`)."""
    now = trio.current_time()
    api_key, api_version, _ = peek_request_ids(frame)
    if api_key == SASL_HANDSHAKE and session.begin_reauthentication(now):
        log.debug("%s (%s) re-authenticating on listener %s", state.client_host, session.principal, state.listener.name)
        return
    if session.expired(now):
        broker.metrics.expired_connections_killed.inc()
        state.listener.warn(state.client_host, "expired", "closing connection from %s (%s) on listener %s: its SASL "
                            "session expired (connections.max.reauth.ms=%d) and the client sent API %d v%d instead of "
                            "re-authenticating", state.client_host, session.principal, state.listener.name,
                            session.max_reauth_ms, api_key, api_version)
        raise _CloseConnection


async def _sasl_step(broker: KafkaServices, state: _ConnectionState, frame: bytes) -> Buffers | PendingResponse | None:
    """One request of a connection not yet authenticated (or re-authenticating) on a SASL listener
    (see :mod:`.security`).

    Raises :class:`CloseAfterResponse` (after ``connection.failed.authentication.delay.ms``)
    when the exchange fails, and :class:`_CloseConnection` for a request not allowed before it.
    A completed exchange's SaslAuthenticate answer carries the session lifetime (v1+).
    """
    session = state.session
    assert session is not None
    delay = broker.config.connection_failed_authentication_delay_ms / 1000
    reauthenticating = session.reauthenticating
    if session.raw:  # after a v0 handshake: a bare SASL token, answered by a bare token
        try:
            reply = await _token(session, bytes(frame))
        except AuthenticationFailed as exc:
            await trio.sleep(delay)
            raise CloseAfterResponse([], f"SASL authentication failed: {exc}") from None
        _note_authenticated(broker, state, session, reauthenticating)
        return encode_frame([reply])
    api_key, api_version, correlation_id = peek_request_ids(frame)
    if api_key == API_VERSIONS:
        return await handle_frame(broker, frame, state.client_host, ANONYMOUS, state.listener.name, state.listener.advertised)
    if api_key not in (SASL_HANDSHAKE, SASL_AUTHENTICATE) or lookup(api_key, api_version) is None:
        state.listener.warn(state.client_host, "auth", "closing connection from %s on SASL listener %s: request "
                            "(API %d v%d) %s", state.client_host, state.listener.name, api_key, api_version,
                            "during re-authentication" if session.reauthenticating else "before authentication")
        raise _CloseConnection
    header, request = decode_request_frame(frame)

    def answer(values: dict[str, Any]) -> Buffers:
        response = build(response_schema(api_key, api_version), values)
        return encode_frame(encode_response(api_key, api_version, correlation_id, response))

    if api_key == SASL_HANDSHAKE:
        mechanism = str(request.mechanism)
        if session.handshake(mechanism, api_version):
            return answer({"error_code": 0, "mechanisms": list(session.mechanisms)})
        if session.state == "handshake":
            code, reason = ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"unsupported SASL mechanism {mechanism}"
        else:
            code, reason = ErrorCode.ILLEGAL_SASL_STATE, "unexpected SaslHandshake"
        await trio.sleep(delay)
        raise CloseAfterResponse(answer({"error_code": int(code), "mechanisms": list(session.mechanisms)}), reason)
    try:
        reply = await _token(session, bytes(request.auth_bytes))
    except AuthenticationFailed as exc:
        await trio.sleep(delay)
        what = "re-authentication" if reauthenticating else "authentication"
        raise CloseAfterResponse(answer({"error_code": int(ErrorCode.SASL_AUTHENTICATION_FAILED), "error_message": str(exc),
                                         "auth_bytes": b"", "session_lifetime": 0}),
                                 f"SASL {what} failed: {exc}") from None
    _note_authenticated(broker, state, session, reauthenticating)
    lifetime_ms = session.lifetime_ms if session.authenticated else 0  # set by the exchange's last token only
    return answer({"error_code": 0, "error_message": None, "auth_bytes": reply, "session_lifetime": lifetime_ms})


def _note_authenticated(broker: KafkaServices, state: _ConnectionState, session: SaslSession, reauthenticating: bool) -> None:
    """Count and log (debug) a re-authentication that just completed."""
    if reauthenticating and session.authenticated:
        broker.metrics.sasl_reauthentications.inc()
        log.debug("%s (%s) re-authenticated on listener %s", state.client_host, session.principal, state.listener.name)


class _CloseConnection(Exception):
    """The request cannot be answered in a way the client would understand (already logged)."""


async def handle_frame(broker: BrokerServices, frame: bytes, client_host: str, principal: str = ANONYMOUS,
                       listener: str | None = None, advertised: HostPort | None = None) -> Buffers | PendingResponse | None:
    """Decode and dispatch one request; return its encoded response, a pending one, or None.

    ``principal``: who sent it; ``listener``/``advertised``: the listener it came
    through and the address that listener advertises (None: the node's).
    """
    api_key, api_version, correlation_id = peek_request_ids(frame)
    registration = lookup(api_key, api_version)
    if registration is None:
        return unsupported_version_answer(frame, api_key, api_version, correlation_id, client_host)
    try:
        header, request = decode_request_frame(frame)
    except UnsupportedVersion:  # registered but unknown to the codec: cannot happen (handles() checks)
        return unsupported_version_answer(frame, api_key, api_version, correlation_id, client_host)
    ctx = RequestContext(broker, header, client_host, principal, listener, advertised)
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
