"""chronik.testing in-process: run_broker's lifecycle (start, restart on the same port and data,
kill, errors), the settings it takes, and a plugin that costs nothing to load."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from chronik.config import ConfigError
from chronik.testing import BrokerRequestError, broker_config, open_broker, run_broker
from chronik.testing import _wire

from .usersuite import TRIO_CACHE_THREAD


def metadata(bootstrap: str) -> _wire.ClusterView:
    return _wire.cluster_view(_wire.call(bootstrap, _wire.metadata_request(), 10))


@pytest.fixture
def no_new_threads() -> Iterator[None]:
    """The test leaves no thread of the broker's behind (trio's idle worker cache aside, see
    tests/testing/usersuite.py); threads other tests of this process left are not its business."""
    before = set(threading.enumerate())
    yield
    left = [t.name for t in set(threading.enumerate()) - before if not t.name.startswith(TRIO_CACHE_THREAD)]
    assert left == []


@pytest.mark.usefixtures("no_new_threads")
def test_restart_and_kill_keep_port_and_data() -> None:
    with run_broker(**{"num.partitions": 2}) as broker:
        address, folder = broker.bootstrap_servers, broker.data_dir
        assert broker.config.num_partitions == 2 and broker.config.wal_backend in ("native", "python")
        broker.create_topic("kept", partitions=3)
        assert metadata(address).topics["kept"].leaders == (1, 1, 1)  # ready once create_topic returns
        broker.restart()
        assert broker.bootstrap_servers == address
        assert metadata(address).topics["kept"].leaders == (1, 1, 1)
        broker.kill()
        assert not broker.running
        with pytest.raises(OSError):
            socket.create_connection(_wire.parse_address(address), timeout=2).close()
        broker.start()
        assert metadata(address).topics["kept"].leaders == (1, 1, 1)
        with pytest.raises(BrokerRequestError, match="TOPIC_ALREADY_EXISTS"):
            broker.create_topic("kept")
    assert not folder.exists()


@pytest.mark.usefixtures("no_new_threads")
def test_kill_loses_no_acknowledged_record() -> None:
    """kill() is abrupt, but every record a client had acknowledged (acks=all, so fsynced
    by the durable backend) is read back after start(), by a real client."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    with run_broker() as broker:
        topic = broker.create_topic("acked", partitions=2)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "acks": "all", "linger.ms": 0})
        acked: list[tuple[int, bytes]] = []

        def delivered(err: object, message: Any) -> None:
            if err is None:
                acked.append((message.partition(), message.value()))

        for i in range(200):
            producer.produce(topic, f"r{i}".encode(), partition=i % 2, on_delivery=delivered)
        assert producer.flush(10) == 0
        assert len(acked) == 200
        broker.kill()
        broker.start()
        consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "after-kill",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
        try:
            read: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + 20
            while len(read) < len(acked) and time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is not None and message.error() is None:
                    read.append((message.partition(), message.value()))
        finally:
            consumer.close()
        assert sorted(read) == sorted(acked)


@pytest.mark.usefixtures("no_new_threads")
def test_a_job_keeps_one_connection_and_replaces_one_that_broke() -> None:
    """The helpers' steps share one connection per broker; one the broker closed (a
    restart between two steps) is replaced by a new one, not reported as a node down."""
    with run_broker(wal_backend="memory") as broker:
        address = broker.bootstrap_servers
        connections = _wire.Connections(timeout=10)
        try:
            assert _wire.cluster_view(connections.call(address, _wire.metadata_request())).controller_id == 1
            kept = connections._open[address]
            connections.call(address, _wire.metadata_request())
            assert connections._open[address] is kept
            broker.restart()
            assert _wire.cluster_view(connections.call(address, _wire.metadata_request())).controller_id == 1
            assert connections._open[address] is not kept and kept.fileno() == -1
            broker.kill()
            with pytest.raises(OSError):  # down: a new connection fails too
                connections.call(address, _wire.metadata_request())
            assert connections._open == {}
        finally:
            connections.close()


async def test_a_trio_job_keeps_one_connection_and_replaces_one_that_broke() -> None:
    with run_broker(wal_backend="memory") as broker:
        address = broker.bootstrap_servers
        connections = _wire.AsyncConnections()
        try:
            await connections.call(address, _wire.metadata_request())
            kept = connections._open[address]
            await connections.call(address, _wire.metadata_request())
            assert connections._open[address] is kept
            await trio.to_thread.run_sync(broker.restart)
            assert _wire.cluster_view(await connections.call(address, _wire.metadata_request())).controller_id == 1
            assert connections._open[address] is not kept
        finally:
            await connections.aclose()
        assert connections._open == {}


@pytest.mark.usefixtures("no_new_threads")
def test_a_failed_start_raises_and_leaves_nothing_running(tmp_path: Path) -> None:
    with run_broker(data_dir=tmp_path / "a") as first:
        host, port = _wire.parse_address(first.bootstrap_servers)
        with pytest.raises(OSError):  # the port is taken
            with run_broker(data_dir=tmp_path / "b", listen=f"{host}:{port}"):
                pass


def test_settings_by_kafka_or_field_name() -> None:
    config = broker_config("/tmp/x", **{"auto.create.topics.enable": False}, num_partitions=4)
    assert (config.auto_create_topics_enable, config.num_partitions) == (False, 4)
    assert config.group_initial_rebalance_delay_ms == 0  # the test default
    assert config.listen.host == "127.0.0.1" and config.listen.port == 0
    assert broker_config("/tmp/x", wal_backend="memory").wal_backend == "memory"
    with pytest.raises(ConfigError, match="did you mean num.partitions"):
        broker_config("/tmp/x", **{"num.partition": 3})
    with pytest.raises(ConfigError, match="num.partitions"):
        broker_config("/tmp/x", num_partitions=0)


async def test_open_broker_in_this_trio_loop() -> None:
    async with open_broker(wal_backend="memory") as broker:
        await broker.create_topic("in-trio", partitions=2)
        view = await trio.to_thread.run_sync(metadata, broker.bootstrap_servers)
        assert view.topics["in-trio"].leaders == (1, 1)
    assert not broker.data_dir.exists()


def test_loading_the_plugin_imports_no_broker_code() -> None:
    """pytest loads the plugin in every suite (this project's too): it must not import
    the protocol layer (a second of kio and hypothesis) or anything that starts work."""
    code = ("import sys, chronik.testing.plugin; "
            "print(sorted(m for m in sys.modules if m.startswith(('chronik', 'trio', 'kio', 'hypothesis'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['chronik', 'chronik.testing', 'chronik.testing.plugin']"


def test_the_plugin_is_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("chronik")


def test_pytest_rewrites_the_plugin_but_not_the_broker(pytestconfig: pytest.Config) -> None:
    """pytest would rewrite the asserts of every chronik module (the distribution has a
    pytest11 entry point): parsed and compiled by pytest, not loaded from their .pyc.
    The plugin keeps that to chronik.testing (this session loaded it, as a user's does)."""
    import chronik.broker
    import chronik.testing._steps

    hook = pytestconfig.pluginmanager.rewrite_hook
    if hook is None:
        pytest.skip("assertion rewriting is off (--assert=plain)")
    assert not isinstance(chronik.broker.__loader__, type(hook))
    assert not isinstance(sys.modules["chronik.protocol"].__loader__, type(hook))
    assert isinstance(chronik.testing._steps.__loader__, type(hook))


@pytest.mark.usefixtures("no_new_threads")
def test_a_cluster_restarts_on_new_ports_when_one_was_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_cluster picks its ports before the nodes bind them; one taken meanwhile means a new set."""
    import chronik.testing._embedded as embedded

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = iter([[taken.getsockname()[1]] + embedded._free_ports(5)])
    real = embedded._free_ports
    monkeypatch.setattr(embedded, "_free_ports", lambda count: next(picks, None) or real(count))
    try:
        with embedded.run_cluster(3, wal_backend="memory") as cluster:
            assert str(taken.getsockname()[1]) not in cluster.bootstrap_servers
            cluster.create_topic("replicated", partitions=2)
    finally:
        taken.close()
