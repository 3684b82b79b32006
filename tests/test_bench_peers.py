"""bench/peers.py and the comparisons of bench/broker.py and bench/transactions.py, without starting any broker.

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
import transactions  # noqa: E402  (bench/transactions.py)


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


def _txn_rows(plain: float, txn: float, p50: float, error: str | None = None) -> list:
    rows = [transactions.Row("produce-plain", msgs_per_s=plain, count=30_000, broker_cpu_s=0.01),
            transactions.Row("produce-txn", msgs_per_s=txn, txn_per_s=txn / 100, p50_ms=p50, vs_base=txn / plain,
                             count=30_000, broker_cpu_s=0.6, error=error)]
    transactions.judge(rows[1])
    return rows


def test_transactions_rounds_give_medians_of_each_rounds_own_ratio() -> None:
    runs = [broker.Measured("chronik", _txn_rows(plain, txn, p50, error), False)
            for plain, txn, p50, error in ((300_000.0, 9_000.0, 1.0, None), (100_000.0, 8_000.0, 3.0, "late marker"),
                                           (900_000.0, 10_000.0, 2.0, None))]
    row = {r.workload: r for r in transactions.median_of("chronik", runs).rows}["produce-txn"]
    assert row.msgs_per_s == 9_000.0 and row.p50_ms == 2.0
    assert row.vs_base == 0.03  # the median of 0.03, 0.08 and 0.011: each round against its own baseline
    assert row.target == ">= 0.7x plain" and row.met is False
    assert row.error == "late marker"
    assert row.extra["vs_base_each"] == [0.03, 0.08, 10_000.0 / 900_000.0]


def test_transactions_comparison_prints_each_brokers_own_ratio() -> None:
    chronik = broker.Measured("chronik", _txn_rows(300_000.0, 15_000.0, 1.2), False)
    kafka = broker.Measured("kafka", _txn_rows(600_000.0, 12_000.0, 0.5), False)
    lines = broker.comparison_lines([chronik, kafka], transactions.compared(chronik.rows))
    table = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line for line in lines[2:] if line.startswith("|")}
    assert table[("produce-txn", "x plain")].endswith("| 0.05 | 0.02 | higher | 2.50× |")
    assert table[("produce-txn", "txn/s")].endswith("| 150 | 120 | higher | 1.25× |")
    assert table[("produce-txn", "EndTxn p50 ms")].endswith("| 1.2 | 0.5 | lower | 2.40× |")
    assert table[("produce-txn", "CPU s/M msg")].endswith("| 20 | 20 | lower | 1.00× |")
    assert ("produce-plain", "x plain") not in table
