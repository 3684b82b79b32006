"""Cluster mode: SIGTERM hands leadership over before the node stops; per-node replication metrics.

Controlled shutdown: three real nodes, a topic with three partitions and RF 3
under a continuous acks=all producer (the :class:`Writer` of
``test_failover``).  A node stopped with SIGTERM first has the controller move
the leadership of its partitions to in-sync replicas, so the moment the
process has exited the metadata already names other leaders; the same for
the controller itself.  Every acknowledged record is read back where it was
acknowledged.

Metrics: the replication gauges and counters on ``/metrics`` of a leader and
its followers, and a follower killed for good showing up as an
under-replicated partition (and an ISR shrink) on the leader.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from .test_cluster import IDS, Cluster, eventually, running_cluster
from .test_failover import leaders, start_loaded


def test_sigterm_moves_leadership_before_the_node_exits(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        controller, writer = start_loaded(cluster)
        try:
            # a partition leader that is not the controller
            victim = next(i for i in IDS if i != controller)
            assert cluster.nodes[victim].stop() == 0
            after = leaders(cluster, controller)  # right after the exit, no session timeout waited for
            assert victim not in {leader for leader, _, _ in after}
            assert all(victim not in isr for _, _, isr in after)
            assert sorted(epoch for _, epoch, _ in after) == [0, 0, 1]
            assert cluster.nodes[victim].wait_for_log(r"controlled shutdown: leadership of 1 partition\(s\) handed over")
            print(f"node {victim} stopped: writable again after {writer.wait_writable(time.monotonic()):.2f} s")

            # restarted, it registers again, is unfenced and rejoins every ISR
            cluster.nodes[victim].start()
            eventually(lambda: len(cluster.metadata(controller).brokers) == 3)
            eventually(lambda: all(isr == [1, 2, 3] for _, _, isr in leaders(cluster, controller)), 20)

            # the controller, which leads a partition too: its own command commits before it stops
            assert cluster.nodes[controller].stop() == 0
            survivors = tuple(i for i in IDS if i != controller)
            for node_id in survivors:
                assert controller not in {leader for leader, _, _ in leaders(cluster, node_id)}
            print(f"controller {controller} stopped: writable again after {writer.wait_writable(time.monotonic()):.2f} s")
            time.sleep(0.3)
        finally:
            writer.finish()
        writer.check_acked(cluster.nodes[survivors[0]].bootstrap)


def metrics_of(cluster: Cluster, node_id: int) -> dict[str, float]:
    line = cluster.nodes[node_id].wait_for_log(r"operator HTTP .* listening on 127\.0\.0\.1:\d+")
    with urllib.request.urlopen("http://127.0.0.1:" + line.rsplit(":", 1)[1].strip() + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(chronik_\w+) ([0-9.e+-]+)$", text, re.MULTILINE)}


def test_replication_metrics_per_node(tmp_path: Path) -> None:
    # a short replica lag limit and a long session timeout: the leader drops a dead follower from the ISR itself
    with running_cluster(tmp_path, "--metrics-listen", "127.0.0.1:0", "--replica-lag-time-max-ms", "300",
                         "--broker-session-timeout-ms", "4000") as cluster:
        controller = eventually(cluster.controller)
        admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
        admin.create_topics([NewTopic("metered", 1, 3)], operation_timeout=10)["metered"].result(15)
        partition = eventually(lambda: (t := cluster.topics(controller).get("metered")) and t.partitions[0])
        leader = partition.leader_id
        followers = [i for i in IDS if i != leader]

        producer = confluent_kafka.Producer({"bootstrap.servers": cluster.nodes[leader].bootstrap, "acks": "all"})
        for _ in range(50):
            producer.produce("metered", value=b"x" * 100)
        assert producer.flush(10) == 0

        on_leader = metrics_of(cluster, leader)
        assert on_leader["chronik_partitions_led"] == 1
        assert on_leader["chronik_replication_bytes_out_total"] >= 2 * 5000
        assert on_leader["chronik_replication_bytes_in_total"] == 0
        for follower in followers:
            on_follower = eventually(lambda: (m := metrics_of(cluster, follower))["chronik_replication_lag_records"] == 0 and m)
            assert on_follower["chronik_partitions_led"] == 0
            assert on_follower["chronik_replication_bytes_in_total"] >= 5000
            assert on_follower["chronik_replication_max_lag_records"] == 0
        assert eventually(lambda: metrics_of(cluster, leader)["chronik_under_replicated_partitions"] == 0)

        # The image (the gauge) changes when the ISR change is applied, the counter a
        # scheduler round or a forward's answer later: wait for both, not one then the other.
        cluster.nodes[followers[0]].kill()
        eventually(lambda: (m := metrics_of(cluster, leader))["chronik_under_replicated_partitions"] == 1
                   and m["chronik_isr_shrinks_total"] >= 1)

        cluster.nodes[followers[0]].start()
        eventually(lambda: (m := metrics_of(cluster, leader))["chronik_under_replicated_partitions"] == 0
                   and m["chronik_isr_expands_total"] >= 1, 20)
