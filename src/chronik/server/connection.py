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
``max_in_flight`` responses are owed the reader stops reading: backpressure,
not unbounded memory.  The reader yields only once per
``_FRAMES_PER_CHECKPOINT`` frames of one ``receive_some`` (the handlers'
synchronous parts are short), so a burst of pipelined requests costs one trip
through the scheduler, not one each.

Shutdown: at end of input (the client closed its side) the reader stops, the
writer sends every response already owed, then the socket closes.  A
protocol error from ``dispatch`` (an exception in ``close_on``) is logged by
the caller's ``on_close`` hook and ends the connection the same way.  If the
client goes away, or the server is cancelled, everything in flight is
cancelled: appends already queued still become durable (the WAL owns them),
they are only not answered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class PendingResponse:
    """A response still being completed; ``finish()`` returns its buffers (or None).

    ``ready``, if given, makes the response complete *in line*: the writer
    awaits ``finish()`` itself once every earlier response is sent, and
    ``ready()`` (cheap, synchronous) says whether ``finish()`` would return
    without waiting -- then it must not yield either.  Only for a wait that
    may start late without changing its outcome (an fsync already queued);
    a wait with a deadline needs its own task (no ``ready``).
    """

    finish: Callable[[], Awaitable[Buffers | None]]
    ready: Callable[[], bool] | None = None


class _Task:
    """A pending response completing in its own task."""

    __slots__ = ("buffers", "done")

    def __init__(self) -> None:
        self.buffers: Buffers | None = None
        self.done = trio.Event()


async def send_buffers(stream: trio.SocketStream, buffers: Buffers) -> None:
    """Send one response; several buffers go out with ``sendmsg`` (gathered, not joined).

    Only the connection's writer task sends, so using the socket directly
    cannot interleave with another ``send_all``.
    """
    if len(buffers) == 1:
        await stream.send_all(buffers[0])
        return
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    sock = stream.socket
    while views:
        sent = await sock.sendmsg(views[:_IOV_MAX])
        while sent:
            first = len(views[0])
            if sent >= first:
                sent -= first
                del views[0]
            else:
                views[0] = views[0][sent:]
                sent = 0


async def serve_pipelined(
    stream: trio.SocketStream,
    decoder: FrameDecoder,
    dispatch: Callable[[bytes], Awaitable[Buffers | PendingResponse | None]],
    *,
    max_in_flight: int = 1000,
    burst_end: Callable[[], None] | None = None,
) -> None:
    """Serve one connection until the client closes it (see the module docstring).

    ``burst_end`` is called, synchronously, each time every complete frame of
    what arrived has been dispatched, before the reader waits for more bytes
    (the broker starts its group commit there: the burst's appends share it).

    An exception from ``decoder`` or ``dispatch`` (a protocol error) is raised
    after the responses already owed are sent.  A transport error, or an
    exception from a pending response's ``finish()``, cancels the rest and is
    raised at once.  Exceptions come out plain, never as exception groups.
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

    async with trio.open_nursery() as nursery:

        def fail(exc: BaseException) -> None:
            if not fatal:
                fatal.append(exc)
            nursery.cancel_scope.cancel()

        async def finish(task: _Task, pending: PendingResponse) -> None:
            try:
                task.buffers = await pending.finish()
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
                    owed.popleft()
                    if buffers:
                        out += buffers
                    while owed and len(out) < _IOV_MAX and is_ready(owed[0]):
                        buffers = await complete(owed.popleft())
                        if buffers:
                            out += buffers
                    if room:
                        room.pop().set()
                    if out:
                        if len(out) > 2 and all(type(b) is bytes for b in out) and sum(map(len, out)) < _JOIN_BELOW:
                            out = [b"".join(out)]
                        await send_buffers(stream, out)
            except Exception as exc:
                fail(exc)

        def owe(item: Any) -> None:
            owed.append(item)
            if wake_writer:
                wake_writer.pop().set()

        nursery.start_soon(write_in_order)
        try:
            while True:
                data = await stream.receive_some(RECEIVE_BYTES)
                if not data:
                    break
                decoder.feed(data)
                handled = 0
                for frame in decoder:
                    handled += 1
                    if handled % _FRAMES_PER_CHECKPOINT == 0:
                        await trio.lowlevel.checkpoint()  # a long burst does not starve the other connections
                    outcome = await dispatch(frame)
                    if outcome is None:
                        continue
                    if isinstance(outcome, PendingResponse):
                        if outcome.ready is None:
                            task = _Task()
                            nursery.start_soon(finish, task, outcome)
                            outcome = task
                    owe(outcome)
                    while len(owed) >= max_in_flight:
                        event = trio.Event()
                        room.append(event)
                        await event.wait()
                if burst_end is not None:
                    burst_end()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
            fail(exc)
        except Exception as exc:
            protocol_error = exc
        finally:
            reading = False
            if wake_writer:
                wake_writer.pop().set()
    if fatal:
        raise fatal[0]
    if protocol_error is not None:
        raise protocol_error
