"""How a node reaches its peers: listen on and dial ``host:port`` addresses.

Everything in :mod:`chronik.cluster` that opens a connection -- the Raft
transport (:mod:`.transport`), forwarding, the partition fetchers
(:mod:`.replication`) -- does it through a :class:`Network`, never through
trio's socket functions directly.  The default, :data:`TCP`, is the real
thing (``trio.open_tcp_stream`` and a bound ``trio.SocketListener``); tests
pass another implementation to run whole clusters in one process with no
sockets, under trio's ``MockClock`` (``tests/cluster/simnet.py``: delays,
drops, partitions, all seeded).

Contract, which is TCP's:

* :meth:`Network.listen` binds now (so a caller can learn the address before
  serving) and raises ``OSError`` if the address is taken.
* :meth:`Network.connect` returns a connected stream or raises ``OSError``
  (refused, unreachable; :class:`PeerRefused` when the peer's credentials, or
  ours, are not accepted -- :mod:`.tls`, mutual TLS over another network).  The stream delivers bytes in order, each once;
  it may break at any time (``trio.BrokenResourceError`` on send, EOF or
  ``BrokenResourceError`` on receive), and callers redial.

A connection can also *stall* without breaking: when the network drops
packets silently (a cut cable, a firewall DROP rule) TCP retransmits with a
backoff that reaches tens of seconds, and a blocked read or a buffered write
tells nobody.  So every peer connection has an application-level timeout
(the Raft transport's acknowledgements, ``controller.quorum.request.timeout.ms``;
the replica fetchers' ``replica.socket.timeout.ms``), every dial has
:data:`CONNECT_TIMEOUT` (:func:`dial`), and, as a second line of defence, the
real TCP sockets have keepalive and ``TCP_USER_TIMEOUT`` (:func:`tune_peer_socket`),
so that even a connection nobody watches -- the serving side of one whose
sender went silent -- is closed by the kernel within seconds.
"""

from __future__ import annotations

import socket
from typing import Protocol, runtime_checkable

import trio

__all__ = [
    "CONNECT_TIMEOUT", "TCP", "Network", "PeerRefused", "TcpNetwork", "dial", "listener_address",
    "open_replication_listener", "parse_address", "tune_peer_socket",
]

CONNECT_TIMEOUT = 1.0
"""Seconds a dial may take before it is abandoned and tried afresh.  A lost SYN is
retransmitted after 1 s, then 3 s, 7 s...: a new attempt sends a new one at once,
so a peer whose network came back is reached within about a second."""

KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 1, 5
"""TCP keepalive on peer sockets: probe after 5 idle seconds, every second, give up after 5."""
USER_TIMEOUT_MS = 10_000
"""``TCP_USER_TIMEOUT`` on peer sockets: the kernel aborts a connection whose sent data
(or keepalive probes) stayed unacknowledged this long -- above the application timeouts,
which should act first."""


class PeerRefused(OSError):
    """A connection refused for who is at the other end, not for the network: a TLS handshake
    that failed (plaintext or garbage bytes, a certificate not verified, either way) or a peer
    not admitted as a node (:mod:`.tls`).  Its message is the one line an operator needs.
    Raised by a stream's first read or write, or by :meth:`Network.connect`."""


@runtime_checkable
class Network(Protocol):
    """Dial and listen on ``host:port`` addresses (see the module docstring)."""

    async def listen(self, address: str) -> trio.abc.Listener[trio.abc.Stream]:
        """A listener bound to ``address`` (port 0: any free port).  Raises ``OSError``."""
        ...

    async def connect(self, address: str) -> trio.abc.Stream:
        """A stream connected to whoever listens on ``address``.  Raises ``OSError``.

        Cancellation: no connection is left open.
        """
        ...


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; raises ValueError on anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"bad replication address {address!r}: expected host:port")
    return host.strip("[]"), int(port)


def tune_peer_socket(sock: trio.socket.SocketType) -> None:
    """Keepalive and ``TCP_USER_TIMEOUT`` (where the platform has them) on a peer socket;
    a listening socket passes them on to the sockets it accepts (Linux)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def dial(network: "Network", address: str, timeout: float = CONNECT_TIMEOUT) -> trio.abc.Stream:
    """``network.connect(address)``, abandoned after ``timeout`` seconds.

    :raises OSError: as :meth:`Network.connect`; ``TimeoutError`` (an ``OSError``) when
        it took too long -- the caller may try again at once, the wait was its backoff.

    Cancellation: no connection is left open.
    """
    with trio.move_on_after(timeout):
        return await network.connect(address)
    raise TimeoutError(f"no connection to {address} within {timeout:g} s")


async def open_replication_listener(address: str) -> trio.SocketListener:
    """A listening TCP socket on ``address`` (port 0: any free port), bound now.

    Binding before the node starts lets a test learn every node's port first;
    ``SO_REUSEADDR`` lets a restarted node take its port back at once.  The
    sockets it accepts are tuned with :func:`tune_peer_socket`.
    """
    host, port = parse_address(address)
    sock = trio.socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tune_peer_socket(sock)
        await sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen for replication on {address}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def listener_address(listener: trio.abc.Listener[trio.abc.Stream]) -> str:
    """The ``host:port`` a listener is bound to: a socket's name, or the ``address``
    attribute of a listener that is not a socket (an in-memory one)."""
    if isinstance(listener, trio.SocketListener):
        host, port = listener.socket.getsockname()[:2]
        return f"{host}:{port}"
    return str(getattr(listener, "address"))


def peer_name(stream: trio.abc.Stream) -> object:
    """Who is at the other end of ``stream``, for log lines ("?" if unknown)."""
    try:
        return stream.socket.getpeername() if isinstance(stream, trio.SocketStream) else getattr(stream, "peer", "?")
    except OSError:
        return "?"


class TcpNetwork:
    """The real network: TCP sockets."""

    async def listen(self, address: str) -> trio.SocketListener:
        return await open_replication_listener(address)

    async def connect(self, address: str) -> trio.SocketStream:
        host, port = parse_address(address)
        stream = await trio.open_tcp_stream(host, port)
        tune_peer_socket(stream.socket)
        return stream


TCP: Network = TcpNetwork()
"""The default :class:`Network`."""
