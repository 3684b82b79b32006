"""Start-up as an operator meets it: real ``python -m chronik`` processes, their exit status and output.

Every problem an operator can fix (a data directory in use, a port in use, a
file where the data directory should be) is one line on stderr and exit
status 2, never a traceback; ``serve --help`` is the real parser's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .brokerproc import BrokerProcess, one_line_error, serve
from .clients import Sent, confluent_consume, confluent_produce


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_second_broker_on_the_same_data_directory_exits_at_once_naming_the_holder(tmp_path: Path) -> None:
    first = BrokerProcess(tmp_path / "data").start()
    try:
        assert confluent_produce(first.bootstrap, "t", [Sent(None, b"first", [], 1)]) == [0]
        assert first.proc is not None
        done = serve("--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", timeout=20)
        line = one_line_error(done)
        assert f"data directory {tmp_path / 'data'} is in use by process {first.proc.pid}" in line, line
        assert (tmp_path / "data" / ".lock").exists()
        assert [r.value for r in confluent_consume(first.bootstrap, "t", 1)] == [b"first"]  # untouched
    finally:
        first.stop()
    first.start()  # the lock went with the process that held it
    try:
        assert [r.value for r in confluent_consume(first.bootstrap, "t", 1)] == [b"first"]
    finally:
        first.stop()


def test_a_killed_brokers_lock_file_does_not_lock(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    broker.kill()
    broker.start()  # the kernel dropped the lock with the process; the file's pid is only informative
    broker.stop()


def test_kafka_port_in_use_is_one_line_and_status_2(tmp_path: Path, busy_port: int) -> None:
    line = one_line_error(serve("--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{busy_port}"))
    assert f"cannot listen for Kafka clients on 127.0.0.1:{busy_port}" in line and "in use" in line, line


def test_metrics_port_in_use_is_one_line_and_status_2(tmp_path: Path, busy_port: int) -> None:
    line = one_line_error(serve("--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
                                "--metrics-listen", f"127.0.0.1:{busy_port}"))
    assert f"cannot listen for operator HTTP (metrics_listen) on 127.0.0.1:{busy_port}" in line, line


def test_a_file_as_data_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    line = one_line_error(serve("--data-dir", str(tmp_path / "file"), "--listen", "127.0.0.1:0"))
    assert "is not a directory" in line and "Errno" not in line, line
    line = one_line_error(serve("--data-dir", str(tmp_path / "file" / "below"), "--listen", "127.0.0.1:0"))
    assert "cannot create data directory" in line, line


def test_serve_help_names_real_defaults() -> None:
    """The help of the real command line (not a parser built by the test): no "(default: None)"."""
    done = subprocess.run([sys.executable, "-m", "chronik", "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "(default: None)" not in text and "default: None" not in text
    assert "Default: 0.0.0.0:9092" in text and "Default: ./chronik-data" in text and "Default: 1048588" in text
    assert "memory and faulty: in memory, NOT durable, for tests only" in text


def test_in_memory_backend_warns_and_does_not_claim_a_data_directory(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", "--wal-backend", "memory").start()
    broker.stop()
    output = broker.output()
    assert "WARNING" in output and "NOT DURABLE, for tests only" in output, output
    assert f"data in {tmp_path / 'data'}" not in output and "data in memory" in output, output
    assert not (tmp_path / "data").exists()


def test_a_misspelt_environment_variable_is_logged_with_a_suggestion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHRONIK_NUM_PARTITION", "3")
    broker = BrokerProcess(tmp_path / "data").start()
    broker.stop()
    line = broker.wait_for_log("unknown environment")
    # formatted like every other log line (logging was set up first), with a did-you-mean
    assert " WARNING chronik.config: " in line, line
    assert "CHRONIK_NUM_PARTITION (did you mean CHRONIK_NUM_PARTITIONS?)" in line, line


def test_the_operator_endpoint_is_announced_once(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", "--metrics-listen", "127.0.0.1:0").start()
    broker.wait_for_log("operator HTTP")
    broker.stop()
    assert sum("operator HTTP" in line for line in broker.log_lines) == 1, broker.output()


def test_replication_port_in_use_is_one_line_and_status_2(tmp_path: Path, busy_port: int) -> None:
    peers = f"1@127.0.0.1:19092/127.0.0.1:{busy_port},2@127.0.0.1:19093/127.0.0.1:19293"
    line = one_line_error(serve("--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--node-id", "1",
                                "--replication-listen", f"127.0.0.1:{busy_port}", "--peer", peers))
    assert f"cannot listen for replication on 127.0.0.1:{busy_port}" in line, line
