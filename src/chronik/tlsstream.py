"""TLS over a socket: a trio stream over a non-blocking ``ssl.SSLSocket``, either side of the handshake.

Used by the Kafka TLS listeners (:mod:`chronik.server.kafka`, the server
side) and by the replication port's mutual TLS (:mod:`chronik.cluster.tls`,
both sides).  It sits low in the layers (beside :mod:`chronik.config`) so
that both may import it; it imports nothing of Chronik.

Why not ``trio.SSLStream``: it runs OpenSSL over memory BIOs and returns
one TLS record per ``receive_some`` -- at most 16 KiB, and librdkafka
writes records of a few KiB -- each costing a trip through trio's scheduler
and the reader's loop (measured: a 1 MiB produce request arrived in ~300
receives; SASL_SSL produced at 0.4-0.5x PLAINTEXT; docs/benchmarks.md).
Here OpenSSL reads from and writes to the socket itself (no copies through
memory BIOs), and :meth:`TlsSocketStream.receive_some` returns every record
already received, up to ``max_bytes``, in one call;
:meth:`~TlsSocketStream.send_all` writes a whole buffer with one
``SSL_write``.  It needs a real socket: a stream that is not a
:class:`trio.SocketStream` (a test's in-memory network) needs ``trio.SSLStream``.

Invariants:

* The stream owns the socket: the :class:`trio.SocketStream` it was made
  from is detached (its socket closed, the descriptor taken over), and
  :meth:`~TlsSocketStream.close` / :meth:`~TlsSocketStream.aclose` close
  it.  :meth:`~TlsSocketStream.detach_transport` hands it back, unencrypted
  (to discard a refused client's input after a failed handshake).
* One task receives at a time and one task sends at a time (a connection's
  reader and writer), as with every trio stream.  Waiting for the socket:
  the receiving side waits for readability; both sides may need to wait
  for writability (a receive can make OpenSSL write an alert), and they
  share one wait (trio lets one task at a time wait for a socket's
  writability).
* TLS renegotiation is not supported: the contexts set
  ``OP_NO_RENEGOTIATION`` (:func:`chronik.server.security.tls_context`,
  :func:`~chronik.server.security.replication_tls_contexts`; Kafka refuses
  it too), and a send that OpenSSL says must first read (the only cause: a
  renegotiation in progress) breaks the stream.
* A failed handshake leaves OpenSSL's alert (unknown_ca,
  certificate_required, ...) on the wire: OpenSSL writes it to the socket
  itself before the failure is raised.
* An end of input without close_notify is an end of input (b"") by default,
  as the Kafka protocol's frames carry their own lengths; with
  ``suppress_ragged_eofs=False`` it breaks the stream (``ssl.SSLEOFError``
  as the cause), as ``trio.SSLStream`` does.
* Nothing received is lost to a failure: when the socket fails (or a
  ragged end of input comes) after some records were read in the same
  call, those are returned and the failure is raised by the next call.

Errors: ``ssl.SSLError`` and ``OSError`` become :class:`trio.BrokenResourceError`
(the original is its ``__cause__``); using a closed stream raises
:class:`trio.ClosedResourceError`.

Cancellation: :meth:`do_handshake` and :meth:`send_all` cancelled part way
leave the stream broken (OpenSSL may hold half a handshake message or half
a record): only :meth:`aclose` is left, which then just closes the socket.
:meth:`receive_some` is cancelled only while nothing was received: no data
is lost.  :meth:`aclose` sends close_notify (not waiting for the peer's);
cancelled, it closes the socket at once.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["TlsSocketStream"]

#: ``receive_some()`` without a size: up to this many bytes.
DEFAULT_RECEIVE_BYTES = 256 * 1024
#: The most plaintext one TLS record carries.
_RECORD_BYTES = 16 * 1024

#: What a non-blocking OpenSSL call waits for (:func:`_attempt`): never a call's own result.
_WANT_READ = -1
_WANT_WRITE = -2


def _attempt(operation: Callable[..., Any], *args: Any) -> Any:
    """One non-blocking OpenSSL call (``SSL_read``, ``SSL_write``, the handshake): its result, or
    ``_WANT_READ`` / ``_WANT_WRITE``, what it waits for (then call again with the same arguments).
    Any other failure raises ``trio.BrokenResourceError`` with the ``ssl`` error as its cause.

    A plain function, so that a would-block exception's traceback holds only this frame: a resting
    connection's coroutine frames are never materialised as frame objects (see :mod:`.connection`).
    """
    try:
        return operation(*args)
    except ssl.SSLWantReadError:
        return _WANT_READ
    except ssl.SSLWantWriteError:
        return _WANT_WRITE
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


def _shutdown(sock: ssl.SSLSocket) -> int:
    """Send close_notify: 0 when sent (the peer's is not waited for), ``_WANT_WRITE`` when the socket is full."""
    try:
        sock.unwrap()
    except ssl.SSLWantWriteError:
        return _WANT_WRITE
    except (ssl.SSLError, OSError, ValueError):
        pass  # SSLWantReadError: ours is sent, the peer's not yet here; anything else: nothing more to do
    return 0


class TlsSocketStream(trio.abc.Stream):
    """One side of a TLS connection, over the socket of ``transport`` (see the module docstring).

    ``server_side``: the accepting side (default) or the dialing side, which
    checks the peer's certificate against ``server_hostname`` when
    ``context.check_hostname`` is set.  ``suppress_ragged_eofs``: whether an
    end of input without close_notify is an end of input (default) or breaks
    the stream.  Construction takes the socket from ``transport`` (no I/O);
    :meth:`do_handshake` must be awaited before anything is sent or received.
    """

    __slots__ = ("_sock", "_handshaken", "_broken", "_failure", "_writable")

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext, *, server_side: bool = True,
                 server_hostname: str | None = None, suppress_ragged_eofs: bool = True) -> None:
        raw = socket.socket(fileno=transport.socket.detach())
        try:
            raw.setblocking(False)
            self._sock: ssl.SSLSocket | None = context.wrap_socket(
                raw, server_side=server_side, server_hostname=server_hostname, do_handshake_on_connect=False,
                suppress_ragged_eofs=suppress_ragged_eofs)
        except OSError as exc:  # the peer is already gone (ENOTCONN)
            raw.close()
            raise trio.BrokenResourceError(str(exc)) from exc
        except BaseException:  # e.g. ValueError: a client context checking host names given none
            raw.close()
            raise
        self._handshaken = False
        self._broken = False
        self._failure: trio.BrokenResourceError | None = None  # met after data: for the next receive_some
        self._writable: trio.Event | None = None  # set when the task waiting for writability is done

    def _socket(self) -> ssl.SSLSocket:
        if self._sock is None:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._broken:
            raise trio.BrokenResourceError("the TLS stream is broken (an earlier operation failed or was cancelled)")
        return self._sock

    async def _wait(self, sock: ssl.SSLSocket, want: int) -> None:
        if want == _WANT_READ:
            await trio.lowlevel.wait_readable(sock)
            return
        shared = self._writable
        if shared is not None:  # the other side waits already: its wake-up is ours
            await shared.wait()
            return
        self._writable = shared = trio.Event()
        try:
            await trio.lowlevel.wait_writable(sock)
        finally:
            self._writable = None
            shared.set()

    async def do_handshake(self) -> None:
        """Run the TLS handshake (this stream's side of it).  Raises BrokenResourceError (the ``ssl`` error
        as ``__cause__``) when it fails; cancelled, the stream is broken."""
        sock = self._socket()
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            while (want := _attempt(sock.do_handshake)) is not None:  # None: done
                await self._wait(sock, want)
        except BaseException:
            self._broken = True
            raise
        self._handshaken = True

    def getpeercert(self) -> dict | None:
        """The peer's verified certificate (``ssl.SSLSocket.getpeercert``), None when it gave none."""
        return self._socket().getpeercert()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Every decrypted byte available, up to ``max_bytes``; waits until there is at least one.
        b"" at end of input.  Cancelled only while waiting, when nothing was received.  A failure met
        after some data was read is raised by the next call (the data is returned first)."""
        if self._failure is not None and self._sock is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            failure, self._failure = self._failure, None
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise failure
        sock = self._socket()
        size = DEFAULT_RECEIVE_BYTES if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        chunks: list[bytes] = []
        got = 0
        waited = False
        while got < size:
            try:
                data = _attempt(sock.recv, min(size - got, _RECORD_BYTES))
            except trio.BrokenResourceError as exc:
                self._broken = True
                if chunks:  # what came before the failure is returned first
                    self._failure = exc
                    break
                raise
            if type(data) is bytes:
                if not data:
                    break  # end of input (what came before it is returned first)
                chunks.append(data)
                got += len(data)
                continue  # the next record may be here already: take it in this call
            if chunks:
                break
            try:
                await self._wait(sock, data)
            except BaseException:
                if self._sock is None:
                    raise trio.ClosedResourceError("the TLS stream was closed while receiving") from None
                raise
            waited = True
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of ``data`` (one ``SSL_write``: records of up to 16 KiB).
        Cancelled part way, the stream is broken."""
        sock = self._socket()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not len(data):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        view = memoryview(data)
        waited = False
        try:
            # one SSL_write of all of it (no partial writes): the count sent, or what it waits for
            while (want := _attempt(sock.send, view)) in (_WANT_READ, _WANT_WRITE):
                if want == _WANT_READ:
                    raise trio.BrokenResourceError("the peer began a TLS renegotiation, which is not supported")
                await self._wait(sock, want)
                waited = True
        except BaseException:
            self._broken = True
            raise
        finally:
            view.release()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait(self._socket(), _WANT_WRITE)

    def detach_transport(self) -> trio.SocketStream:
        """The socket, unencrypted, as a trio stream (this stream is closed): after a failed handshake,
        to read and discard what a refused peer still sends (its TLS session is dead)."""
        sock = self._sock
        if sock is None:
            raise trio.ClosedResourceError("the TLS stream is closed")
        self._sock = None
        raw = socket.socket(fileno=sock.detach())
        return trio.SocketStream(trio.socket.from_stdlib_socket(raw))

    def close(self) -> None:
        """Close the socket now, without close_notify (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def aclose(self) -> None:
        """Send close_notify (when the session is intact), then close the socket; idempotent.
        Cancelled, the socket is closed at once."""
        sock = self._sock
        if sock is None:
            await trio.lowlevel.checkpoint()
            return
        try:
            if self._handshaken and not self._broken:
                await trio.lowlevel.checkpoint_if_cancelled()
                while _shutdown(sock):
                    await self._wait(sock, _WANT_WRITE)
        finally:
            self.close()
        await trio.lowlevel.checkpoint()
