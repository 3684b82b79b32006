"""serve_pipelined: responses in request order, whether ready, completed in line, or in a task."""

from __future__ import annotations

import functools
import gc
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from chronik.protocol import FrameDecoder, encode_frame
from chronik.server.connection import (
    Buffers,
    ConnectionIdle,
    IdleTimer,
    PendingResponse,
    RequestTimedOut,
    SendStalled,
    linger_until_client_closes,
    serve_pipelined,
)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def echo_once(request: bytes, settled: trio.Event) -> PendingResponse:
    """An answer (the request echoed) that is ready once ``settled`` is set, as a group commit's is."""
    async def finish() -> Buffers:
        if not settled.is_set():
            await settled.wait()
        return encode_frame([request])
    return PendingResponse(finish, settled.is_set)


async def read_frames(stream: trio.SocketStream, count: int) -> list[bytes]:
    decoder = FrameDecoder(1 << 20)
    frames: list[bytes] = []
    while len(frames) < count:
        data = await stream.receive_some(65536)
        assert data, f"connection closed after {frames}"
        decoder.feed(data)
        frames.extend(decoder)
    return frames


Dispatch = Callable[[bytes], Awaitable[Buffers | PendingResponse | None]]


async def run_connection(dispatch: Dispatch, requests: list[bytes], answers: int, *,
                         max_in_flight: int = 1000, burst_end: Callable[[], None] | None = None,
                         max_queued_bytes: int = 8 << 20) -> list[bytes]:
    """Serve one socket with ``dispatch``; send ``requests`` from the other end, read ``answers`` frames."""
    server_sock, client_sock = trio.socket.socketpair()
    server, client = trio.SocketStream(server_sock), trio.SocketStream(client_sock)

    async def serve() -> None:
        async with server:
            await serve_pipelined(server, FrameDecoder(1 << 20), dispatch, max_in_flight=max_in_flight,
                                  burst_end=burst_end, max_queued_bytes=max_queued_bytes)

    with trio.fail_after(5):
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(b"".join(frame(r) for r in requests))
            frames = await read_frames(client, answers)
            await client.send_eof()
            assert await client.receive_some(1) == b""  # the server sent nothing more, then closed
    return frames


async def test_every_kind_of_answer_goes_back_in_request_order() -> None:
    """Ready, in line (blocked until a commit), in a task (a long poll), none: still request order."""
    commit = trio.Event()
    poll_started: list[float] = []

    async def dispatch(request: bytes) -> Buffers | PendingResponse | None:
        kind = request.split(b":")[0]
        if kind == b"ready":
            return encode_frame([request])
        if kind == b"none":
            return None
        if kind == b"inline":
            return echo_once(request, commit)

        async def long_poll() -> Buffers:
            poll_started.append(trio.current_time())
            await trio.sleep(0.05)
            commit.set()  # the in-line answers ahead of this one can only finish now
            return encode_frame([request])
        return PendingResponse(long_poll)

    requests = [b"inline:1", b"ready:2", b"none:3", b"inline:4", b"poll:5", b"inline:6", b"ready:7"]
    answers = await run_connection(dispatch, requests, 6)
    assert answers == [b"inline:1", b"ready:2", b"inline:4", b"poll:5", b"inline:6", b"ready:7"]
    assert len(poll_started) == 1  # the long poll ran in its own task, not behind the blocked in-line answers


async def test_in_line_answers_ready_together_are_sent_in_one_write() -> None:
    commit = trio.Event()
    finished = 0

    async def dispatch(request: bytes) -> PendingResponse:
        async def finish() -> Buffers:
            nonlocal finished
            if not commit.is_set():
                await commit.wait()
            finished += 1
            return encode_frame([request])
        return PendingResponse(finish, commit.is_set)

    async def commit_later() -> None:
        await trio.sleep(0.05)
        commit.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit_later)
        answers = await run_connection(dispatch, [b"%d" % i for i in range(100)], 100)
    assert answers == [b"%d" % i for i in range(100)]
    assert finished == 100


async def test_a_failing_in_line_answer_ends_the_connection() -> None:
    async def dispatch(request: bytes) -> PendingResponse:
        async def finish() -> Buffers:
            raise RuntimeError("boom")
        return PendingResponse(finish, lambda: True)

    server_sock, client_sock = trio.socket.socketpair()
    server, client = trio.SocketStream(server_sock), trio.SocketStream(client_sock)
    with trio.fail_after(5):
        async with client, trio.open_nursery() as nursery:
            async def serve() -> None:
                with pytest.raises(RuntimeError, match="boom"):
                    await serve_pipelined(server, FrameDecoder(1 << 20), dispatch)
                await server.aclose()
            nursery.start_soon(serve)
            await client.send_all(frame(b"x"))
            assert await client.receive_some(10) == b""


async def only_two_dispatched_until_released(answer: Callable[[bytes, trio.Event], PendingResponse],
                                             requests: list[bytes], **limits: int) -> None:
    """Serve ``requests``; until the answers are released only the first two may have been dispatched."""
    release = trio.Event()
    dispatched: list[bytes] = []

    async def dispatch(request: bytes) -> PendingResponse:
        dispatched.append(request)
        return answer(request, release)

    async def check_then_release() -> None:
        await trio.testing.wait_all_tasks_blocked()
        assert dispatched == requests[:2]
        release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check_then_release)
        answers = await run_connection(dispatch, requests, len(requests), **limits)
    assert answers == requests


async def test_the_reader_stops_at_max_in_flight() -> None:
    """With two answers owed and the first blocked, the third request is not dispatched."""
    await only_two_dispatched_until_released(echo_once, [b"a", b"b", b"c", b"d"], max_in_flight=2)


async def test_burst_end_follows_the_last_frame_of_what_arrived() -> None:
    """The broker starts its group commit there: after every frame of a burst was dispatched."""
    events: list[str] = []

    async def dispatch(request: bytes) -> Buffers | PendingResponse | None:
        events.append(request.decode())
        return encode_frame([request])

    answers = await run_connection(dispatch, [b"a", b"b", b"c"], 3, burst_end=lambda: events.append("end"))
    assert answers == [b"a", b"b", b"c"]
    assert events[:3] == ["a", "b", "c"] and events[3] == "end"  # sent together: one burst, then its end


# -- bounded memory: queued answers, idle and slow connections, no reference cycles ------


async def test_the_reader_stops_while_the_client_reads_no_answers() -> None:
    """1 MiB answers to a client that never reads: dispatching stops near the byte budget."""
    dispatched: list[bytes] = []

    async def dispatch(request: bytes) -> Buffers:
        dispatched.append(request)
        return encode_frame([request, b"x" * (1 << 20)])

    server_sock, client_sock = trio.socket.socketpair()
    server, client = trio.SocketStream(server_sock), trio.SocketStream(client_sock)
    async with client, server, trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_pipelined(server, FrameDecoder(1 << 20), dispatch, max_queued_bytes=3 << 20))
        await client.send_all(b"".join(frame(b"%d" % i) for i in range(50)))
        await trio.sleep(0.2)
        await trio.testing.wait_all_tasks_blocked()
        # the budget (3 answers), plus the one being sent, plus the one that took it over the budget
        assert 3 <= len(dispatched) <= 5
        nursery.cancel_scope.cancel()


async def test_a_parked_answer_reserves_its_size() -> None:
    """Two parked answers reserving 2 MiB each fill a 3 MiB budget: the third request waits for one."""
    def parked(request: bytes, release: trio.Event) -> PendingResponse:
        async def finish() -> Buffers:
            await release.wait()
            return encode_frame([request])
        return PendingResponse(finish, reserve=2 << 20)

    await only_two_dispatched_until_released(parked, [b"a", b"b", b"c"], max_queued_bytes=3 << 20)


async def echo(request: bytes) -> Buffers:
    return encode_frame([request])


async def serve_until_closed(stream: trio.SocketStream, **limits: float) -> BaseException | None:
    """serve_pipelined(echo) on ``stream``; the exception it ended with, if any."""
    try:
        async with stream:
            await serve_pipelined(stream, FrameDecoder(1 << 20), echo, **limits)  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    return None


@asynccontextmanager
async def idle_timeout(kind: str, seconds: float) -> AsyncIterator[dict[str, Any]]:
    """serve_pipelined's arguments for an idle timeout: the connection's own trio deadlines, or a shared IdleTimer."""
    if kind == "own deadlines":
        yield {"idle_timeout": seconds}
        return
    timer = IdleTimer(seconds)
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.run)
        yield {"idle_timer": timer}
        nursery.cancel_scope.cancel()


IDLE_KINDS = ["own deadlines", "shared timer"]


@pytest.mark.parametrize("kind", IDLE_KINDS)
@pytest.mark.parametrize("sends", [b"", frame(b"answered")])
async def test_an_idle_connection_is_closed(autojump_clock: trio.abc.Clock, sends: bytes, kind: str) -> None:
    server_sock, client_sock = trio.socket.socketpair()
    client = trio.SocketStream(client_sock)
    async with client, idle_timeout(kind, 600) as limits:
        await client.send_all(sends)
        started = trio.current_time()
        ended = await serve_until_closed(trio.SocketStream(server_sock), **limits)
        assert isinstance(ended, ConnectionIdle)
        assert 600 <= trio.current_time() - started < 601
        assert await client.receive_some(1 << 16) == (sends and frame(b"answered"))


async def test_connections_sharing_a_timer_are_closed_each_at_its_own_deadline(autojump_clock: trio.abc.Clock) -> None:
    ended: dict[int, float] = {}
    async with idle_timeout("shared timer", 60) as limits, trio.open_nursery() as nursery:
        clients = []
        for n in range(3):
            server_sock, client_sock = trio.socket.socketpair()
            clients.append(trio.SocketStream(client_sock))

            async def serve(n: int = n, stream: trio.SocketStream = trio.SocketStream(server_sock)) -> None:
                assert isinstance(await serve_until_closed(stream, **limits), ConnectionIdle)
                ended[n] = trio.current_time()
            nursery.start_soon(serve)
            await trio.sleep(10)
        await clients[1].send_all(frame(b"still here"))  # at 30 s: connection 1 is idle from then on
        assert await read_frames(clients[1], 1) == [b"still here"]
    for client in clients:
        await client.aclose()
    assert ended[0] == pytest.approx(60, abs=0.01) and ended[2] == pytest.approx(80, abs=0.01)
    assert 90 <= ended[1] < 90 + 1  # its last activity + 60 s (+ at most the busy linger)
    assert limits["idle_timer"].armed == 0


async def test_closed_connections_keep_nothing_alive_in_a_shared_timer(autojump_clock: trio.abc.Clock) -> None:
    """A trio deadline that ends early stays in trio's heap, with its cancel scope, while an earlier live
    deadline is above it -- here an older connection's, in a broker also every periodic task's -- until
    its time (10 minutes for the idle timeout); a shared IdleTimer forgets a wait the moment it ends."""
    def cancel_scopes() -> int:
        return sum(type(o) is trio.CancelScope for o in gc.get_objects())

    async with idle_timeout("shared timer", 600) as limits, trio.open_nursery() as nursery:
        old_server, old_client = trio.socket.socketpair()
        nursery.start_soon(functools.partial(serve_until_closed, trio.SocketStream(old_server), **limits))
        await trio.sleep(1)  # resting: the earliest idle deadline from now on
        before = cancel_scopes()
        for _ in range(50):
            server_sock, client_sock = trio.socket.socketpair()
            async with trio.SocketStream(client_sock) as client:
                nursery.start_soon(functools.partial(serve_until_closed, trio.SocketStream(server_sock), **limits))
                await client.send_all(frame(b"hello"))
                assert await read_frames(client, 1) == [b"hello"]  # one send
                await trio.sleep(1)  # and a rest
        await trio.sleep(1)
        assert cancel_scopes() - before < 10
        old_client.close()



async def test_a_connection_with_an_answer_owed_is_not_idle(autojump_clock: trio.abc.Clock) -> None:
    async def slow(request: bytes) -> PendingResponse:
        async def finish() -> Buffers:
            await trio.sleep(30)
            return encode_frame([request])
        return PendingResponse(finish)

    server_sock, client_sock = trio.socket.socketpair()
    server, client = trio.SocketStream(server_sock), trio.SocketStream(client_sock)
    async with client, trio.open_nursery() as nursery:
        async def serve() -> None:
            with pytest.raises(ConnectionIdle):
                async with server:
                    await serve_pipelined(server, FrameDecoder(1 << 20), slow, idle_timeout=10)
        nursery.start_soon(serve)
        started = trio.current_time()
        await client.send_all(frame(b"slow"))
        assert (await read_frames(client, 1)) == [b"slow"]
        assert trio.current_time() - started >= 30  # answered after 30 s, though idle_timeout is 10


async def test_a_request_that_never_completes_is_cut_off(autojump_clock: trio.abc.Clock) -> None:
    server_sock, client_sock = trio.socket.socketpair()
    client = trio.SocketStream(client_sock)
    async with client:
        await client.send_all(frame(b"first") + frame(b"slowloris")[:7])
        started = trio.current_time()
        ended = await serve_until_closed(trio.SocketStream(server_sock), idle_timeout=600, request_timeout=30)
        assert isinstance(ended, RequestTimedOut)
        assert 30 <= trio.current_time() - started < 31
        assert await read_frames(client, 1) == [b"first"]


@pytest.mark.parametrize("kind", IDLE_KINDS)
async def test_a_client_that_reads_nothing_is_cut_off(autojump_clock: trio.abc.Clock, kind: str) -> None:
    async def big(request: bytes) -> Buffers:
        return encode_frame([b"x" * (4 << 20)])

    server_sock, client_sock = trio.socket.socketpair()
    async with trio.SocketStream(client_sock) as client, idle_timeout(kind, 60) as limits:
        await client.send_all(frame(b"give me 4 MiB"))
        started = trio.current_time()
        with pytest.raises(SendStalled):
            async with trio.SocketStream(server_sock) as server:
                await serve_pipelined(server, FrameDecoder(1 << 20), big, **limits)  # type: ignore[arg-type]
        assert 60 <= trio.current_time() - started < 61


@pytest.mark.parametrize("ending", ["reset", "bad frame", "end of input"])
async def test_closed_connections_leave_nothing_for_the_cyclic_collector(ending: str) -> None:
    """Every object of a connection is freed by reference counting alone, however it ends."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def serve(stream: trio.SocketStream) -> None:
        await serve_until_closed(stream)

    async def connect_and_end() -> None:
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        await stream.send_all(frame(b"hello"))
        assert await read_frames(stream, 1) == [b"hello"]
        if ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif ending == "bad frame":
            await stream.send_all(struct.pack(">i", -1))
            assert await stream.receive_some(1) == b""
        await stream.aclose()

    gc.collect()
    gc.disable()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, serve, listeners)
            for _ in range(3):  # warm up
                await connect_and_end()
            await trio.sleep(0.2)
            gc.collect()
            for _ in range(50):
                await connect_and_end()
            await trio.sleep(0.2)
            await trio.testing.wait_all_tasks_blocked()
            unreachable = gc.collect()
            nursery.cancel_scope.cancel()
    finally:
        gc.enable()
    assert unreachable / 50 < 1, f"{unreachable} objects in reference cycles after 50 connections ended ({ending})"


async def test_a_last_answer_lingers_until_the_client_closes(autojump_clock: trio.abc.Clock) -> None:
    """After a last answer the server neither closes nor half-closes: it discards what the client still sends
    and returns as soon as the client closes its side."""
    server, client = trio.testing.memory_stream_pair()
    closed_at: list[float] = []

    async def linger() -> None:
        assert await linger_until_client_closes(server, 5.0)
        closed_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(linger)
        await client.send_all(b"x" * 100_000)  # pipelined behind the refused request: read and dropped
        await trio.sleep(3)
        assert not closed_at
        await client.send_eof()
    assert closed_at == [pytest.approx(3.0)]


async def test_a_client_that_never_closes_is_let_go_after_the_linger(autojump_clock: trio.abc.Clock) -> None:
    server, client = trio.testing.memory_stream_pair()
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"garbage")
        assert not await linger_until_client_closes(server, 5.0)
    assert trio.current_time() - started == pytest.approx(5.0)


async def test_a_reset_ends_the_linger() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client_sock = socket.create_connection(listener.getsockname())
    server_sock, _ = listener.accept()
    listener.close()
    server = trio.SocketStream(trio.socket.from_stdlib_socket(server_sock))
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client_sock.close()  # SO_LINGER 0: a reset, not a FIN
    with trio.fail_after(5):
        assert await linger_until_client_closes(server, 60.0)
    await server.aclose()
