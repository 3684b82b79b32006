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
  (refused, unreachable).  The stream delivers bytes in order, each once;
  it may break at any time (``trio.BrokenResourceError`` on send, EOF or
  ``BrokenResourceError`` on receive), and callers redial.
"""

from __future__ import annotations

import socket
from typing import Protocol, runtime_checkable

import trio

__all__ = ["TCP", "Network", "TcpNetwork", "listener_address", "open_replication_listener", "parse_address"]


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


async def open_replication_listener(address: str) -> trio.SocketListener:
    """A listening TCP socket on ``address`` (port 0: any free port), bound now.

    Binding before the node starts lets a test learn every node's port first;
    ``SO_REUSEADDR`` lets a restarted node take its port back at once.
    """
    host, port = parse_address(address)
    sock = trio.socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        return await trio.open_tcp_stream(host, port)


TCP: Network = TcpNetwork()
"""The default :class:`Network`."""
