"""A broker on a small, filling disk: a 40 MiB tmpfs as its data directory (needs root to mount).

Preallocation (8 MiB per partition segment) must never turn a nearly full
disk into a dead broker; a partition that cannot get space is offline
(KAFKA_STORAGE_ERROR) while everything else is served; once the log
directory has failed, every request that needs it is answered
KAFKA_STORAGE_ERROR (not a closed connection); and nothing acknowledged is lost.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from .brokerproc import BrokerProcess, one_line_error, serve
from .clients import Sent, confluent_consume, confluent_produce
from .raw import Raw, produce_frame


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 40 MiB tmpfs, unmounted after the test; skips where mounting is not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a filler file until only about ``leave`` bytes are free; returns it."""
    filler = disk / "filler"
    chunk = b"\xff" * (1 << 20)
    with open(filler, "ab") as out:
        while True:
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            if free <= leave:
                break
            try:
                out.write(chunk[: max(4096, min(len(chunk), free - leave))])
                out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def produce_errors(bootstrap: str, topic: str, partition: int, count: int, size: int) -> list[str]:
    """Produce ``count`` records of ``size`` bytes; the error names of those refused (none: all acknowledged)."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                                         "message.timeout.ms": 10000})
    errors: list[str] = []
    for _ in range(count):
        producer.produce(topic, value=b"v" * size, partition=partition,
                         on_delivery=lambda err, msg: errors.append(err.name()) if err else None)
        producer.poll(0)
    assert producer.flush(30) == 0
    return errors


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def refuse_produces(broker: BrokerProcess, count: int) -> None:
    """``count`` produces of 64 KiB to a failed log directory, each answered KAFKA_STORAGE_ERROR (56)."""
    with Raw(broker) as raw:
        for i in range(count):
            raw.send(produce_frame("a", 0, bytes(64 << 10), correlation_id=i))
            response = raw.read_frame()
            assert response is not None and struct.pack(">h", 56) in response


def test_creating_partitions_on_a_nearly_full_disk_keeps_the_broker_serving(small_disk: Path) -> None:
    """8 partitions x 8 MiB preallocation do not fit in what is left: they come up anyway, unpreallocated."""
    broker = BrokerProcess(small_disk / "data").start()
    try:
        fill(small_disk, leave=12 << 20)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("t", 8, 1)])["t"].result(15)
        for partition in range(8):
            records = [Sent(b"k", b"p%d" % partition, [], 1_700_000_000_000)]
            assert confluent_produce(broker.bootstrap, "t", records, partition=partition) == [0]
        assert broker.proc is not None and broker.proc.poll() is None
    finally:
        assert broker.stop() == 0, broker.output()
    assert "Traceback" not in broker.output(), broker.output()
    broker.start()  # the same dir, still nearly full: serves everything
    try:
        for partition in range(8):
            assert [r.value for r in confluent_consume(broker.bootstrap, "t", 1, partition=partition)] == [b"p%d" % partition]
    finally:
        broker.stop()
    assert "Traceback" not in broker.output(), broker.output()


def test_partitions_without_space_are_offline_until_space_returns(small_disk: Path) -> None:
    """A full disk at creation: CreateTopics is committed, the partitions answer KAFKA_STORAGE_ERROR,
    the broker serves what it has, and the partitions come up once space is freed."""
    broker = BrokerProcess(small_disk / "data").start()
    try:
        assert confluent_produce(broker.bootstrap, "before", [Sent(None, b"kept", [], 1)]) == [0]
        filler = fill(small_disk)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("late", 4, 1)])["late"].result(15)
        broker.wait_for_log(r"partition late-\d is offline: cannot open its log: .*No space left")
        assert set(produce_errors(broker.bootstrap, "late", 0, 1, 10)) == {"KAFKA_STORAGE_ERROR"}
        assert [r.value for r in confluent_consume(broker.bootstrap, "before", 1)] == [b"kept"]
        filler.unlink()
        broker.wait_for_log(r"partition late-0 is online again", timeout=20)
        assert produce_errors(broker.bootstrap, "late", 0, 3, 10) == []
        assert broker.proc is not None and broker.proc.poll() is None
    finally:
        broker.stop()
    assert "Traceback" not in broker.output(), broker.output()


def test_after_the_log_directory_failed_every_api_answers_storage_error(small_disk: Path) -> None:
    """Fill the disk under a producing broker: refused produces, then CreateTopics, CreatePartitions,
    DeleteTopics, AlterConfigs and IncrementalAlterConfigs (which write the metadata log) all answer
    KAFKA_STORAGE_ERROR and the connection lives on; acknowledged records survive a restart once
    there is room."""
    broker = BrokerProcess(small_disk / "data").start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("a", 1, 1)])["a"].result(15)
        filler = fill(small_disk, leave=1 << 20)
        errors = produce_errors(broker.bootstrap, "a", 0, 200, 64 << 10)  # more than the segment holds
        assert "KAFKA_STORAGE_ERROR" in errors, errors
        acknowledged = 200 - len(errors)
        broker.wait_for_log(r"answering|failed")
        for future in admin.create_topics([NewTopic("b", 1, 1)]).values():
            with pytest.raises(confluent_kafka.KafkaException) as info:
                future.result(15)
            assert info.value.args[0].name() == "KAFKA_STORAGE_ERROR"
        for future in admin.create_partitions([NewPartitions("a", 2)]).values():
            with pytest.raises(confluent_kafka.KafkaException) as info:
                future.result(15)
            assert info.value.args[0].name() == "KAFKA_STORAGE_ERROR"
        for future in admin.delete_topics(["a"]).values():
            with pytest.raises(confluent_kafka.KafkaException) as info:
                future.result(15)
            assert info.value.args[0].name() == "KAFKA_STORAGE_ERROR"
        replace = ConfigResource(ConfigResource.Type.TOPIC, "a", set_config={"retention.ms": "3600000"})
        increment = ConfigResource(ConfigResource.Type.TOPIC, "a", incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # legacy AlterConfigs, as a client may send it
            replaced = admin.alter_configs([replace])
        for future in [*replaced.values(), *admin.incremental_alter_configs([increment]).values()]:
            with pytest.raises(confluent_kafka.KafkaException) as info:
                future.result(15)
            assert info.value.args[0].name() == "KAFKA_STORAGE_ERROR"
        assert admin.list_topics(timeout=10).topics["a"].error is None  # metadata still served
        assert "handler of API" not in broker.output()
        # Refused produces pin nothing: 1,500 refused 64 KiB produces took RSS from 45 to 240 MiB when
        # every refusal re-raised one shared exception (each chaining its frames onto the traceback).
        assert broker.proc is not None
        refuse_produces(broker, 100)  # warm up (allocator, caches)
        before = rss_bytes(broker.proc.pid)
        refuse_produces(broker, 1500)
        assert rss_bytes(broker.proc.pid) - before < 30 << 20
    finally:
        broker.stop()
    filler.unlink()
    broker.start()
    try:
        got = confluent_consume(broker.bootstrap, "a", acknowledged)
        assert len(got) == acknowledged and [r.offset for r in got] == list(range(acknowledged))
    finally:
        broker.stop()


def test_start_up_on_a_full_disk_serves_what_it_can_or_says_why(small_disk: Path) -> None:
    broker = BrokerProcess(small_disk / "data").start()
    try:
        assert confluent_produce(broker.bootstrap, "kept", [Sent(None, b"x", [], 1)]) == [0]
    finally:
        broker.stop()
    fill(small_disk)
    broker.start()  # every file it needs exists: it serves
    try:
        assert [r.value for r in confluent_consume(broker.bootstrap, "kept", 1)] == [b"x"]
    finally:
        broker.stop()
    assert "Traceback" not in broker.output(), broker.output()
    # A new data directory on the full disk cannot even get its cluster id: one line, status 2.
    line = one_line_error(serve("--data-dir", str(small_disk / "fresh"), "--listen", "127.0.0.1:0"))
    assert "No space left on device" in line and str(small_disk / "fresh") in line, line
