"""The pytest plugin as a user's project meets it: small test files run through pytester.

(docs/testing.md's examples -- confluent-kafka, kafka-python, aiokafka, kafkajs,
consumer resume -- run in test_docs.py.)
"""

from __future__ import annotations

import json

import pytest

from .usersuite import assert_no_leaks, leak_reports, run_user_suite

pytest_plugins = ["pytester"]

TRIO_TESTS = '''
import trio
from confluent_kafka import Producer


async def test_trio_test_uses_the_session_broker(chronik_broker, chronik_topic):
    producer = Producer({"bootstrap.servers": chronik_broker.bootstrap_servers})
    producer.produce(chronik_topic, b"from trio")
    assert await trio.to_thread.run_sync(producer.flush, 10) == 0


async def test_open_broker_in_the_tests_own_loop():
    from chronik.testing import open_broker

    async with open_broker() as broker:
        await broker.create_topic("t", partitions=2)
        host, port = broker.bootstrap_servers.split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.aclose()
'''


def test_trio_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_user_suite(pytester, monkeypatch, {"test_trio_user.py": TRIO_TESTS}, ini="trio_mode = true\n")
    result.assert_outcomes(passed=2)
    assert_no_leaks(pytester)


FAILING = '''
import json, os
from confluent_kafka import Producer


def test_fails_after_using_the_broker(chronik_broker, chronik_topic):
    with open("broker.json", "w") as out:
        json.dump({"data_dir": str(chronik_broker.data_dir), "bootstrap": chronik_broker.bootstrap_servers}, out)
    producer = Producer({"bootstrap.servers": chronik_broker.bootstrap_servers})
    producer.produce(chronik_topic, b"x")
    assert producer.flush(10) == 0
    assert 1 + 1 == 3, "the user's test fails"


def test_open_broker_body_raises():
    import trio
    from chronik.testing import open_broker

    async def main():
        async with open_broker():
            raise KeyError("the body's own error")

    try:
        trio.run(main)
    except KeyError as exc:
        assert exc.args == ("the body's own error",)  # itself, not an ExceptionGroup
    else:
        raise AssertionError("no KeyError")


def test_run_broker_body_raises():
    from chronik.testing import run_broker

    try:
        with run_broker() as broker:
            folder = broker.data_dir
            raise KeyError("boom")
    except KeyError:
        pass
    assert not folder.exists()
'''


ANYIO = '''
import aiokafka
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_aiokafka_under_anyio(chronik_broker, chronik_topic):
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=chronik_broker.bootstrap_servers)
    await producer.start()
    try:
        assert (await producer.send_and_wait(chronik_topic, b"via anyio")).offset == 0
    finally:
        await producer.stop()
'''


def test_a_failing_test_still_tears_the_broker_down(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same session also runs an anyio (asyncio backend) test against the same broker."""
    result = run_user_suite(pytester, monkeypatch, {"test_failing_user.py": FAILING, "test_anyio_user.py": ANYIO})
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*the user's test fails*"])
    used = json.loads((pytester.path / "broker.json").read_text())
    assert not pytester.path.joinpath(used["data_dir"]).exists()
    assert_no_leaks(pytester)


XDIST = '''
import os
import pytest


@pytest.mark.parametrize("n", range(6))
def test_each_worker_has_its_own_broker(chronik_broker, chronik_topic, n):
    with open(f"used-{os.environ['PYTEST_XDIST_WORKER']}-{n}.txt", "w") as out:
        out.write(chronik_broker.bootstrap_servers)
'''


def test_xdist_workers_each_get_a_broker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_user_suite(pytester, monkeypatch, {"test_xdist_user.py": XDIST}, "-n", "2")
    result.assert_outcomes(passed=6)
    by_worker: dict[str, set[str]] = {}
    for path in pytester.path.glob("used-*.txt"):
        by_worker.setdefault(path.name.split("-")[1], set()).add(path.read_text())
    assert len(by_worker) == 2
    addresses = [next(iter(used)) for used in by_worker.values()]
    assert all(len(used) == 1 for used in by_worker.values())  # one broker per worker, for the session
    assert len(set(addresses)) == 2  # and no two workers share a port
    assert set(leak_reports(pytester)) == {"leaks-main", "leaks-gw0", "leaks-gw1"}
    assert_no_leaks(pytester)


SETTINGS = '''
import socket
import pytest
from confluent_kafka.admin import AdminClient


def test_ini_settings_reach_the_broker(chronik_broker, chronik_broker_config):
    assert chronik_broker_config["wal_backend"] == "memory"
    assert chronik_broker.config.wal_backend == "memory"
    assert chronik_broker.config.num_partitions == 3
    assert chronik_broker.config.group_initial_rebalance_delay_ms == 250


@pytest.mark.chronik_topic(partitions=4, config={"retention.ms": "60000"})
def test_topic_marker(chronik_broker, chronik_topic):
    admin = AdminClient({"bootstrap.servers": chronik_broker.bootstrap_servers})
    topic = admin.list_topics(chronik_topic, timeout=10).topics[chronik_topic]
    assert len(topic.partitions) == 4
    chronik_broker.delete_topic(chronik_topic)
    assert chronik_topic not in admin.list_topics(timeout=10).topics


def test_kill_then_the_next_topic_starts_it_again(chronik_broker):
    address = chronik_broker.bootstrap_servers
    chronik_broker.kill()
    assert not chronik_broker.running
    with pytest.raises(OSError):
        host, port = address.split(":")
        socket.create_connection((host, int(port)), timeout=2)


def test_after_kill(chronik_broker, chronik_topic):
    assert chronik_broker.running


@pytest.mark.chronik_cluster(nodes=2, **{"num.partitions": 2})
def test_cluster_marker(chronik_cluster):
    assert sorted(chronik_cluster.nodes) == [1, 2]
    for node in chronik_cluster.nodes.values():  # the marker's settings over the ini's
        assert (node.config.num_partitions, node.config.wal_backend) == (2, "memory")
        assert node.config.group_initial_rebalance_delay_ms == 250
    topic = chronik_cluster.create_topic("two-replicas")
    admin = AdminClient({"bootstrap.servers": chronik_cluster.bootstrap_servers})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions[0].replicas) == 2
'''


def test_ini_options_markers_and_kill(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    ini = ('chronik_broker_config = {"num.partitions": 3}\nchronik_wal_backend = memory\n'
           "chronik_group_initial_rebalance_delay_ms = 250\n")
    result = run_user_suite(pytester, monkeypatch, {"test_settings_user.py": SETTINGS}, "-p", "no:randomly", ini=ini)
    result.assert_outcomes(passed=5)
    assert_no_leaks(pytester)


def test_a_bad_setting_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"test_bad_user.py": "def test_x(chronik_broker):\n    pass\n"}
    result = run_user_suite(pytester, monkeypatch, files, ini='chronik_broker_config = {"num.partitons": 3}\n')
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*chronik: unknown broker setting 'num.partitons'; did you mean num.partitions?"])
    assert "Traceback" not in result.stdout.str()


def test_disabled_with_p_no_chronik(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"test_disabled_user.py": "def test_x(chronik_broker):\n    pass\n"}
    result = run_user_suite(pytester, monkeypatch, files, "-p", "no:chronik")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'chronik_broker' not found*"])
