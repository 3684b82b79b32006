"""franz-go, a strict Go Kafka client, against real broker processes.

Each test runs one scenario of ``tests/go`` (a small program built against
github.com/twmb/franz-go and its admin package kadm): the program does the work,
checks what it got and prints a JSON result asserted on here; franz-go's own log
(warnings and up) arrives on stderr and must be empty against a healthy broker.
Needs the built program (``go build -o bin/checks .`` in ``tests/go``, which
``.ci/run`` runs); without it the tests are skipped, unless ``CHRONIK_REQUIRE_GO=1``
(set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .brokerproc import BrokerProcess, running_broker
from .test_cluster import Cluster, eventually, running_cluster
from .test_java import assert_librdkafka_reads_the_same

CHECKS = Path(__file__).resolve().parents[1] / "go" / "bin" / "checks"
FRANZ_GO = "v1.22.3"
MISSING = None if CHECKS.is_file() else "tests/go is not built: run `go build -o bin/checks .` in tests/go"
if MISSING is not None and os.environ.get("CHRONIK_REQUIRE_GO") == "1":
    raise RuntimeError(f"CHRONIK_REQUIRE_GO=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def run_checks(scenario: str, bootstrap: str, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run one scenario to its end; returns its JSON result.  franz-go must not have logged a warning."""
    done = subprocess.run([str(CHECKS), scenario, bootstrap, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), f"no result from {scenario} (exit {done.returncode}):\n{done.stderr[-6000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["scenario"] == scenario and result["client"] == FRANZ_GO
    assert result["ok"] and done.returncode == 0, (
        f"franz-go {scenario} failed: {json.dumps(result['failures'], indent=1)}\nclient log:\n{done.stderr[-6000:]}")
    assert done.stderr == "", done.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def go_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for every scenario (each uses its own topics and groups); no initial rebalance delay.
    franz-go asked for no API or version the broker does not serve, and the broker logged no warning."""
    with running_broker(tmp_path_factory.mktemp("franz") / "data", "--group-initial-rebalance-delay-ms", "0") as proc:
        yield proc
        output = proc.output()
        assert "unsupported API" not in output and " WARNING " not in output and " ERROR " not in output, output[-6000:]


def assert_round_trip(result: dict[str, Any], bootstrap: str) -> None:
    assert result["sent"] == result["received"] == 5 * 41 and result["mismatches"] == 0
    assert_librdkafka_reads_the_same(bootstrap, result)


def test_franz_go_round_trip_byte_for_byte(go_broker: BrokerProcess) -> None:
    """One partition per codec (none, gzip, snappy, lz4, zstd), each from its own idempotent acks=all
    producer: keys, null keys and values, headers, explicit timestamps and a 1 MB value, read back
    byte for byte by franz-go and, the same bytes, by librdkafka."""
    assert_round_trip(run_checks("roundtrip", go_broker.bootstrap), go_broker.bootstrap)


def test_franz_go_consumer_group(go_broker: BrokerProcess) -> None:
    """A member reads and commits, leaves; two members (cooperative-sticky) resume from its commit,
    share the partitions, read every record once, and the group becomes Stable with both."""
    result = run_checks("groups", go_broker.bootstrap)
    assert result["read"] == 80 and result["committedTotal"] == 80
    assert (result["groupState"], result["groupProtocol"], result["groupMembers"]) == ("Stable", "cooperative-sticky", 2)


def test_franz_go_transactions(go_broker: BrokerProcess) -> None:
    """Six transactions over two partitions, two of them aborted: read_committed reads exactly the
    committed records, read_uncommitted every data record; each transaction left a marker per partition."""
    result = run_checks("transactions", go_broker.bootstrap)
    assert (result["readCommitted"], result["readUncommitted"]) == (20, 30)
    assert result["endOffsets"] == 30 + 6 * 2


def test_franz_go_admin(go_broker: BrokerProcess) -> None:
    """kadm: create (and again: TOPIC_ALREADY_EXISTS), create partitions, alter and describe configs,
    end offsets, offset for a timestamp, DeleteRecords, DeleteTopics."""
    result = run_checks("admin", go_broker.bootstrap)
    assert result["createExisting"].startswith("TOPIC_ALREADY_EXISTS")
    assert (result["partitions"], result["partitionsAfterCreate"]) == (2, 3)
    assert (result["retentionMs"], result["retentionSource"]) == ("7200000", "DYNAMIC_TOPIC_CONFIG")
    assert (result["endOffset"], result["offsetForTime"], result["startAfterDeleteRecords"]) == (10, 5, 4)
    assert result["existsAfterDelete"] is False


@pytest.fixture(scope="module")
def go_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("franz-cluster"), "--group-initial-rebalance-delay-ms", "0") as cluster:
        eventually(cluster.controller, 20)
        yield cluster


def test_franz_go_on_a_cluster(go_cluster: Cluster) -> None:
    """The round trip and the transactions with replication factor 3, through every node of a 3-node cluster."""
    bootstrap = ",".join(node.bootstrap for node in go_cluster.nodes.values())
    assert_round_trip(run_checks("roundtrip", bootstrap, "3"), go_cluster.nodes[3].bootstrap)
    result = run_checks("transactions", bootstrap, "3")
    assert (result["readCommitted"], result["readUncommitted"], result["endOffsets"]) == (20, 30, 42)
