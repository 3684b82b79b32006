"""An in-memory, fault-injecting :class:`~chronik.cluster.network.Network` for whole-cluster tests.

Lives with the tests (not in ``chronik``): nothing in production needs it.
Every node of a simulated cluster gets its own view (:meth:`SimNetwork.node`),
so the network knows who dials whom and can cut links between nodes.

What it models, all under trio's clock (so ``MockClock`` drives it) and one
seeded ``random.Random`` (so a seed replays exactly):

* **Listeners by address.**  ``listen("n1:9291")`` registers the address (an
  address in use raises ``OSError(EADDRINUSE)``, like a bound port);
  ``connect`` to an address nobody listens on raises ``ConnectionRefusedError``.
* **Connections** are pairs of in-memory streams.  Each connection gets a
  one-way delay when it is dialled (usually up to ``max_delay``, sometimes a
  spike up to ``spike_delay``): bytes arrive in order, each once, ``delay``
  seconds after they were sent.  Different connections have different
  delays, so messages on different connections overtake each other (a
  vote answer can arrive before the append that was sent first).
* **Drops.**  :meth:`SimNetwork.drop_connection` breaks a live connection:
  both ends get ``trio.BrokenResourceError`` and bytes in flight are lost,
  so the sender cannot know what the peer received (as after a TCP reset).
  The transport and the fetchers redial.
* **Partitions.**  :meth:`SimNetwork.partition` cuts every link between
  groups of nodes: connections across the cut are broken and dialling across
  it is refused until :meth:`SimNetwork.heal`.  :meth:`SimNetwork.kill`
  does the same for one node (a crash: its peers see its connections die).
* **Duplication** is not modelled at this level: a stream delivers each
  byte once and a TCP connection cannot duplicate a frame, so there is
  nothing the real transport would ever see.  What a duplicate costs the
  protocols (the same request handled twice) is reached instead through
  what the wired system really does: a connection broken after the request
  went out (:meth:`drop_connection`) makes the caller retry -- a forwarded
  metadata command is submitted again, a follower fetches the same offsets
  again.  Message-level duplication of Raft messages is covered by the
  sans-I/O simulation (``simulation.py``).
"""

from __future__ import annotations

import errno
import math
import random
from collections import deque
from dataclasses import dataclass, field

import trio


@dataclass
class NetworkStats:
    connects: int = 0
    refused: int = 0
    dropped: int = 0  # connections broken by a drop, a partition or a kill
    bytes: int = 0


@dataclass
class _Pipe:
    """One direction of a connection: chunks with their arrival times."""

    chunks: deque[list] = field(default_factory=deque)  # [arrival time, bytes]
    last_arrival: float = 0.0
    eof: bool = False  # the writer closed its end
    reader_closed: bool = False
    waiter: trio.Event | None = None

    def wake(self) -> None:
        if self.waiter is not None:
            self.waiter.set()
            self.waiter = None


class _Connection:
    def __init__(self, network: "SimNetwork", client: int, server: int, delay: float) -> None:
        self.network = network
        self.nodes = (client, server)
        self.delay = delay
        self.broken = False
        self.open_ends = 2
        self.up = _Pipe()  # client -> server
        self.down = _Pipe()  # server -> client

    def break_(self) -> None:
        if not self.broken:
            self.broken = True
            self.network.stats.dropped += 1
            self.up.wake()
            self.down.wake()

    def end_closed(self) -> None:
        self.open_ends -= 1
        if self.open_ends == 0:
            self.network._connections.remove(self)


class SimStream(trio.abc.Stream):
    """One end of an in-memory connection (see the module docstring)."""

    def __init__(self, connection: _Connection, send: _Pipe, receive: _Pipe, peer: str) -> None:
        self._connection = connection
        self._send = send
        self._receive = receive
        self._closed = False
        self.peer = peer

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._connection.broken or self._send.reader_closed:
            raise trio.BrokenResourceError("connection broken")
        if not data:
            return
        arrival = max(trio.current_time() + self._connection.delay, self._send.last_arrival)
        self._send.last_arrival = arrival
        self._send.chunks.append([arrival, bytes(data)])
        self._connection.network.stats.bytes += len(data)
        self._send.wake()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        pipe = self._receive
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            if self._connection.broken:
                raise trio.BrokenResourceError("connection broken")
            if pipe.chunks and pipe.chunks[0][0] <= trio.current_time():
                chunk = pipe.chunks[0]
                data: bytes = chunk[1]
                if max_bytes is not None and len(data) > max_bytes:
                    chunk[1] = data[max_bytes:]
                    return data[:max_bytes]
                pipe.chunks.popleft()
                return data
            if not pipe.chunks and pipe.eof:
                return b""
            pipe.waiter = event = trio.Event()
            with trio.move_on_at(pipe.chunks[0][0] if pipe.chunks else math.inf):
                await event.wait()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._send.eof = True
            self._send.wake()
            self._receive.reader_closed = True
            self._receive.wake()
            self._connection.end_closed()
        await trio.lowlevel.checkpoint()


class SimListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, network: "SimNetwork", node_id: int, address: str) -> None:
        self.network = network
        self.node_id = node_id
        self.address = address
        self._pending: deque[SimStream] = deque()
        self._wake = trio.Event()
        self._closed = False

    def _offer(self, stream: SimStream) -> None:
        self._pending.append(stream)
        self._wake.set()

    async def accept(self) -> trio.abc.Stream:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("listener is closed")
            if self._pending:
                await trio.lowlevel.checkpoint()
                return self._pending.popleft()
            self._wake = trio.Event()
            await self._wake.wait()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake.set()
            if self.network._listeners.get(self.address) is self:
                del self.network._listeners[self.address]
            for stream in self._pending:  # dialled but never accepted: the dialler sees a reset
                stream._connection.break_()
                await stream.aclose()
        await trio.lowlevel.checkpoint()


class NodeNetwork:
    """One node's view of a :class:`SimNetwork`: a :class:`~chronik.cluster.network.Network`."""

    def __init__(self, network: "SimNetwork", node_id: int) -> None:
        self.network = network
        self.node_id = node_id

    async def listen(self, address: str) -> SimListener:
        await trio.lowlevel.checkpoint()
        if address in self.network._listeners:
            raise OSError(errno.EADDRINUSE, f"address {address} already in use")
        listener = SimListener(self.network, self.node_id, address)
        self.network._listeners[address] = listener
        return listener

    async def connect(self, address: str) -> trio.abc.Stream:
        return await self.network._connect(self.node_id, address)


class SimNetwork:
    """The in-memory network of a simulated cluster (see the module docstring)."""

    def __init__(self, rng: random.Random, *, max_delay: float = 0.005, spike_delay: float = 0.15,
                 spike_probability: float = 0.05) -> None:
        self.rng = rng
        self.max_delay = max_delay
        self.spike_delay = spike_delay
        self.spike_probability = spike_probability
        self.stats = NetworkStats()
        self._listeners: dict[str, SimListener] = {}
        self._connections: list[_Connection] = []
        self._cut: set[frozenset[int]] = set()
        self._down: set[int] = set()

    def node(self, node_id: int) -> NodeNetwork:
        return NodeNetwork(self, node_id)

    def reachable(self, a: int, b: int) -> bool:
        return a == b or (a not in self._down and b not in self._down and frozenset((a, b)) not in self._cut)

    async def _connect(self, client: int, address: str) -> trio.abc.Stream:
        delay = self.rng.uniform(0, self.max_delay)
        if self.rng.random() < self.spike_probability:
            delay = self.rng.uniform(self.max_delay, self.spike_delay)
        await trio.sleep(delay)  # the handshake's round trip (half of it, near enough)
        listener = self._listeners.get(address)
        if listener is None or listener._closed or not self.reachable(client, listener.node_id):
            self.stats.refused += 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"connection to {address} refused (simulated)")
        self.stats.connects += 1
        connection = _Connection(self, client, listener.node_id, delay)
        self._connections.append(connection)
        server_end = SimStream(connection, connection.down, connection.up, f"node {client}")
        listener._offer(server_end)
        return SimStream(connection, connection.up, connection.down, address)

    # -- faults ------------------------------------------------------------------

    def _break_where(self, predicate) -> int:  # type: ignore[no-untyped-def]
        broken = 0
        for connection in list(self._connections):
            if not connection.broken and predicate(*connection.nodes):
                connection.break_()
                broken += 1
        return broken

    def partition(self, groups: list[set[int]]) -> None:
        """Cut every link between different groups (on top of cuts already made)."""
        for i, group in enumerate(groups):
            for other in groups[i + 1:]:
                for a in group:
                    for b in other:
                        self._cut.add(frozenset((a, b)))
        self._break_where(lambda a, b: not self.reachable(a, b))

    def heal(self) -> None:
        """Remove every cut (killed nodes stay unreachable until revived)."""
        self._cut.clear()

    def kill(self, node_id: int) -> None:
        """The node is gone: its connections break, nobody reaches it, it reaches nobody."""
        self._down.add(node_id)
        self._break_where(lambda a, b: node_id in (a, b))

    def revive(self, node_id: int) -> None:
        self._down.discard(node_id)

    def drop_connection(self) -> bool:
        """Break one live connection, chosen at random; False if there is none."""
        live = [c for c in self._connections if not c.broken]
        if not live:
            return False
        self.rng.choice(live).break_()
        return True

    @property
    def cut(self) -> set[frozenset[int]]:
        return set(self._cut)
