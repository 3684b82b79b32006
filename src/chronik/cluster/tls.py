"""Mutual TLS on the replication port: :class:`TlsNetwork`, a :class:`~.network.Network` over another one.

With ``replication_security_protocol=SSL`` every connection of the
replication port -- Raft messages, forwarded metadata writes, partition
fetches -- is TLS with both sides authenticated:

* the accepting node requires a certificate from the dialing node and
  verifies it against its trust store (``server`` context, ``CERT_REQUIRED``);
* the dialing node verifies the accepting node's certificate against its
  trust store and, with ``ssl.endpoint.identification.algorithm=https``, that
  it names the host dialled (``client`` context, ``check_hostname``); it
  presents its own certificate;
* then, on both sides, ``admit(certificate, host)`` may refuse a peer whose
  certificate verified (the assembly maps it to a principal and asks the ACL
  authorizer; see :func:`chronik.server.security.replication_peer_check`).

What is not TLS -- plaintext Raft frames, garbage -- or fails any check
raises :class:`~.network.PeerRefused` (an ``OSError``) from the stream, with
one line saying why; the transport logs it and closes that connection, and
the node keeps running.

Where the handshake runs: on the dialing side inside :meth:`TlsNetwork.connect`
(so within :func:`~.network.dial`'s timeout); on the accepting side at the
connection's first read or write, in the connection's own task, never in the
accept loop, bounded by ``handshake_timeout``.  With TLS 1.3 the dialer's
handshake completes before the acceptor has checked the dialer's certificate:
a refused dialer learns it at its first read, as a ``PeerRefused`` carrying
the acceptor's alert (``unknown ca``, ``certificate required``).

Closing sends a ``close_notify`` but waits for it at most
:data:`CLOSE_TIMEOUT` seconds (a stalled peer cannot hold the closing task;
the TCP connection is then closed at once); a stream whose handshake never
completed is closed without one.

The TLS itself: over a real TCP connection (a :class:`trio.SocketStream`,
what :data:`~.network.TCP` gives) a :class:`chronik.tlsstream.TlsSocketStream`,
where OpenSSL reads and writes the socket and one read returns every TLS
record already received (``trio.SSLStream`` returns one record, at most
16 KiB, per read: a follower's fetch of 1 MiB took 64 trips through the
scheduler; docs/benchmarks.md).  Over anything else -- a test's in-memory
network (tests/cluster/simnet.py), which has no socket for OpenSSL to use --
a ``trio.SSLStream``.  Both behave alike here: a failed handshake or an alert
breaks the stream with the ``ssl`` error as the cause, and an end of input
without ``close_notify`` breaks it too (``ssl.SSLEOFError``).  One difference
a peer sees: over TCP a refused handshake leaves OpenSSL's alert on the wire
(``unknown ca``), so a dialer refused for its certificate learns why.
"""

from __future__ import annotations

import ssl
from typing import Any, Callable

import trio

from ..tlsstream import TlsSocketStream
from .network import Network, PeerRefused, listener_address, parse_address, peer_name

__all__ = ["CLOSE_TIMEOUT", "HANDSHAKE_TIMEOUT", "PeerCheck", "TlsListener", "TlsNetwork", "TlsStream"]

HANDSHAKE_TIMEOUT = 10.0
"""Seconds an accepted connection may take to finish its TLS handshake."""
CLOSE_TIMEOUT = 1.0
"""Seconds a closing connection may spend sending its ``close_notify``."""

PeerCheck = Callable[[dict[str, Any], str], "str | None"]
"""``(verified peer certificate, peer host) -> None`` to admit the peer, else why it is refused."""

_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                      "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNEXPECTED_RECORD", "RECORD_TOO_LARGE"})
"""OpenSSL reasons for bytes that are not a TLS record at all: a plaintext peer, or garbage."""
_ALERTS = {
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust this node's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected this node's certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer rejected this node's certificate (expired)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a certificate and got none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no certificate presented (the replication port requires one)",
}


def describe_tls_failure(error: BaseException | None) -> str:
    """One line for an operator: why a TLS handshake or read failed."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or ""
        if reason in _NOT_TLS:
            return f"not TLS (a plaintext peer, or garbage): {reason.lower().replace('_', ' ')}"
        if reason in _ALERTS:
            return f"{_ALERTS[reason]} ({reason.lower().replace('_', ' ')})"
        if isinstance(error, ssl.SSLEOFError) or "EOF" in reason:
            return "the peer closed the connection during the TLS handshake (a plaintext port, or it refused us)"
        return str(error).split(" (_ssl.c:")[0]
    if error is None:
        return "the peer closed the connection during the TLS handshake (a plaintext port, or it refused us)"
    return f"{type(error).__name__}: {error}"


class TlsStream(trio.abc.Stream):
    """TLS over ``transport`` whose handshake (and admission check) happens once, before the first
    byte either way, and whose failures are :class:`~.network.PeerRefused`; see the module docstring.

    ``peer``: who is at the other end (for log lines).  ``certificate``: the
    peer's verified certificate once the handshake is done.  Construction does
    no I/O: the TLS stream over ``transport`` is made by :meth:`handshake`, in
    the task that first uses the stream.
    """

    def __init__(self, transport: trio.abc.Stream, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None, admit: PeerCheck | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.transport_stream = transport
        self.peer = peer_name(transport)
        self._context = context
        self._server_hostname = server_hostname
        self._ssl: TlsSocketStream | trio.SSLStream[trio.abc.Stream] | None = None
        self._admit = admit
        self._handshake_timeout = handshake_timeout
        self._server_side = server_side
        self._ready = False
        self._received = False
        self._refused: str | None = None
        self.certificate: dict[str, Any] | None = None

    def _peer_host(self) -> str:
        return str(self.peer[0]) if isinstance(self.peer, tuple) and self.peer else str(self.peer)

    async def handshake(self) -> None:
        """Complete the TLS handshake and the admission check, once.

        :raises PeerRefused: not TLS, a certificate not verified (either way),
            a handshake not done within ``handshake_timeout``, or a peer ``admit`` refused.
        :raises ConnectionError: the TCP connection was gone before the handshake began.

        Cancellation: the stream is left unusable; close it.
        """
        if self._ready:
            return
        if self._refused is not None:
            raise PeerRefused(self._refused)
        if self._ssl is None:
            try:
                self._ssl = self._wrap()
            except trio.BrokenResourceError as exc:
                raise ConnectionError(f"the connection closed before its TLS handshake: {exc}") from exc
        try:
            with trio.fail_after(self._handshake_timeout):
                await self._ssl.do_handshake()
        except trio.TooSlowError:
            self._refused = f"no TLS handshake within {self._handshake_timeout:g} s"
        except trio.BrokenResourceError as exc:
            self._refused = describe_tls_failure(exc.__cause__)
        else:
            self.certificate = self._ssl.getpeercert()
            if self._admit is not None and self.certificate is not None:
                self._refused = self._admit(self.certificate, self._peer_host())
        if self._refused is not None:
            raise PeerRefused(self._refused)
        self._ready = True

    def _wrap(self) -> TlsSocketStream | trio.SSLStream[trio.abc.Stream]:
        """The TLS stream over the transport: a :class:`TlsSocketStream` on a real socket, else a
        ``trio.SSLStream`` (see the module docstring).  No I/O.  Raises BrokenResourceError (the TCP
        peer is gone already; the ``OSError`` as the cause)."""
        transport = self.transport_stream
        if isinstance(transport, trio.SocketStream):
            return TlsSocketStream(transport, self._context, server_side=self._server_side,
                                   server_hostname=self._server_hostname, suppress_ragged_eofs=False)
        return trio.SSLStream(transport, self._context, server_side=self._server_side,
                              server_hostname=self._server_hostname)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.handshake()
        assert self._ssl is not None
        try:
            await self._ssl.send_all(data)
        except trio.BrokenResourceError as exc:
            self._raise_refusal(exc)
            raise

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self.handshake()
        assert self._ssl is not None
        try:
            data = await self._ssl.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            self._raise_refusal(exc)
            raise
        self._received = True
        return data

    def _raise_refusal(self, exc: trio.BrokenResourceError) -> None:
        """After the handshake: an alert from the peer (TLS 1.3 rejects a client certificate only
        now), or -- on the dialing side, before a byte came back -- a close without ``close_notify``
        (what a peer does whose ``admit`` refused us, or a ``trio.SSLStream`` peer that refused our
        certificate: neither sends an alert) is a :class:`PeerRefused` saying so; anything else
        stays a broken stream."""
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError) and (cause.reason or "") in _ALERTS:
            raise PeerRefused(describe_tls_failure(cause)) from exc
        if isinstance(cause, ssl.SSLEOFError) and not self._server_side and not self._received:
            raise PeerRefused("the peer closed the connection before answering anything: it may not accept this "
                              "node's certificate (see its log)") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self.handshake()
        assert self._ssl is not None
        await self._ssl.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send ``close_notify`` (at most :data:`CLOSE_TIMEOUT` seconds; none if the handshake
        never completed) and close the TCP connection.  Cancellation: closed at once."""
        if not self._ready or self._ssl is None:
            await self.abort()
            return
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._ssl.aclose()
            return
        await self.abort()  # both streams' aclose closed the connection too, when cancelled

    async def abort(self) -> None:
        """Close the connection at once, without ``close_notify`` (idempotent)."""
        if isinstance(self._ssl, TlsSocketStream):
            self._ssl.close()  # it owns the socket; the transport's is detached, closing it is a no-op
        await trio.aclose_forcefully(self.transport_stream)


class TlsListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts on ``inner`` and hands out :class:`TlsStream` s whose handshake has not started."""

    def __init__(self, inner: trio.abc.Listener[trio.abc.Stream], context: ssl.SSLContext, admit: PeerCheck | None,
                 handshake_timeout: float) -> None:
        self.inner = inner
        self._context = context
        self._admit = admit
        self._handshake_timeout = handshake_timeout

    @property
    def address(self) -> str:
        return listener_address(self.inner)

    async def accept(self) -> TlsStream:
        return TlsStream(await self.inner.accept(), self._context, server_side=True, admit=self._admit,
                         handshake_timeout=self._handshake_timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


class TlsNetwork:
    """Mutual TLS over ``inner`` (real TCP, or a test's in-memory network).

    ``server``: the accepting side's context (key store, trust store,
    ``verify_mode=CERT_REQUIRED``); ``client``: the dialing side's (key store,
    trust store, hostname checking as configured).  Built by
    :func:`chronik.server.security.replication_tls_contexts`.
    """

    def __init__(self, inner: Network, server: ssl.SSLContext, client: ssl.SSLContext, *,
                 admit: PeerCheck | None = None, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        if server.verify_mode != ssl.CERT_REQUIRED or client.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("the replication port's TLS contexts must both require the peer's certificate")
        self.inner = inner
        self.server = server
        self.client = client
        self.admit = admit
        self.handshake_timeout = handshake_timeout

    async def listen(self, address: str) -> TlsListener:
        return TlsListener(await self.inner.listen(address), self.server, self.admit, self.handshake_timeout)

    async def connect(self, address: str) -> TlsStream:
        """A stream to ``address`` whose handshake is done and whose peer was admitted.

        :raises PeerRefused: as :meth:`TlsStream.handshake`; ``OSError`` as the inner network.

        Cancellation: no connection is left open.
        """
        host, _ = parse_address(address)
        stream = TlsStream(await self.inner.connect(address), self.client, server_side=False, server_hostname=host,
                           admit=self.admit, handshake_timeout=self.handshake_timeout)
        try:
            await stream.handshake()
        except BaseException:
            await stream.abort()
            raise
        return stream
