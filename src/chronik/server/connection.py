"""One client connection: requests pipelined, responses written in request order.

The reader task takes frames off the socket and runs ``dispatch(frame)`` for
each, one at a time, in arrival order.  ``dispatch`` returns what to send:

* a list of buffers -- the response, ready;
* ``None`` -- no response (Produce with acks=0);
* a :class:`PendingResponse` -- the response is still being completed
  (waiting for an fsync or for new data).

Every answered request is queued, in order; the writer task sends the queue
strictly in order.  A pending response is completed in one of two ways:

* *in line* (it has a ``ready`` predicate: a produce waiting for its group
  commit) -- the writer itself awaits ``finish()`` when the response reaches
  the head of the queue.  No task, no event per request: after a group
  commit the writer wakes once and finishes every response that is now
  ready;
* *in its own task* (no ``ready``: a parked fetch, whose wait has a deadline
  and must start now) -- ``finish()`` runs concurrently, and the writer waits
  for it when it reaches the head of the queue.

So many produce requests in flight on one connection share one group commit,
a parked fetch does not hold up the requests behind it, and the client still
sees responses in request order (Kafka's guarantee).  Every response that is
ready when one is sent goes out in the same ``sendmsg``.  When
``max_in_flight`` responses are owed, or ``max_queued_bytes`` of answers
are queued (ready but unsent, or reserved by a parked fetch), the reader
stops reading: backpressure, not unbounded memory -- a client that sends
requests but never reads answers costs at most that budget plus one answer
(Kafka mutes the channel the same way).  The reader yields only once per
``_FRAMES_PER_CHECKPOINT`` frames of one ``receive_some`` (the handlers'
synchronous parts are short), so a burst of pipelined requests costs one trip
through the scheduler, not one each.

Resting: after :data:`BUSY_LINGER` seconds without traffic and with nothing
owed, the writer task and the nursery end and the connection only waits for
its socket to become readable (no failed ``recv``: its exception would
materialise a frame object per coroutine of the stack, kept for the life of
the connection).  That is about 6 KiB per idle connection; the next request
starts the writer again.  Deadlines: ``idle_timeout`` (Kafka's
``connections.max.idle.ms``: nothing sent, received or owed), the same
timeout for a send the client does not read, and ``request_timeout`` for a
request whose first bytes arrived but not its last (slow senders).  The
first two are long (10 minutes by default) and armed on every rest and
every send: with a shared, running :class:`IdleTimer` they are not trio
deadlines, whose cancelled entries trio keeps (with their cancel scopes)
until their time would have come.

Shutdown: at end of input (the client closed its side) the reader stops, the
writer sends every response already owed, then the socket closes.  A
protocol error from ``dispatch`` (an exception in ``close_on``) is logged by
the caller's ``on_close`` hook and ends the connection the same way.  If the
client goes away, or the server is cancelled, everything in flight is
cancelled: appends already queued still become durable (the WAL owns them),
they are only not answered.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import trio

from ..protocol import FrameDecoder

Buffers = list[Any]
RECEIVE_BYTES = 256 * 1024
_IOV_MAX = 1024
#: The reader yields to other tasks once per this many frames of one receive.
_FRAMES_PER_CHECKPOINT = 64
#: Responses this small (all of them bytes) are joined into one buffer before
#: sending: cheaper than describing each to ``sendmsg``.
_JOIN_BELOW = 64 * 1024
#: Bytes of answers one connection may have queued (ready but unsent, or
#: reserved by a parked fetch) before its reader stops reading requests.
#: One answer may take it over: memory per connection stays below this plus
#: the largest answer (``fetch.max.bytes`` for a fetch).
MAX_QUEUED_BYTES = 8 * 1024 * 1024
#: Seconds without traffic (and nothing owed) after which a connection rests:
#: its writer task and nursery end, and only one waiting frame is left (a few
#: KiB less per idle connection).  The next request starts them again.
BUSY_LINGER = 0.5


@dataclass(frozen=True, slots=True)
class PendingResponse:
    """A response still being completed; ``finish()`` returns its buffers (or None).

    ``ready``, if given, makes the response complete *in line*: the writer
    awaits ``finish()`` itself once every earlier response is sent, and
    ``ready()`` (cheap, synchronous) says whether ``finish()`` would return
    without waiting -- then it must not yield either.  Only for a wait that
    may start late without changing its outcome (an fsync already queued);
    a wait with a deadline needs its own task (no ``ready``).

    ``reserve``: the bytes the response may grow to (a parked fetch's
    limit), counted against the connection's queued-bytes budget from the
    start, so a client cannot park many large answers at once.
    """

    finish: Callable[[], Awaitable[Buffers | None]]
    ready: Callable[[], bool] | None = None
    reserve: int = 0


class CloseAfterResponse(Exception):
    """Raised by ``dispatch``: send ``buffers`` (after every answer owed before it), then close the connection.

    ``answered``: whether ``buffers`` held an answer (the caller then lets the
    client read it before closing: :func:`linger_until_client_closes`).
    """

    def __init__(self, buffers: Buffers, reason: str) -> None:
        super().__init__(reason)
        self.buffers = buffers
        self.answered = bool(buffers)


class ConnectionIdle(Exception):
    """Nothing was received or sent, and nothing was owed, for the idle timeout."""


class RequestTimedOut(Exception):
    """A request began to arrive but was not complete within the request timeout."""


class SendStalled(Exception):
    """The client accepted none of a response for the idle timeout."""


class _Task:
    """A pending response completing in its own task; ``charge``: bytes it counts for."""

    __slots__ = ("buffers", "charge", "done")

    def __init__(self, charge: int) -> None:
        self.buffers: Buffers | None = None
        self.charge = charge
        self.done = trio.Event()


class IdleTimer:
    """The idle timeout of many connections (and their stalled sends), with one trio deadline at a time.

    Why not a trio deadline per wait: trio deletes a deadline that ended early
    lazily.  Its heap entry, which holds the cancel scope, stays while a live
    deadline is due before it (in a broker there always is one), until its
    time comes or until stale entries outnumber live ones by 1,000.  Armed on
    every rest and every send with the idle timeout (10 minutes by default),
    such entries kept hundreds of closed connections' cancel scopes alive
    for that long after 5,000 idle connections closed (592 in one measured
    round), and with them the allocator arenas those scopes sat in
    (:mod:`.memory`).

    Here :meth:`wait_from` arms a deadline-less cancel scope in an ordered
    dict, and removes it the moment the wait ends; :meth:`run`, one task per
    listener, cancels the scopes whose deadline passed.  Deadlines are
    ``since + timeout``, kept in the order armed; ``since`` is the time of the
    connection's last activity, at most :data:`BUSY_LINGER` before the wait is
    armed, so a deadline fires at most that late.

    While :meth:`run` is not running (a connection served on its own, in
    tests), :meth:`wait_from` is an ordinary trio deadline.
    """

    __slots__ = ("timeout", "_armed", "_running", "_nonempty")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._armed: OrderedDict[trio.CancelScope, float] = OrderedDict()
        self._running = False
        self._nonempty = trio.Event()

    def wait_from(self, since: float) -> "_IdleWait":
        """A context manager: a cancel scope cancelled at ``since + timeout`` (``cancelled_caught`` tells)."""
        return _IdleWait(self, since)

    @property
    def armed(self) -> int:
        """Waits armed now (connections resting or sending)."""
        return len(self._armed)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Cancel each armed wait whose deadline passed, until cancelled (then waits armed later use trio deadlines).

        ``started`` once waits armed from then on use this task.
        """
        self._running = not math.isinf(self.timeout)
        task_status.started()
        if not self._running:
            return
        try:
            while True:
                now = trio.current_time()
                deadline = math.inf
                while self._armed:
                    scope, deadline = next(iter(self._armed.items()))
                    if deadline > now:
                        break
                    del self._armed[scope]
                    scope.cancel()
                if self._armed:
                    await trio.sleep_until(deadline)  # later arms have later deadlines: no need to wake sooner
                else:
                    self._armed = OrderedDict()  # what a storm of connections grew is given back
                    self._nonempty = trio.Event()
                    await self._nonempty.wait()
        finally:
            self._running = False


class _IdleWait:
    __slots__ = ("_timer", "_since", "_scope")

    def __init__(self, timer: IdleTimer, since: float) -> None:
        self._timer, self._since = timer, since

    def __enter__(self) -> trio.CancelScope:
        timer = self._timer
        if not timer._running:
            self._scope = trio.CancelScope(deadline=self._since + timer.timeout)
        else:
            self._scope = trio.CancelScope()
            if not timer._armed:
                timer._nonempty.set()
            timer._armed[self._scope] = self._since + timer.timeout
        return self._scope.__enter__()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        scope = self._scope
        del self._scope  # no reference to the scope (or its exception) outlives the wait
        self._timer._armed.pop(scope, None)
        return scope.__exit__(kind, exc, tb)


#: No idle timeout.
NO_IDLE_TIMEOUT = IdleTimer(math.inf)


def frame_bytes(buffers: Buffers | None) -> int:
    """Bytes of an encoded frame (its 4-byte size prefix first, as ``encode_frame`` makes it)."""
    if not buffers:
        return 0
    first = buffers[0]
    if len(buffers) > 1 and len(first) == 4:
        return 4 + int.from_bytes(first, "big")
    return sum(memoryview(b).nbytes for b in buffers)


async def send_buffers(stream: trio.abc.Stream, buffers: Buffers, stall: IdleTimer = NO_IDLE_TIMEOUT) -> None:
    """Send one response or several; the buffers go out with ``sendmsg`` (gathered, not joined).

    Only the connection's writer task sends, so using the socket directly
    cannot interleave with another ``send_all``.  Raises :class:`SendStalled`
    when one ``sendmsg`` waits ``stall.timeout`` seconds (the client reads
    nothing); the bytes sent before stay sent.
    """
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    if not isinstance(stream, trio.SocketStream):  # TLS: the stream encrypts; one send of the joined buffers
        with stall.wait_from(trio.current_time()):
            await stream.send_all(b"".join(views))
            return
        raise SendStalled(f"the client read nothing for {stall.timeout:g} s")
    sock = stream.socket
    while views:
        with stall.wait_from(trio.current_time()):
            sent = await sock.sendmsg(views[:_IOV_MAX])
            while sent:
                first = len(views[0])
                if sent >= first:
                    sent -= first
                    del views[0]
                else:
                    views[0] = views[0][sent:]
                    sent = 0
            continue
        raise SendStalled(f"the client read nothing for {stall.timeout:g} s")


async def linger_until_client_closes(stream: trio.abc.Stream, timeout: float) -> bool:
    """After a last answer, wait up to ``timeout`` seconds for the client to close its side; discard what it sends.

    Closing at once would put the end of the stream (FIN, and with TLS
    close_notify) right behind the answer, and a client that reads both in
    one go may report only the disconnect: kafka-python 3.0 reads until
    ``recv`` returns nothing and then drops what it read with the error.
    Closing with input left unread would send a reset instead of a FIN, which
    may cost the client the answer still unread in its receive path.  So the
    connection stays open, read and discarded, until the client -- which
    closes once it has read an error like SASL_AUTHENTICATION_FAILED --
    closes, or until ``timeout`` passes.  Returns True when the client closed
    (or the connection broke), False on timeout.  Cancellation: stops waiting;
    the caller still closes the stream.
    """
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(RECEIVE_BYTES):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        return True
    return False


async def serve_pipelined(
    stream: trio.abc.Stream,
    decoder: FrameDecoder,
    dispatch: Callable[[bytes], Awaitable[Buffers | PendingResponse | None]],
    *,
    max_in_flight: int = 1000,
    max_queued_bytes: int = MAX_QUEUED_BYTES,
    idle_timeout: float = math.inf,
    idle_timer: IdleTimer | None = None,
    request_timeout: float = math.inf,
    burst_end: Callable[[], None] | None = None,
) -> None:
    """Serve one connection until the client closes it (see the module docstring).

    ``burst_end`` is called, synchronously, each time every complete frame of
    what arrived has been dispatched, before the reader waits for more bytes
    (the broker starts its group commit there: the burst's appends share it).

    Limits (the reader stops reading while one is reached; Kafka mutes the
    channel the same way): ``max_in_flight`` answers owed; ``max_queued_bytes``
    of answers ready but not yet sent, plus the ``reserve`` of pending ones.
    Deadlines: :class:`ConnectionIdle` after ``idle_timeout`` seconds without
    a byte received or sent while nothing is owed (Kafka's
    ``connections.max.idle.ms``); :class:`SendStalled` when the client reads
    nothing of an answer for ``idle_timeout``; :class:`RequestTimedOut` when
    a request is still incomplete ``request_timeout`` seconds after its
    first bytes arrived.  ``idle_timer``: a running :class:`IdleTimer`
    shared with other connections, whose timeout replaces ``idle_timeout``.

    An exception from ``decoder`` or ``dispatch`` (a protocol error) or a
    deadline is raised after the responses already owed are sent.  A
    transport error, or an exception from a pending response's ``finish()``,
    cancels the rest and is raised at once.  Exceptions come out plain, never
    as exception groups, and no reference to them is kept: nothing of a
    closed connection waits for the cyclic garbage collector.
    """
    idle = idle_timer if idle_timer is not None else IdleTimer(idle_timeout)
    limits = _Limits(max_in_flight, max_queued_bytes, idle, request_timeout)
    activity = trio.current_time()
    partial_since = activity
    while True:
        # Resting: nothing owed, no task, no nursery -- only this frame waits.
        data = b""
        if decoder.buffered_bytes:
            wait: Any = trio.move_on_at(partial_since + request_timeout)  # short, and rare (slow senders)
        else:
            wait = idle.wait_from(activity)
        with wait as waited:
            if isinstance(stream, trio.SocketStream):
                # Waiting for readability first (not receive_some, which tries a
                # recv and fails with BlockingIOError) keeps a resting connection
                # free of exception tracebacks and of the frame objects they create.
                await trio.lowlevel.wait_readable(stream.socket)
            else:  # TLS: decrypted bytes may already wait inside the stream
                data = await stream.receive_some(RECEIVE_BYTES)
        if waited.cancelled_caught:
            if decoder.buffered_bytes:
                raise RequestTimedOut(f"a request was still incomplete after {request_timeout:g} s")
            raise ConnectionIdle(f"idle for {idle.timeout:g} s")
        if isinstance(stream, trio.SocketStream):
            data = await stream.receive_some(RECEIVE_BYTES)
        if not data:
            return  # end of input while resting: nothing is owed
        activity, partial_since = await _serve_busy(stream, decoder, dispatch, limits, burst_end, partial_since, data)
        if activity < 0:
            return  # end of input, every answer sent


@dataclass(frozen=True, slots=True)
class _Limits:
    max_in_flight: int
    max_queued_bytes: int
    idle: IdleTimer
    request_timeout: float


async def _serve_busy(
    stream: trio.abc.Stream,
    decoder: FrameDecoder,
    dispatch: Callable[[bytes], Awaitable[Buffers | PendingResponse | None]],
    limits: _Limits,
    burst_end: Callable[[], None] | None,
    partial_since: float,
    data: bytes,
) -> tuple[float, float]:
    """Dispatch ``data`` (just received), then read, dispatch and answer until end of input, or until the connection rests.

    Resting: :data:`BUSY_LINGER` seconds without a byte received while
    nothing is owed and no request is half-received.  Returns (time of the
    last activity, when the buffered partial request began) on rest, and
    (-1, -1) at end of input with every answer sent.  Raises as
    :func:`serve_pipelined` does.
    """
    # What is owed, in request order: buffers (ready), a PendingResponse with
    # ``ready`` (finished by the writer), a _Task, or None (a pending response
    # that turned out to need no answer).
    owed: deque[Any] = deque()
    wake_writer: list[trio.Event] = []  # the writer sleeps on it while ``owed`` is empty
    room: list[trio.Event] = []  # the reader sleeps on it while ``owed`` is full
    reading = True
    fatal: list[BaseException] = []
    protocol_error: Exception | None = None
    # [bytes of answers owed (ready, or reserved by pending ones), time of the last send]
    state: list[Any] = [0, -math.inf]
    idle = limits.idle
    result = (-1.0, -1.0)

    async with trio.open_nursery() as nursery:

        def fail(exc: BaseException) -> None:
            if not fatal:
                fatal.append(exc)
            nursery.cancel_scope.cancel()

        async def finish(task: _Task, pending: PendingResponse) -> None:
            try:
                task.buffers = await pending.finish()
                size = frame_bytes(task.buffers)
                state[0] += size - task.charge
                task.charge = size
            except Exception as exc:
                fail(exc)
            finally:
                task.done.set()

        def is_ready(item: Any) -> bool:
            if type(item) is list or item is None:
                return True
            if type(item) is _Task:
                return item.done.is_set()
            return item.ready()

        async def complete(item: Any) -> Buffers | None:
            if type(item) is list or item is None:
                return item
            if type(item) is _Task:
                if not item.done.is_set():
                    await item.done.wait()
                return item.buffers
            return await item.finish()

        def charge(item: Any) -> int:
            if type(item) is list:
                return frame_bytes(item)
            if type(item) is _Task:
                return item.charge
            return 0

        async def write_in_order() -> None:
            """Send what is owed in order; every consecutive response already ready goes in the same send.

            (After a group commit many responses are ready at once: one system
            call for all of them instead of one each.)
            """
            try:
                while True:
                    if not owed:
                        if not reading:
                            return
                        event = trio.Event()
                        wake_writer.append(event)
                        await event.wait()
                        continue
                    out: Buffers = []
                    buffers = await complete(owed[0])
                    charged = charge(owed.popleft())  # after complete(): a task's charge is then its size
                    if buffers:
                        out += buffers
                    while owed and len(out) < _IOV_MAX and is_ready(owed[0]):
                        buffers = await complete(owed[0])
                        charged += charge(owed.popleft())
                        if buffers:
                            out += buffers
                    if out:
                        if len(out) > 2 and all(type(b) is bytes for b in out) and sum(map(len, out)) < _JOIN_BELOW:
                            out = [b"".join(out)]
                        await send_buffers(stream, out, idle)
                        state[1] = trio.current_time()
                    del out, buffers
                    state[0] -= charged
                    if room:
                        room.pop().set()
            except Exception as exc:
                fail(exc)

        def owe(item: Any) -> None:
            owed.append(item)
            if wake_writer:
                wake_writer.pop().set()

        nursery.start_soon(write_in_order)
        try:
            last_received = trio.current_time()
            while True:
                if not data:
                    if decoder.buffered_bytes:
                        deadline = partial_since + limits.request_timeout
                    else:
                        deadline = max(last_received, state[1]) + BUSY_LINGER
                    with trio.move_on_at(deadline) as waited:
                        data = await stream.receive_some(RECEIVE_BYTES)
                    if waited.cancelled_caught:
                        if decoder.buffered_bytes:
                            raise RequestTimedOut(f"a request was still incomplete after {limits.request_timeout:g} s")
                        if owed:
                            last_received = trio.current_time()  # answers are owed: not resting
                            continue
                        result = (max(last_received, state[1]), partial_since)
                        break
                    if not data:
                        break
                last_received = trio.current_time()
                continued = decoder.buffered_bytes > 0
                decoder.feed(data)
                data = b""
                handled = 0
                for frame in decoder:
                    handled += 1
                    if handled % _FRAMES_PER_CHECKPOINT == 0:
                        await trio.lowlevel.checkpoint()  # a long burst does not starve the other connections
                    outcome = await dispatch(frame)
                    if outcome is None:
                        continue
                    if type(outcome) is list:
                        state[0] += frame_bytes(outcome)
                    elif isinstance(outcome, PendingResponse) and outcome.ready is None:
                        task = _Task(outcome.reserve)
                        state[0] += outcome.reserve
                        nursery.start_soon(finish, task, outcome)
                        outcome = task
                    owe(outcome)
                    outcome = None
                    while len(owed) >= limits.max_in_flight or (owed and state[0] >= limits.max_queued_bytes):
                        event = trio.Event()
                        room.append(event)
                        await event.wait()
                if handled or not continued:
                    partial_since = trio.current_time()  # what is left began in this receive (or after a wait for room)
                if burst_end is not None:
                    burst_end()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
            fail(exc)
        except CloseAfterResponse as exc:
            owe(exc.buffers)
            exc.buffers = []
            protocol_error = exc
        except Exception as exc:
            protocol_error = exc
        finally:
            reading = False
            if wake_writer:
                wake_writer.pop().set()
    # Raise with no reference left behind: the exception's traceback holds
    # this frame, so a local (or a closure's list) still naming the exception
    # would be a reference cycle, freed only by the cyclic collector.
    try:
        if fatal:
            raise fatal[0]
        if protocol_error is not None:
            raise protocol_error
    finally:
        fatal.clear()
        protocol_error = None
    return result
