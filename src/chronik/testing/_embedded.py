"""The implementation of :mod:`chronik.testing` (see its docstring); imported on first use."""

from __future__ import annotations

import dataclasses
import difflib
import errno
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from chronik.config import KAFKA_SETTINGS, BrokerConfig, ConfigError, HostPort, Peer

from . import _steps
from ._wire import BrokerRequestError

HOST = "127.0.0.1"
TEST_DEFAULTS: Mapping[str, Any] = {
    "listen": HostPort(HOST, 0),
    "group_initial_rebalance_delay_ms": 0,
    "log_segment_bytes": 1 << 20,
}
"""Where test brokers differ from ``python -m chronik serve`` (see :mod:`chronik.testing`)."""
DURABLE = "durable"
"""``wal_backend`` value meaning "the durable default" (native, else python)."""
START_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0


def broker_config(data_dir: str | Path, **settings: Any) -> BrokerConfig:
    """A validated :class:`BrokerConfig` with the test defaults, from field or Kafka names.

    Raises :class:`~chronik.config.ConfigError` for an unknown name or a bad value.
    """
    fields = {f.name for f in dataclasses.fields(BrokerConfig)} - {"sources", "data_dir"}
    values = dict(TEST_DEFAULTS)
    for key, value in settings.items():
        name = KAFKA_SETTINGS.get(key, key)
        if name not in fields:
            close = difflib.get_close_matches(key, list(KAFKA_SETTINGS) if "." in key else sorted(fields), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else " (BrokerConfig fields and Kafka names are known)"
            raise ConfigError(f"unknown broker setting {key!r}{hint}")
        values[name] = value
    if values.get("wal_backend") == DURABLE:
        values["wal_backend"] = ""
    if "advertise" not in values and isinstance(values["listen"], HostPort) and values["listen"].is_wildcard:
        values["advertise"] = HostPort(HOST, values["listen"].port)
    return BrokerConfig(data_dir=Path(data_dir), **values)


def _bootstrap(address: HostPort) -> str:
    return f"{address.host}:{address.port}"


class EmbeddedBroker:
    """One broker node on a thread of its own, with its own trio loop.

    ``bootstrap_servers`` is ``"127.0.0.1:PORT"``; the port stays the same
    across :meth:`restart` and :meth:`kill` + :meth:`start`.  ``data_dir``
    holds its logs.  Not thread-safe: drive it from one thread.
    """

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.data_dir: Path = config.data_dir
        self._address = HostPort(config.advertise.host, config.listen.port)
        self._thread: threading.Thread | None = None
        self._token: Any = None  # trio.lowlevel.TrioToken of the running loop
        self._scope: Any = None  # cancel scope around everything: kill
        self._stop: Any = None  # trio.Event: stop cleanly
        self._ready = threading.Event()  # listening, or the run ended
        self._loop_ready = threading.Event()  # token, scope and stop event exist, or the run ended
        self._error: BaseException | None = None

    @property
    def node_id(self) -> int:
        return self.config.node_id

    @property
    def bootstrap_servers(self) -> str:
        return _bootstrap(self._address)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the broker and return once it listens.  Raises what start-up raised
        (:class:`~chronik.storage.UnknownBackendError`, ``OSError``, ...), or
        what an earlier run failed with if it ended by itself."""
        if self.running:
            raise RuntimeError(f"broker {self.node_id} is already running")
        self._join()  # a run that ended by itself (it failed): raise its error rather than start over
        self._ready.clear()
        self._loop_ready.clear()
        self._token = None
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"chronik-test-broker-{self.node_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.kill()
            raise TimeoutError(f"broker {self.node_id} did not start listening within {timeout} s")
        if self._error is not None:
            self._join()

    def stop(self) -> None:
        """Stop cleanly (a cluster node hands its leaderships over first) and wait.

        Raises the error the broker failed with while it ran, if it did."""
        self._signal(lambda: self._stop.set())
        self._join()

    def kill(self) -> None:
        """Stop at once, without a controlled shutdown (see :mod:`chronik.testing`), and wait."""
        self._signal(lambda: self._scope.cancel())
        self._join()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (cleanly, or abruptly with ``kill=True``) and start again on the same port and data."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None,
                     replication_factor: int = 1, timeout: float = REQUEST_TIMEOUT) -> str:
        """Create a topic through CreateTopics and wait until it has a leader for every partition.

        Returns ``name``.  Raises :class:`BrokerRequestError` (TOPIC_ALREADY_EXISTS, INVALID_CONFIG, ...).
        """
        job = _steps.create_topic([self.bootstrap_servers], name, partitions, replication_factor,
                                  {k: str(v) for k, v in (config or {}).items()}, timeout,
                                  single_node=len(self.config.peers) < 2)
        _steps.run_blocking(job, timeout)
        return name

    def delete_topic(self, name: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Delete a topic through DeleteTopics.  Raises :class:`BrokerRequestError` (UNKNOWN_TOPIC_OR_PARTITION, ...)."""
        _steps.run_blocking(_steps.delete_topic([self.bootstrap_servers], name, timeout), timeout)

    # -- the broker's thread ---------------------------------------------------

    def _signal(self, action: Any) -> None:
        if not self.running:
            return
        self._loop_ready.wait()
        import trio

        if self._token is None:  # the run ended before its loop started
            return
        try:
            self._token.run_sync_soon(action)
        except trio.RunFinishedError:
            pass

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        import trio

        try:
            trio.run(self._serve)
        except BaseException as exc:  # handed to the thread that starts or stops it
            self._error = _sole_leaf(exc)
        finally:
            self._loop_ready.set()
            self._ready.set()

    async def _serve(self) -> None:
        import trio

        from chronik.broker import open_broker as open_node

        self._stop = trio.Event()
        with trio.CancelScope() as self._scope:
            self._token = trio.lowlevel.current_trio_token()
            self._loop_ready.set()
            async with open_node(self.config) as broker, trio.open_nursery() as nursery:
                bound = await nursery.start(broker.serve)
                if self._address.port == 0:  # from now on, the port it got
                    port = bound[0].port
                    self._address = HostPort(self._address.host, port)
                    self.config = dataclasses.replace(self.config, listen=HostPort(self.config.listen.host, port),
                                                      advertise=self._address)
                self._ready.set()
                await self._stop.wait()
                await broker.controlled_shutdown()
                nursery.cancel_scope.cancel()


@contextmanager
def _data_dir(given: str | Path | None) -> Iterator[Path]:
    """``given``, or a new temporary folder removed on exit (see :func:`remove_folder`)."""
    if given is not None:
        yield Path(given)
        return
    folder = tempfile.mkdtemp(prefix="chronik-test-")
    try:
        yield Path(folder)
    finally:
        remove_folder(Path(folder))


REMOVAL_THREADS = 16


def remove_folder(folder: Path) -> None:
    """Remove ``folder`` and everything in it, its subfolders (a partition each) on up to
    :data:`REMOVAL_THREADS` threads at once, joined before returning.

    Each unlink and rmdir waits for the file system's journal; on a busy disk
    that is milliseconds each, and a session broker with a topic per test
    holds a folder and two files per partition: one after the other, 100
    partitions took 0.3-1 s on a loaded machine, on 16 threads ~50 ms.
    """
    try:
        subfolders = [entry.path for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    if len(subfolders) > 1:
        with ThreadPoolExecutor(min(REMOVAL_THREADS, len(subfolders)), thread_name_prefix="chronik-test-rm") as pool:
            for _ in pool.map(functools.partial(shutil.rmtree, ignore_errors=True), subfolders):
                pass
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def run_broker(**settings: Any) -> Iterator[EmbeddedBroker]:
    """A broker on its own thread for the ``with`` block (see :mod:`chronik.testing`).

    ``settings``: :class:`~chronik.config.BrokerConfig` fields or Kafka setting
    names, plus ``data_dir`` (default: a temporary folder removed on exit).
    """
    with _data_dir(settings.pop("data_dir", None)) as data_dir:
        broker = EmbeddedBroker(broker_config(data_dir, **settings))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


class TrioBroker:
    """What :func:`open_broker` yields: the address, the data folder and an async ``create_topic``."""

    def __init__(self, config: BrokerConfig, address: HostPort) -> None:
        self.config = config
        self.data_dir: Path = config.data_dir
        self.bootstrap_servers = _bootstrap(address)

    async def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None,
                           replication_factor: int = 1, timeout: float = REQUEST_TIMEOUT) -> str:
        """As :meth:`EmbeddedBroker.create_topic`.  Cancellation: the topic may or may not exist afterwards."""
        job = _steps.create_topic([self.bootstrap_servers], name, partitions, replication_factor,
                                  {k: str(v) for k, v in (config or {}).items()}, timeout,
                                  single_node=len(self.config.peers) < 2)
        await _steps.run_trio(job)
        return name


@asynccontextmanager
async def open_broker(**settings: Any) -> AsyncIterator[TrioBroker]:
    """A broker in the caller's trio loop for the ``async with`` block; settings as :func:`run_broker`.

    The block is entered once the broker listens.  On exit (also when the body
    raised, or on cancellation) the broker is cancelled and its logs closed
    under a shield.  The body's own exception comes out as itself, not wrapped
    in an ExceptionGroup by the nurseries in between (as does a lone error of
    the broker's).
    """
    import trio

    from chronik.broker import open_broker as open_node

    with _data_dir(settings.pop("data_dir", None)) as data_dir:
        config = broker_config(data_dir, **settings)
        try:
            async with open_node(config) as broker, trio.open_nursery() as nursery:
                bound = await nursery.start(broker.serve)
                try:
                    yield TrioBroker(config, bound[0])
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            leaf = _sole_leaf(group)
            if leaf is group:
                raise
            raise leaf from None  # the body's own exception, or what the broker failed with


def _sole_leaf(error: BaseException) -> BaseException:
    """The one exception inside ``error`` if it is an exception group (however deeply nested)
    holding only that one; else ``error`` itself.  The nurseries between a broker's task and
    its owner wrap what it raised: a test wants to see the OSError, not a group around it."""
    leaf = error
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return error if isinstance(leaf, BaseExceptionGroup) else leaf


class Cluster:
    """Several nodes, each an :class:`EmbeddedBroker` on its own thread, sharing one replicated metadata log.

    ``bootstrap_servers`` lists every node; ``nodes`` maps node id (1..N) to
    its broker.  :meth:`kill` and :meth:`restart` act on one node;
    :meth:`wait_ready` waits until the live nodes agree on a controller.
    """

    def __init__(self, nodes: Sequence[EmbeddedBroker]) -> None:
        self.nodes = {node.node_id: node for node in nodes}

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes.values())

    def kill(self, node_id: int) -> None:
        """Stop one node at once, without handing its leaderships over (the others fail over)."""
        self.nodes[node_id].kill()

    def stop(self, node_id: int) -> None:
        """Stop one node cleanly: it hands its leaderships to in-sync replicas first."""
        self.nodes[node_id].stop()

    def start(self, node_id: int) -> None:
        """Start a stopped or killed node again (same ports and data) and wait until it is back in the cluster."""
        self.nodes[node_id].start()
        self.wait_ready()

    def restart(self, node_id: int, *, kill: bool = False) -> None:
        """Stop one node (cleanly, or with ``kill=True`` abruptly) and start it again."""
        self.nodes[node_id].restart(kill=kill)
        self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node names a controller and lists every running node."""
        live = [node for node in self.nodes.values() if node.running]
        job = _steps.await_cluster([n.bootstrap_servers for n in live], [n.node_id for n in live], timeout)
        _steps.run_blocking(job, REQUEST_TIMEOUT)

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None,
                     replication_factor: int | None = None, timeout: float = REQUEST_TIMEOUT) -> str:
        """Create a topic (replicated to every node unless ``replication_factor`` says less)
        and wait until every running node shows a leader for each partition."""
        live = [node.bootstrap_servers for node in self.nodes.values() if node.running]
        job = _steps.create_topic(live, name, partitions, replication_factor or len(self.nodes),
                                  {k: str(v) for k, v in (config or {}).items()}, timeout)
        _steps.run_blocking(job, timeout)
        return name

    def delete_topic(self, name: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Delete a topic through DeleteTopics on a running node."""
        live = [node.bootstrap_servers for node in self.nodes.values() if node.running]
        _steps.run_blocking(_steps.delete_topic(live, name, timeout), timeout)


def _free_ports(count: int) -> list[int]:
    """Ports the kernel picked as free just now (a cluster's nodes must know each other's in advance)."""
    import socket

    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def run_cluster(nodes: int = 3, **settings: Any) -> Iterator[Cluster]:
    """A cluster of ``nodes`` brokers (ids 1..N) for the ``with`` block, ready (a controller
    elected, every node registered) when the block is entered.

    ``settings`` apply to every node (as :func:`run_broker`); the default
    replication factor is the number of nodes.  ``data_dir`` (default: a
    temporary folder) gets one subfolder per node.  On exit every node is
    killed at once (no controlled shutdowns: nobody is left to hand over to).

    The nodes must know each other's ports before they start, so free ports
    are picked just before; should another process take one in between, the
    cluster is started again on new ports (up to :data:`PORT_ATTEMPTS` times).
    """
    settings.setdefault("default_replication_factor", nodes)
    with _data_dir(settings.pop("data_dir", None)) as data_dir:
        for attempt in range(PORT_ATTEMPTS):
            members = _cluster_members(data_dir / f"start{attempt}", nodes, settings)
            try:
                for member in members:
                    member.start()
                break
            except OSError as exc:
                _kill_all(members)
                if exc.errno != errno.EADDRINUSE or attempt == PORT_ATTEMPTS - 1:
                    raise
        cluster = Cluster(members)
        try:
            cluster.wait_ready()
            yield cluster
        finally:
            _kill_all(members)


PORT_ATTEMPTS = 3


def _cluster_members(data_dir: Path, nodes: int, settings: Mapping[str, Any]) -> list[EmbeddedBroker]:
    ports = _free_ports(2 * nodes)
    peers = tuple(Peer(i + 1, HostPort(HOST, ports[2 * i]), HostPort(HOST, ports[2 * i + 1])) for i in range(nodes))
    return [EmbeddedBroker(broker_config(
        data_dir / f"node{peer.id}", **settings, node_id=peer.id, listen=peer.kafka, advertise=peer.kafka,
        replication_listen=peer.replication, peers=peers)) for peer in peers]


def _kill_all(members: Sequence[EmbeddedBroker]) -> None:
    """Kill every member, the others too when one raises; then raise the first error."""
    errors = []
    for member in members:
        try:
            member.kill()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]

