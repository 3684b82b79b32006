"""One client connection: requests pipelined, responses written in request order.

The reader task takes frames off the socket and runs ``dispatch(frame)`` for
each, one at a time, in arrival order.  ``dispatch`` returns what to send:

* a list of buffers -- the response, ready;
* ``None`` -- no response (Produce with acks=0);
* a :class:`PendingResponse` -- the response is still being completed
  (waiting for an fsync or for new data); its ``finish()`` runs in its own
  task while the reader goes on with the next request.

Every answered request takes a slot in a bounded queue; the writer task
sends slots strictly in order, waiting for each pending one to finish.  So
many produce requests in flight on one connection share one group commit,
a parked fetch does not hold up the requests behind it, and the client still
sees responses in request order (Kafka's guarantee).  When
``max_in_flight`` responses are outstanding the reader stops reading:
backpressure, not unbounded memory.

Shutdown: at end of input (the client closed its side) the reader stops, the
writer sends every response already owed, then the socket closes.  A
protocol error from ``dispatch`` (an exception in ``close_on``) is logged by
the caller's ``on_close`` hook and ends the connection the same way.  If the
client goes away, or the server is cancelled, everything in flight is
cancelled: appends already queued still become durable (the WAL owns them),
they are only not answered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..protocol import FrameDecoder

Buffers = list[Any]
RECEIVE_BYTES = 256 * 1024
_IOV_MAX = 1024


@dataclass(frozen=True, slots=True)
class PendingResponse:
    """A response still being completed; ``finish()`` returns its buffers (or None)."""

    finish: Callable[[], Awaitable[Buffers | None]]


@dataclass(slots=True)
class _Slot:
    buffers: Buffers | None = None
    done: trio.Event = field(default_factory=trio.Event)


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
) -> None:
    """Serve one connection until the client closes it (see the module docstring).

    An exception from ``decoder`` or ``dispatch`` (a protocol error) is raised
    after the responses already owed are sent.  A transport error, or an
    exception from a pending response's ``finish()``, cancels the rest and is
    raised at once.  Exceptions come out plain, never as exception groups.
    """
    slots_in, slots_out = trio.open_memory_channel[_Slot](max_in_flight)
    fatal: list[BaseException] = []
    protocol_error: Exception | None = None

    async with trio.open_nursery() as nursery:

        def fail(exc: BaseException) -> None:
            if not fatal:
                fatal.append(exc)
            nursery.cancel_scope.cancel()

        async def finish(slot: _Slot, pending: PendingResponse) -> None:
            try:
                slot.buffers = await pending.finish()
            except Exception as exc:
                fail(exc)
            finally:
                slot.done.set()

        async def write_in_order() -> None:
            """Send slots in order; every consecutive slot already done goes in the same sendmsg.

            (After a group commit many responses are ready at once: one system
            call for all of them instead of one each.)
            """
            carried: _Slot | None = None
            try:
                async with slots_out:
                    while True:
                        if carried is not None:
                            slot, carried = carried, None
                        else:
                            try:
                                slot = await slots_out.receive()
                            except trio.EndOfChannel:
                                return
                        await slot.done.wait()
                        out = list(slot.buffers or ())
                        while len(out) < _IOV_MAX:
                            try:
                                following = slots_out.receive_nowait()
                            except (trio.WouldBlock, trio.EndOfChannel):
                                break
                            if not following.done.is_set():
                                carried = following
                                break
                            out.extend(following.buffers or ())
                        if out:
                            await send_buffers(stream, out)
            except Exception as exc:
                fail(exc)

        nursery.start_soon(write_in_order)
        async with slots_in:
            try:
                while True:
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        break
                    decoder.feed(data)
                    for frame in decoder:
                        outcome = await dispatch(frame)
                        if outcome is None:
                            continue
                        slot = _Slot()
                        if isinstance(outcome, PendingResponse):
                            nursery.start_soon(finish, slot, outcome)
                        else:
                            slot.buffers = outcome
                            slot.done.set()
                        await slots_in.send(slot)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
                fail(exc)
            except Exception as exc:
                protocol_error = exc
    if fatal:
        raise fatal[0]
    if protocol_error is not None:
        raise protocol_error
