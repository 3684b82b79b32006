"""The operator endpoint of a running broker: /metrics and /health."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import confluent_kafka

from .brokerproc import BrokerProcess
from .raw import Raw, produce_frame


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_and_health_of_a_serving_broker(tmp_path: Path) -> None:
    proc = BrokerProcess(tmp_path / "data", "--metrics-listen", "127.0.0.1:0").start()
    try:
        line = proc.wait_for_log(r"operator HTTP .* listening on 127\.0\.0\.1:\d+")
        base = "http://127.0.0.1:" + line.rsplit(":", 1)[1].strip()
        producer = confluent_kafka.Producer({"bootstrap.servers": proc.bootstrap, "acks": "all"})
        for i in range(20):
            producer.produce("metered", value=b"x" * 100)
        assert producer.flush(10) == 0
        consumer = confluent_kafka.Consumer({"bootstrap.servers": proc.bootstrap, "group.id": "m",
                                             "enable.auto.commit": False})
        consumer.assign([confluent_kafka.TopicPartition("metered", 0, 0)])
        read = 0
        while read < 20:
            message = consumer.poll(10)
            assert message is not None and message.error() is None
            read += 1
        consumer.close()
        with Raw(proc) as connection:
            connection.send(produce_frame("metered", 5, b"no such partition"))
            assert connection.read_frame() is not None
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            text = response.read().decode()
        assert metric(text, "chronik_records_appended_total") == 20
        assert metric(text, "chronik_bytes_in_total") > 2000
        assert metric(text, "chronik_bytes_out_total") >= metric(text, "chronik_bytes_in_total")
        assert metric(text, "chronik_produce_append_duration_seconds_count") >= 1
        assert metric(text, "chronik_fetch_read_duration_seconds_count") >= 1
        assert metric(text, "chronik_connections") >= 1
        assert metric(text, 'chronik_request_errors_total{api="produce",error="UNKNOWN_TOPIC_OR_PARTITION"}') == 1
        assert metric(text, "chronik_wal_syncs_total") >= 1
        assert metric(text, "chronik_partitions") == 1
        assert metric(text, "chronik_log_dir_failed") == 0
        assert metric(text, "chronik_wal_sync_polling") in (0, 1)  # which one: tests/server/test_http.py
        assert metric(text, 'chronik_requests_total{api="produce"}') >= 1
        assert metric(text, 'chronik_requests_total{api="metadata"}') >= 1
        with urllib.request.urlopen(base + "/health", timeout=5) as response:
            assert response.status == 200
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()
