"""The operator HTTP endpoint: ``GET /metrics`` and ``GET /health``.

A deliberately tiny HTTP/1.1 server on trio, with ``h11`` (sans-I/O) doing the
parsing, so it runs in the broker's event loop without threads
(prometheus-client's own server uses threads).

* ``GET /metrics`` -- the registry in Prometheus text format.
* ``GET /health`` -- ``200 ok`` or ``503 <reason>`` when ``health()`` returns a
  failure string (e.g. a failed log directory).
* ``HEAD`` of either: the same response without its body.
* Anything else: 404 for unknown paths, 405 (with ``Allow: GET, HEAD``) for
  other methods, 400 (or 431 for oversized headers) for requests that do not parse.

Bounds, so that a slow or hostile client only ever costs its own task:
request head at most about :data:`MAX_HEADER_BYTES` (h11 checks between
reads, so one read more may be buffered), request body at most
:data:`MAX_BODY_BYTES` (read and discarded), each request -- including the
idle wait for the next one on a keep-alive connection -- must arrive within
``request_timeout`` seconds and each response must be sent within it.
Violations close that connection; the server keeps serving others.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Callable

import h11
import prometheus_client
import trio

__all__ = ["MAX_BODY_BYTES", "MAX_HEADER_BYTES", "serve_operator_http"]

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
RECEIVE_SIZE = 16 * 1024
DEFAULT_REQUEST_TIMEOUT = 10.0
_CLOSE_LINGER = 1.0  # after our last byte, how long we let the client see the close
_TEXT = b"text/plain; charset=utf-8"

Health = Callable[[], "str | None"]


async def serve_operator_http(
    listen: tuple[str, int],
    registry: prometheus_client.CollectorRegistry,
    health: Health,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` and ``/health`` on ``listen`` until cancelled.

    ``health()`` returns None when healthy, else the reason served with 503;
    it runs on the event loop, so it must be quick and must not block.
    ``request_timeout`` bounds, per connection, the wait for each whole
    request (idle keep-alive included) and the sending of each response.

    Calls ``task_status.started(port)`` with the bound port once listening
    (``listen`` port 0 binds a free port).  Binding errors (``OSError``)
    propagate before ``started``.

    Runs forever.  Cancellation: stops accepting and abandons every open
    connection at once (in-flight responses are cut off; there is no state
    to flush); all sockets are closed before this returns.  Every connection
    task lives in this function's nursery.
    """
    host, port = listen
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen for operator HTTP (metrics_listen) on {host}:{port}: "
                                 f"{exc.strerror or exc}") from exc
    if port == 0 and len(listeners) > 1:
        # A name that resolves to several addresses would get a different
        # free port on each; keep one so that the reported port is the port.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, registry, health, request_timeout)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        log.info("operator HTTP endpoint (/metrics, /health) listening on %s:%d", host, bound)
        task_status.started(bound)


def _respond(
    method: str, target: str, registry: prometheus_client.CollectorRegistry, health: Health
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, extra headers, body) for one request: the whole routing table."""
    path = target.split("?", 1)[0]
    if path not in ("/metrics", "/health"):
        return 404, [(b"content-type", _TEXT)], b"not found\n"
    if method not in ("GET", "HEAD"):
        return 405, [(b"content-type", _TEXT), (b"allow", b"GET, HEAD")], b"method not allowed\n"
    if path == "/metrics":
        body = prometheus_client.generate_latest(registry)
        return 200, [(b"content-type", prometheus_client.CONTENT_TYPE_LATEST.encode())], body
    try:
        failure = health()
    except Exception as exc:  # a broken health check is itself unhealthy
        log.exception("health check raised")
        failure = f"health check raised {type(exc).__name__}: {exc}"
    if failure:
        return 503, [(b"content-type", _TEXT)], failure.encode("utf-8", "replace") + b"\n"
    return 200, [(b"content-type", _TEXT)], b"ok\n"


async def _serve_connection(
    stream: trio.SocketStream, registry: prometheus_client.CollectorRegistry, health: Health, timeout: float
) -> None:
    """Answer requests on one connection until it closes, misbehaves or idles out.

    Never raises (except Cancelled): an exception escaping a handler would
    take ``serve_listeners``' nursery, and so the whole endpoint, down.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        while True:
            request = None
            with trio.move_on_after(timeout) as reading:
                request = await _read_request(stream, conn)
            if reading.cancelled_caught:
                if conn.their_state is not h11.IDLE or conn.trailing_data[0]:  # mid-request, not idle
                    await _send_error(stream, conn, 408, "request timed out", timeout)
                return
            if request is None:
                return  # the client closed the connection between requests
            method = request.method.decode("ascii", "replace")
            status, headers, body = _respond(method, request.target.decode("ascii", "replace"), registry, health)
            with trio.move_on_after(timeout) as sending:
                await _send_response(stream, conn, status, headers, body, head=method == "HEAD")
            if sending.cancelled_caught or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # too slow a reader, or Connection: close / HTTP/1.0
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        log.debug("operator HTTP: bad request: %s", exc)
        await _send_error(stream, conn, exc.error_status_hint, str(exc), timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:
        log.exception("operator HTTP: error while serving a connection")
    finally:
        await _close(stream)


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    """Read one whole request (body discarded); None if the client closed cleanly."""
    request: h11.Request | None = None
    body_bytes = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body_bytes += len(event.data)
            if body_bytes > MAX_BODY_BYTES:
                raise _TooLarge()
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


class _TooLarge(h11.RemoteProtocolError):
    def __init__(self) -> None:
        super().__init__(f"request body larger than {MAX_BODY_BYTES} bytes", error_status_hint=413)


async def _send_response(
    stream: trio.SocketStream, conn: h11.Connection, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
    *, head: bool = False, close: bool = False,
) -> None:
    """Send one whole response; for HEAD, only its head (with the body's length)."""
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    if close:
        headers.append((b"connection", b"close"))
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()))
    if not head:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _send_error(stream: trio.SocketStream, conn: h11.Connection, status: int, reason: str, timeout: float) -> None:
    """Best effort: tell the client why we are closing, if the protocol still allows it."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        with trio.move_on_after(timeout):
            await _send_response(stream, conn, status, [(b"content-type", _TEXT)], reason.encode() + b"\n", close=True)
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def _close(stream: trio.SocketStream) -> None:
    """Close so that the client still reads our last response.

    Closing a socket with unread input makes the kernel send RST, which can
    destroy a response the client has not read yet; so half-close, drain for
    a moment, then close.  Cancellation: closes at once.
    """
    try:
        await stream.send_eof()
        with trio.move_on_after(_CLOSE_LINGER):
            drained = 0
            while drained < MAX_BODY_BYTES and (chunk := await stream.receive_some(RECEIVE_SIZE)):
                drained += len(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()
