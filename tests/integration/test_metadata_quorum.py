"""DescribeQuorum over real sockets: the metadata quorum as its leader sees it.

Raw requests of every version to one node (and their errors), the ACL check, and Kafka's
``kafka-metadata-quorum`` against a 3-node cluster: through the controller and through a
follower (which asks the controller), and after the controller is killed, when the new
leader has not heard from the dead voter (Kafka's -1 for unknown).  The single-node output of
the tool is checked with the other tools in ``test_kafka_tools.py``; the Java admin client's
``describeMetadataQuorum`` in ``test_java.py``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from .brokerproc import BrokerProcess, running_broker
from .raw import Raw
from .test_cluster import IDS, Cluster, eventually, running_cluster
from .test_java import MISSING as JAVA_MISSING
from .test_kafka_tools import QUORUM, Ran, quorum_status, run_tools, table

METADATA = "__cluster_metadata"
UNKNOWN_TOPIC_OR_PARTITION = 3
CLUSTER_AUTHORIZATION_FAILED = 31
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
needs_java = pytest.mark.skipif(JAVA_MISSING is not None, reason=JAVA_MISSING or "")


def describe_quorum(node: BrokerProcess, version: int = 2, topic: str = METADATA, partitions: tuple[int, ...] = (0,)) -> Any:
    """A DescribeQuorum answer from ``node``."""
    with Raw(node) as raw:
        return raw.call(55, version, {"topics": [
            {"topic_name": topic, "partitions": [{"partition_index": p} for p in partitions]}]})


def the_partition(answer: Any) -> Any:
    """The one partition of a DescribeQuorum answer (it must name __cluster_metadata 0)."""
    assert answer.error_code == 0
    (topic,) = answer.topics
    (partition,) = topic.partitions
    assert (topic.topic_name, partition.partition_index) == (METADATA, 0)
    return partition


def test_every_version_on_a_single_node_and_a_request_for_another_partition(broker: BrokerProcess) -> None:
    """v0: leader, epoch, high watermark and each voter's log end; v1 adds the leader's times (now);
    v2 adds no directory id and no Raft endpoint (a single node has no Raft port).  A request for
    another topic or partition gets UNKNOWN_TOPIC_OR_PARTITION for each, as Kafka's."""
    before = time.time() * 1000
    for version in (0, 1, 2):
        partition = the_partition(describe_quorum(broker, version))
        assert (partition.error_code, partition.leader_id, partition.leader_epoch) == (0, 1, 0)
        (voter,) = partition.current_voters
        assert voter.replica_id == 1 and voter.log_end_offset == partition.high_watermark >= 1
        assert partition.observers == ()
        if version >= 1:
            assert before - 1 <= voter.last_fetch_timestamp == voter.last_caught_up_timestamp <= time.time() * 1000
    answer = describe_quorum(broker, 2)
    assert answer.nodes == () and str(answer.topics[0].partitions[0].current_voters[0].replica_directory_id or ZERO_UUID) == ZERO_UUID
    for topic, partitions in (("__chronik_metadata", (0,)), (METADATA, (1,)), (METADATA, (0, 1))):
        answer = describe_quorum(broker, 2, topic, partitions)
        assert answer.error_code == 0
        (got,) = answer.topics
        assert got.topic_name == topic
        assert [(p.partition_index, p.error_code) for p in got.partitions] == [
            (p, UNKNOWN_TOPIC_OR_PARTITION) for p in partitions]


def test_describing_the_quorum_needs_describe_on_the_cluster(tmp_path: Path) -> None:
    """As Kafka: DESCRIBE on the cluster (ALTER implies it), else CLUSTER_AUTHORIZATION_FAILED at
    the top level and no topics."""
    enforce = ("--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
               "--set", "allow.everyone.if.no.acl.found=true")
    with running_broker(tmp_path / "data", *enforce) as node:
        admin = AdminClient({"bootstrap.servers": node.bootstrap})
        anonymous = ("User:ANONYMOUS", "*")
        alter = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, *anonymous,
                           AclOperation.ALTER, AclPermissionType.ALLOW)
        deny = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, *anonymous,
                          AclOperation.DESCRIBE, AclPermissionType.DENY)
        for future in admin.create_acls([alter, deny]).values():
            future.result(10)
        refused = describe_quorum(node)
        assert (refused.error_code, refused.topics) == (CLUSTER_AUTHORIZATION_FAILED, ())
        assert "User:ANONYMOUS may not DESCRIBE the cluster" in refused.error_message
        for future in admin.delete_acls([AclBindingFilter(
                ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, *anonymous, AclOperation.DESCRIBE,
                AclPermissionType.DENY)]).values():
            future.result(10)
        assert the_partition(describe_quorum(node)).leader_id == 1
        node.wait_for_log(r"authorization denied: principal User:ANONYMOUS .* may not DESCRIBE CLUSTER")


# -- a 3-node cluster ----------------------------------------------------------------------------


def controller_epoch(node: BrokerProcess) -> int:
    """The epoch in which ``node`` last became controller, from its log."""
    return int(re.findall(r"became controller \(epoch (\d+)\)", node.output())[-1])


def replication_rows(ran: dict[str, Ran], name: str) -> dict[str, dict[str, str]]:
    """The rows ``kafka-metadata-quorum describe --replication`` printed, by NodeId."""
    return {row.pop("NodeId"): row for row in table(ran, name)}


def level_answer(node: BrokerProcess) -> Any:
    """``node``'s DescribeQuorum answer if every voter's log end is the high watermark (nothing in
    flight), else None."""
    answer = describe_quorum(node)
    partition = the_partition(answer)
    return answer if all(v.log_end_offset == partition.high_watermark for v in partition.current_voters) else None


@needs_java
def test_kafka_metadata_quorum_on_a_cluster_through_any_node_and_after_the_controller_dies(tmp_path: Path) -> None:
    """Every node answers with the controller's view (a follower asks the controller): the leader,
    its epoch (as its "became controller" log line says), the voters with their replication
    addresses, each level with the high watermark once idle, recently heard from.  kafka-metadata-
    quorum prints the same through a follower.  After kill -9 of the controller the new one reports
    a higher epoch and the dead voter as unknown (-1: it never heard from it), which the tool turns
    into a lag of the leader's log end + 1 and MaxFollowerLagTimeMs -1, as for Kafka."""
    with running_cluster(tmp_path) as cluster:
        controller = eventually(cluster.controller, 20)
        follower = next(i for i in IDS if i != controller)
        epoch = controller_epoch(cluster.nodes[controller])
        for i in IDS:  # every node answers with the controller's view, a follower by asking it
            answer = eventually(lambda: level_answer(cluster.nodes[i]), 10)
            partition = the_partition(answer)
            level = partition.high_watermark
            assert (partition.leader_id, partition.leader_epoch) == (controller, epoch)
            assert [v.replica_id for v in partition.current_voters] == list(IDS) and partition.observers == ()
            assert {n.node_id: [(listener.name, f"{listener.host}:{listener.port}") for listener in n.listeners]
                    for n in answer.nodes} == {j: [("REPLICATION", cluster.replication[j])] for j in IDS}
        ran = tools(cluster, {"status": follower, "replication": follower, "status-controller": controller})
        status = quorum_status(ran, "status")
        assert quorum_status(ran, "status-controller")["LeaderId"] == status.pop("LeaderId") == str(controller)
        assert status.pop("LeaderEpoch") == str(epoch)
        high_watermark = int(status.pop("HighWatermark"))
        assert high_watermark >= 4  # the first controller's no-op and three registrations
        assert status.pop("CurrentVoters") == ", ".join(
            f'{{"id": {i}, "endpoints": ["REPLICATION://{cluster.replication[i]}"]}}' for i in IDS).join("[]")
        assert status.pop("CurrentObservers") == "[]"
        assert int(status.pop("MaxFollowerLag")) >= 0 and int(status.pop("MaxFollowerLagTimeMs")) >= 0
        rows = replication_rows(ran, "replication")
        assert {i: row["Status"] for i, row in rows.items()} == {
            str(i): "Leader" if i == controller else "Follower" for i in IDS}
        now = time.time() * 1000
        for row in rows.values():
            assert row["DirectoryId"] == "AAAAAAAAAAAAAAAAAAAAAA"
            assert int(row["LogEndOffset"]) >= level and int(row["Lag"]) >= 0  # durable ends only grow
            assert now - 60_000 < int(row["LastCaughtUpTimestamp"]) <= int(row["LastFetchTimestamp"]) <= now

        cluster.nodes[controller].kill()
        survivors = tuple(i for i in IDS if i != controller)
        successor = eventually(lambda: new_controller(cluster, survivors), 20)
        partition = eventually(lambda: led_by(successor, the_partition(describe_quorum(cluster.nodes[successor]))), 10)
        assert partition.leader_epoch > epoch
        dead = next(v for v in partition.current_voters if v.replica_id == controller)
        assert (dead.log_end_offset, dead.last_fetch_timestamp, dead.last_caught_up_timestamp) == (-1, -1, -1)
        other = next(i for i in survivors if i != successor)
        ran = tools(cluster, {"status": other, "replication": other})
        status = quorum_status(ran, "status")
        assert (status["LeaderId"], status["LeaderEpoch"]) == (str(successor), str(partition.leader_epoch))
        assert status["MaxFollowerLagTimeMs"] == "-1"  # the dead voter never caught up with this leader
        rows = replication_rows(ran, "replication")
        dead_row = rows[str(controller)]
        assert (dead_row["LogEndOffset"], dead_row["LastFetchTimestamp"], dead_row["LastCaughtUpTimestamp"],
                dead_row["Status"]) == ("-1", "-1", "-1", "Follower")
        assert int(dead_row["Lag"]) == int(rows[str(successor)]["LogEndOffset"]) + 1
        assert int(status["MaxFollowerLag"]) == int(dead_row["Lag"])


def new_controller(cluster: Cluster, survivors: tuple[int, ...]) -> int | None:
    """The controller all ``survivors`` name, once it is one of them."""
    ids = {cluster.metadata(i).controller_id for i in survivors}
    return ids.pop() if len(ids) == 1 and ids <= set(survivors) else None


def led_by(leader: int, partition: Any) -> Any:
    """``partition`` if ``leader`` describes it as its leader, else None."""
    return partition if partition.leader_id == leader else None


def tools(cluster: Cluster, plan: dict[str, int]) -> dict[str, Ran]:
    """kafka-metadata-quorum ``describe --<what>`` (name: status..., replication...) through node ``plan[name]``."""
    return run_tools(cluster.nodes[IDS[0]].data_dir.parent, {
        name: (None, QUORUM, ["--bootstrap-server", cluster.nodes[node].bootstrap, "describe",
                              "--status" if name.startswith("status") else "--replication"])
        for name, node in plan.items()})
