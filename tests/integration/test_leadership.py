"""Cluster mode: preferred-leader elections, a follower behind its leader's log start, HW checkpoints.

Three real nodes.  A killed preferred leader comes back, rejoins the ISR and
gets its leadership back -- through ElectLeaders from a real admin client
(and a raw request to a node that is not the controller, which forwards it),
or by the controller's automatic balancing.  A follower that was down while
DeleteRecords moved its leader's log start restarts its log there and
catches up (meanwhile its leader's follower lag, in seconds, grows past
``replica.lag.time.max.ms``); at the end every replica holds the same
batches from that log start (a follower that stayed up moved its log start
with the leader's), and every node's high-watermark checkpoint names the
high watermark.
"""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import ElectionType, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from chronik.log.checkpoint import read_checkpoint
from chronik.protocol import decode_response
from chronik.storage import create_backend

from .clients import Sent, confluent_consume, confluent_produce
from .raw import Raw, request_frame
from .test_cluster import IDS, T0, Cluster, eventually, running_cluster, stop_all
from .test_controlled_shutdown import metrics_of
from .test_replication import read_replica

LAG_MS = 1500
LAG_SECONDS = "chronik_replication_follower_max_lag_seconds"


def partition_state(cluster: Cluster, node_id: int, topic: str) -> tuple[int, list[int], list[int]]:
    """(leader, replicas, ISR) of partition 0 as ``node_id`` says."""
    p = cluster.topics(node_id)[topic].partitions[0]
    return p.leader_id, list(p.replica_nodes), sorted(p.isr_nodes)


def kill_and_restart_preferred(cluster: Cluster, controller: int, topic: str) -> tuple[int, str]:
    """Kill partition 0's preferred leader (not the controller), write while it is away,
    restart it and wait until it is back in the ISR; returns it."""
    admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
    # a topic whose preferred replica is not the controller: the controller must stay up
    others = [i for i in IDS if i != controller]
    name = topic
    admin.create_topics([NewTopic(name, 1, replica_assignment=[[*others, controller]])],
                        operation_timeout=10)[name].result(15)
    leader, replicas, _ = eventually(
        lambda: partition_state(cluster, controller, name) if name in cluster.topics(controller) else None)
    assert leader == replicas[0] != controller
    cluster.nodes[leader].kill()
    eventually(lambda: partition_state(cluster, controller, name)[0] not in (leader, -1), 15)
    bootstrap = ",".join(cluster.nodes[i].bootstrap for i in IDS if i != leader)
    assert confluent_produce(bootstrap, name, [Sent(None, b"v%d" % n, [], T0 + n) for n in range(5)]) == list(range(5))
    cluster.nodes[leader].start()
    eventually(lambda: partition_state(cluster, controller, name)[2] == [1, 2, 3], 20)
    return leader, name


def raw_elect(cluster: Cluster, node_id: int, topic: str) -> int:
    """ElectLeaders v2 (preferred) of ``topic``-0 sent to ``node_id``: the partition's error code."""
    with Raw(cluster.nodes[node_id], timeout=15) as connection:
        connection.send(request_frame(43, 2, {"election_type": 0, "timeout": 10000,
                                              "topic_partitions": [{"topic": topic, "partitions": [0]}]}))
        frame = connection.read_frame()
    assert frame is not None
    answer = decode_response(43, 2, frame, 5)
    assert int(answer.error_code) == 0
    return int(answer.replica_election_results[0].partition_result[0].error_code)


def test_elect_leaders_gives_leadership_back_to_the_restarted_preferred_replica(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--set", f"replica.lag.time.max.ms={LAG_MS}",
                         "--set", "auto.leader.rebalance.enable=false") as cluster:
        controller = eventually(cluster.controller)
        preferred, topic = kill_and_restart_preferred(cluster, controller, "p")
        assert partition_state(cluster, controller, topic)[0] != preferred  # nothing moved it back by itself
        admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
        results = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(15)
        assert list(results.values()) == [None]
        for node_id in IDS:
            eventually(lambda: partition_state(cluster, node_id, topic)[0] == preferred)
        # again: ELECTION_NOT_NEEDED (84), also through a node that is not the controller (forwarded)
        other = next(i for i in IDS if i != controller)
        assert raw_elect(cluster, other, topic) == 84
        again = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(15)
        assert "ELECTION_NOT_NEEDED" in str(list(again.values())[0])
        # an unknown partition, per partition
        missing = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("nope", 0)]).result(15)
        assert "UNKNOWN_TOPIC_OR_PART" in str(list(missing.values())[0])
        # the new old leader serves everything written meanwhile, and takes writes
        bootstrap = cluster.nodes[preferred].bootstrap
        assert confluent_produce(bootstrap, topic, [Sent(None, b"after", [], T0)]) == [5]
        assert [r.value for r in confluent_consume(bootstrap, topic, 6)] == [b"v%d" % n for n in range(5)] + [b"after"]


def test_the_controller_rebalances_leadership_by_itself(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--set", f"replica.lag.time.max.ms={LAG_MS}",
                         "--set", "leader.imbalance.check.interval.seconds=1") as cluster:
        controller = eventually(cluster.controller)
        preferred, topic = kill_and_restart_preferred(cluster, controller, "auto")
        for node_id in IDS:
            eventually(lambda: partition_state(cluster, node_id, topic)[0] == preferred, 10)
        assert "gave leadership back to the preferred replica" in cluster.nodes[controller].output()


def test_a_follower_behind_the_leaders_log_start_restarts_there_and_checkpoints_survive(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--set", f"replica.lag.time.max.ms={LAG_MS}",
                         "--metrics-listen", "127.0.0.1:0") as cluster:
        controller = eventually(cluster.controller)
        admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
        admin.create_topics([NewTopic("ret", 1, 3, config={"segment.bytes": "1024"})],
                            operation_timeout=10)["ret"].result(15)
        meta = eventually(lambda: cluster.topics(controller).get("ret"))
        leader = meta.partitions[0].leader_id
        victim = next(i for i in IDS if i not in (leader, controller)) if leader != controller else \
            next(i for i in IDS if i != leader)
        bootstrap = cluster.nodes[leader].bootstrap
        assert confluent_produce(bootstrap, "ret", [Sent(None, b"a%d" % n, [], T0) for n in range(3)]) == [0, 1, 2]
        eventually(lambda: partition_state(cluster, leader, "ret")[2] == [1, 2, 3])
        time.sleep(0.5)  # let the follower fetch them
        cluster.nodes[victim].kill()
        eventually(lambda: victim not in partition_state(cluster, leader, "ret")[2], 15)
        written = [Sent(None, b"b%d" % n + b"x" * 300, [], T0) for n in range(20)]
        assert confluent_produce(bootstrap, "ret", written) == list(range(3, 23))
        deleted = admin.delete_records([TopicPartition("ret", 0, 15)])
        assert list(deleted.values())[0].result(15).low_watermark == 15
        # the leader measures, in time, how long the dead follower has not been caught up
        lagging = eventually(lambda: (m := metrics_of(cluster, leader))[LAG_SECONDS] > LAG_MS / 1000 and m)
        assert lagging["chronik_replication_lag_records"] == 0  # (the records lag is the followers' view)
        cluster.nodes[victim].start()
        eventually(lambda: partition_state(cluster, leader, "ret")[2] == [1, 2, 3], 20)
        assert eventually(lambda: metrics_of(cluster, leader)[LAG_SECONDS] < 1.0)
        assert cluster.nodes[victim].wait_for_log(r"restarting the log there")
        assert confluent_produce(bootstrap, "ret", [Sent(None, b"last", [], T0)]) == [23]
        time.sleep(0.5)
        topic_id = meta.topic_id.hex
        stop_all(cluster)

    replicas = {i: read_replica(tmp_path / f"node{i}", "ret", topic_id) for i in IDS}
    start, end, batches = replicas[victim]
    assert start == 15 and end == 24
    # the same batches from the same log start on every replica (the follower that stayed up
    # moved its log start with the leader's DeleteRecords)
    assert replicas[1] == replicas[2] == replicas[3]
    for i in IDS:
        assert read_checkpoint(create_backend("python"), str(tmp_path / f"node{i}")).get(("ret", 0)) == 24, i


def test_elect_leaders_on_a_single_node_needs_no_election(broker) -> None:  # type: ignore[no-untyped-def]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("one", 2, 1)], operation_timeout=10)["one"].result(15)
    results = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("one", 0), TopicPartition("one", 1)]).result(15)
    assert all("ELECTION_NOT_NEEDED" in str(error) for error in results.values()) and len(results) == 2
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(15) == {}  # every partition: nothing to report
    unclean = admin.elect_leaders(ElectionType.UNCLEAN, [TopicPartition("one", 0)]).result(15)
    assert "ELECTION_NOT_NEEDED" in str(list(unclean.values())[0])
