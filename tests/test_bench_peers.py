"""bench/peers.py and the comparison of bench/broker.py, without starting any broker.

The benchmarks themselves are not run here (they measure, they do not test);
these checks keep the plumbing honest: which peers ``--peer`` means, Kafka's
two modes, one clear line when Maven or Java is missing, and the ratios.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import broker  # noqa: E402  (bench/broker.py)
import peers  # noqa: E402  (bench/peers.py)


def test_peer_names_expand_and_keep_one_order() -> None:
    assert peers.parse_peers("kafka") == ["kafka", "kafka-durable"]
    assert peers.parse_peers("tansu,kafka-default") == ["kafka", "tansu"]
    assert peers.parse_peers("kafka-durable,kafka") == ["kafka", "kafka-durable"]
    assert peers.parse_peers("") == []
    with pytest.raises(ValueError, match="redpanda"):
        peers.parse_peers("redpanda")


def test_missing_maven_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "_classpath", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(peers.PeerUnavailable) as caught:
        peers.kafka_classpath()
    assert "mvn" in str(caught.value) and "\n" not in str(caught.value)


def test_missing_java_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(peers.PeerUnavailable) as caught:
        peers.java_binary()
    assert "Java 17" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("durable", [False, True])
def test_kafka_node_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, durable: bool) -> None:
    monkeypatch.setattr(peers, "java_binary", lambda: "/usr/bin/java")
    monkeypatch.setattr(peers, "kafka_classpath", lambda: "/a.jar:/b.jar")
    node = peers.KafkaNode(tmp_path, 2, {1: 9001, 2: 9002, 3: 9003}, {1: 9101, 2: 9102, 3: 9103}, "cid", durable=durable)
    config = dict(line.split("=", 1) for line in node.config_file.read_text().splitlines())
    assert config["process.roles"] == "broker,controller"
    assert config["node.id"] == "2"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"
    assert config["offsets.topic.replication.factor"] == "3"
    assert config.get("log.flush.interval.messages") == ("1" if durable else None)
    assert node.bootstrap == "127.0.0.1:9002"
    assert node.command()[-2:] == ["kafka.Kafka", str(node.config_file)]
    assert "-Xmx1G" in node.command() and node.command()[node.command().index("-cp") + 1] == "/a.jar:/b.jar"


def test_comparison_gives_chronik_over_peer_ratios() -> None:
    chronik = broker.Measured("chronik", [
        broker.Row("produce-acksall", msgs_per_s=200_000.0, count=1_000_000, broker_cpu_s=2.0),
        broker.Row("inflight-1", msgs_per_s=1000.0, p50_ms=0.5, p99_ms=2.0),
    ], False)
    kafka = broker.Measured("kafka", [
        broker.Row("produce-acksall", msgs_per_s=100_000.0, count=1_000_000, broker_cpu_s=8.0),
        broker.Row("inflight-1", error="TimeoutError: no result within 300 s"),
    ], True)
    tansu = broker.Measured("tansu", [
        broker.Row("produce-acksall", msgs_per_s=400_000.0, count=1_000_000, broker_cpu_s=1.0,
                   error="1000000 messages acknowledged but the high watermarks add up to 999000"),
    ], True)
    lines = broker.comparison_lines([chronik, kafka, tansu])
    assert lines[0] == ("| workload | metric | Chronik | Kafka default | Tansu | better"
                        " | Chronik / Kafka default | Chronik / Tansu |")
    table = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line for line in lines[2:] if line.startswith("|")}
    assert table[("produce-acksall", "msg/s")].endswith("| 200,000 | 100,000 | 400,000 ⚠ | higher | 2.00× | 0.50× |")
    assert table[("produce-acksall", "CPU s/M msg")].endswith("| 2 | 8 | 1 ⚠ | lower | 0.25× | 2.00× |")
    assert table[("inflight-1", "p50 ms")].endswith("| 0.5 | — | — | lower | — | — |")
    assert ("startup", "start-up ms") not in table  # no broker measured it
    assert any("Tansu produce-acksall: 1000000 messages acknowledged" in line for line in lines)
    assert any("Kafka default inflight-1: TimeoutError" in line for line in lines)
