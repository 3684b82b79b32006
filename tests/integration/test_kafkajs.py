"""kafkajs, the Node.js Kafka client, against a real broker process.

Each test runs one scenario of ``tests/js/kafkajs_check.js`` (admin, produce
and consume round trip, idempotent producer, consumer group, transactions)
in ``node``; the script does the work, checks what it got and prints a JSON
result that is asserted on here.  Needs ``node`` and ``npm ci --prefix
tests/js`` (``.ci/run`` does it); without them the tests are skipped, unless
``CHRONIK_REQUIRE_KAFKAJS=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .brokerproc import BrokerProcess
from .clients import confluent_consume
from .clients import confluent_read_all

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "kafkajs_check.js"
NODE = shutil.which("node")


def _missing() -> str | None:
    if NODE is None:
        return "node is not installed (kafkajs tests need Node.js)"
    if not (JS_DIR / "node_modules" / "kafkajs" / "package.json").is_file():
        return "kafkajs is not installed: run `npm ci --prefix tests/js`"
    return None


MISSING = _missing()
if MISSING is not None and os.environ.get("CHRONIK_REQUIRE_KAFKAJS") == "1":
    raise RuntimeError(f"CHRONIK_REQUIRE_KAFKAJS=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def js_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for every scenario (each uses its own topics and groups); no initial rebalance delay."""
    proc = BrokerProcess(tmp_path_factory.mktemp("kafkajs") / "data",
                         "--group-initial-rebalance-delay-ms", "0").start()
    try:
        yield proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()


def run_scenario(broker: BrokerProcess, scenario: str, timeout: float = 60.0) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run([NODE, str(SCRIPT), broker.bootstrap, scenario], cwd=JS_DIR,
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no result from kafkajs_check.js {scenario} (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["scenario"] == scenario
    assert result["ok"] and done.returncode == 0, (
        f"kafkajs {scenario} failed: {json.dumps(result['failures'], indent=1)}\n"
        f"{result.get('stack', '')}\nkafkajs log:\n{done.stderr[-4000:]}")
    assert result["kafkajs"] == json.loads((JS_DIR / "package.json").read_text())["dependencies"]["kafkajs"]
    return result


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def test_kafkajs_admin(js_broker: BrokerProcess) -> None:
    """createTopics (partitions, configs; existing and invalid), listTopics, fetchTopicMetadata,
    describeCluster, describeConfigs (topic and broker), alterConfigs, createPartitions,
    fetchTopicOffsets(ByTimestamp), deleteTopicRecords, deleteTopics."""
    result = run_scenario(js_broker, "admin")
    assert result["invalidConfig"]["type"] == "INVALID_CONFIG"
    assert result["describedConfigs"]["retention.ms"] == {"value": "3600000", "isDefault": False}
    assert [p["leader"] for p in result["metadata"]] == [1, 1, 1]
    assert result["deletedTopicError"] == "UNKNOWN_TOPIC_OR_PARTITION"


def test_kafkajs_round_trip_byte_for_byte(js_broker: BrokerProcess) -> None:
    """Keys, null values, empty keys and values, binary and repeated headers, explicit timestamps,
    50-100 kB values, three partitions, acks -1 and 1, no compression and gzip, sendBatch to two
    topics, a LogAppendTime topic: a kafkajs consumer reads back exactly what was sent, and so
    does librdkafka (what kafkajs wrote is stored as any client expects)."""
    result = run_scenario(js_broker, "roundtrip")
    assert result["sent"] == result["received"] == 85
    assert result["mismatches"] == 0
    records = result["records"]
    for partition in range(3):
        sent = sorted((r for r in records if r["partition"] == partition), key=lambda r: r["offset"])
        got = confluent_consume(js_broker.bootstrap, result["topic"], len(sent), partition=partition)
        assert [g.offset for g in got] == [r["offset"] for r in sent]
        for g, r in zip(got, sent):
            assert g.key == unb64(r["key"]), (partition, g.offset)
            assert g.value == unb64(r["value"]), (partition, g.offset)
            assert g.headers == [(k, unb64(v)) for k, v in r["headers"]], (partition, g.offset)
            assert g.timestamp == r["timestamp"], (partition, g.offset)


def test_kafkajs_idempotent_producer(js_broker: BrokerProcess) -> None:
    """InitProducerId, acks -1, plain and gzip batches: each record exactly once, batches keep the
    producer id and consecutive sequence numbers; a second producer gets another id."""
    result = run_scenario(js_broker, "idempotent")
    assert result["received"] == 31
    assert result["firstSequences"] == {"0": [0, 5, 10], "1": [0, 5, 10]}
    assert len({p["id"] for p in result["producerIds"]}) == 2


def test_kafkajs_consumer_group_resumes_at_committed_offsets(js_broker: BrokerProcess) -> None:
    """Two members share four partitions (each only its own), commit per record up to offset 6
    and stop; after more records, restarted members (fromBeginning false) get exactly offsets
    6..19 of every partition, once; then one member with default auto-commit gets only the
    next records and commits the log end; listGroups, describeGroups, fetchOffsets and
    deleteGroups agree."""
    result = run_scenario(js_broker, "group")
    assert sorted(result["assignments"]["a"] + result["assignments"]["b"]) == [0, 1, 2, 3]
    assert result["committedAfterPhase1"] == ["6"] * 4
    assert result["phase2Received"] == 4 * 14
    assert result["committedAfterPhase2"] == ["20"] * 4
    assert result["committedAfterPhase3"] == ["21"] * 4


def test_kafkajs_transactions(js_broker: BrokerProcess) -> None:
    """A kafkajs transactional producer commits, aborts, and commits again with sendOffsets: a
    read_committed kafkajs consumer sees exactly the committed records in order (and librdkafka
    too), read_uncommitted sees the aborted ones as well, and the group's offset is the committed
    transaction's, not the aborted one's."""
    result = run_scenario(js_broker, "transactions")
    committed = {p: [v.split(":", 1)[1] for v in result["readCommitted"] if v.startswith(f"{p}:")] for p in (0, 1)}
    assert committed == {0: ["commit1-0", "commit1-2", "commit2-0"], 1: ["commit1-1", "commit1-3", "commit2-1"]}
    assert ["0", "3"] in result["groupOffsets"] or [0, "3"] in result["groupOffsets"], result["groupOffsets"]
    everything = confluent_read_all(js_broker.bootstrap, result["topic"], 2, "read_uncommitted")
    assert [v for _, v in everything[1]] == [b"commit1-1", b"commit1-3", b"abort-1", b"commit2-1"]
    librdkafka_view = confluent_read_all(js_broker.bootstrap, result["topic"], 2, "read_committed")
    assert {p: [v.decode() for _, v in records] for p, records in librdkafka_view.items()} == committed
