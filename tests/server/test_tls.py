"""``TlsSocketStream`` (:mod:`chronik.tlsstream`): the server side of a Kafka TLS connection against trio's own
TLS client over loopback TCP, and both sides against each other (the replication port's use).

On Linux loopback a ``send_all`` that returned has put its bytes in the
receiver's socket buffer, so "every record already received" is exact here.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trustme

from chronik.tlsstream import TlsSocketStream


@dataclass
class Pair:
    server: TlsSocketStream
    client: trio.SSLStream[trio.SocketStream]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *, require_client_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if require_client_certificate:
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """(the accepted server side, the client side) of one loopback TCP connection."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        try:
            yield server, client
        finally:
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(server)


@asynccontextmanager
async def tls_pair(ca: trustme.CA, **options: bool) -> AsyncIterator[Pair]:
    async with tcp_pair() as (transport, raw_client):
        server = TlsSocketStream(transport, server_context(ca), **options)
        client = trio.SSLStream(raw_client, client_context(ca), server_hostname="127.0.0.1")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                nursery.start_soon(client.do_handshake)
            yield Pair(server, client)
        finally:
            server.close()


async def test_one_receive_returns_every_record_already_received(ca: trustme.CA) -> None:
    async with tls_pair(ca) as pair:
        for i in range(20):  # 20 TLS records of 1000 bytes
            await pair.client.send_all(bytes([i]) * 1000)
        assert await pair.server.receive_some(5000) == b"".join(bytes([i]) * 1000 for i in range(5))
        assert await pair.server.receive_some() == b"".join(bytes([i]) * 1000 for i in range(5, 20))


async def test_a_record_split_across_receives(ca: trustme.CA) -> None:
    async with tls_pair(ca) as pair:
        await pair.client.send_all(b"x" * 40_000)  # records of 16 KiB: taken 3000 bytes at a time
        received = b""
        while len(received) < 40_000:
            received += await pair.server.receive_some(3000)
        assert received == b"x" * 40_000


async def test_a_send_larger_than_the_socket_buffers_arrives_whole(ca: trustme.CA) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    async with tls_pair(ca) as pair:
        received = bytearray()

        async def read_slowly() -> None:
            while len(received) < len(payload):
                received.extend(await pair.client.receive_some(65536))
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly)
            await pair.server.send_all(payload)  # waits for writability many times
            await pair.server.send_all(b"")
        assert bytes(received) == payload


async def test_both_directions_at_once(ca: trustme.CA) -> None:
    """The connection's reader and writer tasks use the stream concurrently."""
    async with tls_pair(ca) as pair:
        up, down = os.urandom(3_000_000), os.urandom(3_000_000)

        async def receive_all(stream: trio.abc.ReceiveStream, size: int, into: bytearray) -> None:
            while len(into) < size:
                into.extend(await stream.receive_some())

        got_up, got_down = bytearray(), bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.client.send_all, up)
            nursery.start_soon(pair.server.send_all, down)
            nursery.start_soon(receive_all, pair.server, len(up), got_up)
            nursery.start_soon(receive_all, pair.client, len(down), got_down)
        assert bytes(got_up) == up and bytes(got_down) == down


async def test_a_receive_cancelled_while_waiting_loses_nothing(ca: trustme.CA) -> None:
    async with tls_pair(ca) as pair:
        with trio.move_on_after(0.05) as waited:
            await pair.server.receive_some()
        assert waited.cancelled_caught
        await pair.client.send_all(b"after")
        assert await pair.server.receive_some() == b"after"
        await pair.server.send_all(b"still usable")
        assert await pair.client.receive_some() == b"still usable"


async def test_aclose_sends_close_notify(ca: trustme.CA) -> None:
    async with tls_pair(ca) as pair:
        await pair.server.aclose()
        # trio's client raises BrokenResourceError on an end of stream without close_notify: b"" proves it came
        assert await pair.client.receive_some() == b""
        await pair.server.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await pair.server.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await pair.server.send_all(b"x")


async def test_the_client_closing_is_an_end_of_input(ca: trustme.CA) -> None:
    async with tls_pair(ca) as pair:
        await pair.client.send_all(b"last words")
        await pair.client.aclose()
        assert await pair.server.receive_some() == b"last words"
        assert await pair.server.receive_some() == b""


async def test_an_end_of_input_without_close_notify_is_an_end_of_input(ca: trustme.CA) -> None:
    async with tls_pair(ca) as pair:
        await pair.client.transport_stream.aclose()
        assert await pair.server.receive_some() == b""


@pytest.mark.parametrize("ragged_is_error", [False, True], ids=["suppress_ragged_eofs", "ragged EOF is an error"])
async def test_records_received_before_a_failure_come_first(ca: trustme.CA, ragged_is_error: bool) -> None:
    """Records already received when the end of input (no close_notify) comes are returned; then the end
    is b"" or, with ``suppress_ragged_eofs=False``, a broken stream with ``ssl.SSLEOFError`` as the cause."""
    async with tls_pair(ca, suppress_ragged_eofs=not ragged_is_error) as pair:
        for i in range(3):
            await pair.client.send_all(bytes([i]) * 1000)
        await pair.client.transport_stream.aclose()
        await trio.sleep(0.05)  # all three records and the FIN are in the server's socket buffer
        assert await pair.server.receive_some() == b"".join(bytes([i]) * 1000 for i in range(3))
        if ragged_is_error:
            with pytest.raises(trio.BrokenResourceError) as broken:
                await pair.server.receive_some()
            assert isinstance(broken.value.__cause__, ssl.SSLEOFError)
            with pytest.raises(trio.BrokenResourceError):
                await pair.server.send_all(b"x")
        else:
            assert await pair.server.receive_some() == b""


async def test_both_sides_over_tcp_with_hostname_checking(ca: trustme.CA) -> None:
    """The dialing side (``server_side=False``) verifies the server's certificate and host name."""
    for hostname, verified in (("127.0.0.1", True), ("10.9.9.9", False)):
        async with tcp_pair() as (transport, raw_client):
            server = TlsSocketStream(transport, server_context(ca))
            client = TlsSocketStream(raw_client, client_context(ca), server_side=False, server_hostname=hostname)
            try:
                if verified:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(server.do_handshake)
                        nursery.start_soon(client.do_handshake)
                    assert client.getpeercert()["subjectAltName"] == (("IP Address", "127.0.0.1"),)
                    payload = os.urandom(300_000)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(client.send_all, payload)
                        got = b""
                        while len(got) < len(payload):
                            got += await server.receive_some()
                    assert got == payload
                    await server.send_all(b"answer")
                    assert await client.receive_some() == b"answer"
                    await client.aclose()
                    assert await server.receive_some() == b""
                else:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(server.do_handshake)  # fails on the client's alert
                        with pytest.raises(trio.BrokenResourceError) as refused:
                            await client.do_handshake()
                        nursery.cancel_scope.cancel()
                    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
                    assert "IP address mismatch" in str(refused.value.__cause__)
            finally:
                server.close()
                client.close()


async def test_a_refused_client_certificate_gets_its_alert(ca: trustme.CA) -> None:
    """OpenSSL writes the alert to the socket as the handshake fails: the client learns why it was refused."""
    async with tcp_pair() as (transport, raw_client):
        server = TlsSocketStream(transport, server_context(ca, require_client_certificate=True))
        client = trio.SSLStream(raw_client, client_context(ca), server_hostname="127.0.0.1")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)  # TLS 1.3: done before the server has checked
                with pytest.raises(trio.BrokenResourceError) as refused:
                    await server.do_handshake()
            assert isinstance(refused.value.__cause__, ssl.SSLError)
            assert refused.value.__cause__.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
            with pytest.raises(trio.BrokenResourceError) as told:
                await client.receive_some()
            assert "CERTIFICATE_REQUIRED" in str(told.value.__cause__)
            raw = server.detach_transport()  # the refused client's later bytes can still be read and dropped
            await raw_client.send_all(b"more")
            assert (await raw.receive_some()).endswith(b"more")  # after what OpenSSL left unread
            await raw.aclose()
        finally:
            server.close()


async def received_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the peer sent before it closed (or reset) the connection."""
    received = b""
    try:
        while chunk := await stream.receive_some():
            received += chunk
    except trio.BrokenResourceError:  # reset: the broker closed with the client's bytes unread
        pass
    return received


async def test_plaintext_on_a_tls_listener_gets_no_bytes_back(ca: trustme.CA) -> None:
    """A Kafka client without TLS: its request fails the handshake, and it reads only the close."""
    async with tcp_pair() as (transport, raw_client):
        server = TlsSocketStream(transport, server_context(ca))
        await raw_client.send_all(b"\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04test")
        with pytest.raises(trio.BrokenResourceError) as failed:
            await server.do_handshake()
        assert isinstance(failed.value.__cause__, ssl.SSLError)
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()  # broken: only closing is left
        await server.aclose()
        assert await received_until_closed(raw_client) == b""


async def test_a_malformed_client_hello_gets_an_alert(ca: trustme.CA) -> None:
    """A client that speaks TLS badly is told (as Kafka's TLS layer tells it): one alert record, then the close."""
    async with tcp_pair() as (transport, raw_client):
        server = TlsSocketStream(transport, server_context(ca))
        await raw_client.send_all(bytes.fromhex("160301020001") + b"\xee" * 600)
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()
        await server.aclose()
        received = await received_until_closed(raw_client)
        assert received[:1] == b"\x15" and len(received) == 5 + int.from_bytes(received[3:5], "big")  # an alert record


async def test_the_stream_takes_the_socket_over(ca: trustme.CA) -> None:
    async with tcp_pair() as (transport, raw_client):
        server = TlsSocketStream(transport, server_context(ca))
        assert transport.socket.fileno() == -1  # detached: the stream owns the descriptor
        server.close()
        server.close()  # idempotent
        assert await raw_client.receive_some() == b""  # closed, without a byte of TLS
        with pytest.raises(trio.ClosedResourceError):
            server.getpeercert()
