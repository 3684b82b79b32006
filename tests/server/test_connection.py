"""serve_pipelined: responses in request order, whether ready, completed in line, or in a task."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from chronik.protocol import FrameDecoder, encode_frame
from chronik.server.connection import Buffers, PendingResponse, serve_pipelined


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
                         max_in_flight: int = 1000, burst_end: Callable[[], None] | None = None) -> list[bytes]:
    """Serve one socket with ``dispatch``; send ``requests`` from the other end, read ``answers`` frames."""
    server_sock, client_sock = trio.socket.socketpair()
    server, client = trio.SocketStream(server_sock), trio.SocketStream(client_sock)

    async def serve() -> None:
        async with server:
            await serve_pipelined(server, FrameDecoder(1 << 20), dispatch, max_in_flight=max_in_flight,
                                  burst_end=burst_end)

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


async def test_the_reader_stops_at_max_in_flight() -> None:
    """With two answers owed and the first blocked, the third request is not dispatched."""
    release = trio.Event()
    dispatched: list[bytes] = []

    async def dispatch(request: bytes) -> PendingResponse:
        dispatched.append(request)
        return echo_once(request, release)

    async def check_then_release() -> None:
        await trio.testing.wait_all_tasks_blocked()
        assert dispatched == [b"a", b"b"]
        release.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check_then_release)
        answers = await run_connection(dispatch, [b"a", b"b", b"c", b"d"], 4, max_in_flight=2)
    assert answers == [b"a", b"b", b"c", b"d"]


async def test_burst_end_follows_the_last_frame_of_what_arrived() -> None:
    """The broker starts its group commit there: after every frame of a burst was dispatched."""
    events: list[str] = []

    async def dispatch(request: bytes) -> Buffers | PendingResponse | None:
        events.append(request.decode())
        return encode_frame([request])

    answers = await run_connection(dispatch, [b"a", b"b", b"c"], 3, burst_end=lambda: events.append("end"))
    assert answers == [b"a", b"b", b"c"]
    assert events[:3] == ["a", "b", "c"] and events[3] == "end"  # sent together: one burst, then its end
