"""Cluster mode, leader failover: kill -9 partition leaders and the controller under acks=all load.

Three real nodes, a topic with three partitions and three replicas (each
node leads one), and a confluent-kafka producer (acks=all, retries on)
writing to every partition from a thread the whole time.  After each kill
the controller fences the silent broker and elects new leaders, and every
partition takes writes again within a few seconds (the time is measured
from the kill to the first acknowledgement of a record sent after it).  At
the end every acknowledged record is read back at the offset it was
acknowledged at.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from .clients import confluent_consume
from .test_cluster import IDS, Cluster, eventually, running_cluster

TOPIC = "failover"
PARTITIONS = 3
FAILOVER_LIMIT = 6.0
"""Seconds a test allows from a kill to writes on every partition (the target is 3; this machine is shared)."""


class Writer(threading.Thread):
    """Produces to every partition every few ms; records what was acknowledged where."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[tuple[int, int], bytes] = {}  # (partition, offset) -> value
        self.acks: list[tuple[float, int]] = []  # (time the record was sent, partition)
        self.errors: list[str] = []

    def run(self) -> None:
        producer = confluent_kafka.Producer({
            "bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5, "retry.backoff.ms": 50,
            # librdkafka learns of a new leader from its periodic metadata refresh (the
            # dead leader's address stays valid until the controller fences it), so
            # that interval adds to the failover time a client sees
            "message.timeout.ms": 60000, "topic.metadata.refresh.interval.ms": 500,
        })

        def on_delivery(sent: float, partition: int) -> Any:
            def report(err: Any, msg: Any) -> None:
                with self.lock:
                    if err is not None:
                        self.errors.append(str(err))
                    else:
                        self.acked[(partition, msg.offset())] = msg.value()
                        self.acks.append((sent, partition))
            return report

        n = 0
        while not self.stopping.is_set():
            for partition in range(PARTITIONS):
                producer.produce(TOPIC, b"%d-%d" % (partition, n), partition=partition,
                                 on_delivery=on_delivery(time.monotonic(), partition))
            n += 1
            producer.poll(0.01)
        assert producer.flush(60) == 0

    def finish(self) -> None:
        """Stop producing and wait until everything sent is acknowledged (or failed)."""
        self.stopping.set()
        self.join(90)
        assert not self.is_alive()
        assert self.errors == []

    def check_acked(self, bootstrap: str) -> None:
        """Every acknowledged record is where it was acknowledged, read through ``bootstrap``."""
        for partition in range(PARTITIONS):
            acked = {offset: value for (p, offset), value in self.acked.items() if p == partition}
            got = {r.offset: r.value for r in confluent_consume(bootstrap, TOPIC, max(acked) + 1, partition=partition)}
            assert {offset: got.get(offset) for offset in acked} == acked, f"partition {partition}"

    def wait_writable(self, since: float) -> float:
        """Poll until every partition took a record sent after ``since``; the failover time."""
        deadline = since + 20
        seen: dict[int, float] = {}
        while len(seen) < PARTITIONS:
            assert time.monotonic() < deadline, f"partitions {sorted(set(range(PARTITIONS)) - set(seen))} took no writes"
            with self.lock:
                for sent, partition in self.acks[-2000:]:
                    if sent >= since and partition not in seen:
                        seen[partition] = time.monotonic()
            time.sleep(0.02)
        print(f"writable again after (s, per partition): { {p: round(t - since, 2) for p, t in sorted(seen.items())} }")
        return max(seen.values()) - since


def leaders(cluster: Cluster, node_id: int) -> list[tuple[int, int, list[int]]]:
    """(leader, leader epoch, ISR) of each partition, as ``node_id`` says."""
    return [(p.leader_id, p.leader_epoch, sorted(p.isr_nodes)) for p in cluster.topics(node_id)[TOPIC].partitions]


def start_loaded(cluster: Cluster) -> tuple[int, Writer]:
    """Create the RF 3 topic (each node leads one partition) and start a :class:`Writer`, once it is
    writing to every partition; also returns the controller."""
    controller = eventually(cluster.controller)
    admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3)], operation_timeout=10)[TOPIC].result(15)
    eventually(lambda: TOPIC in cluster.topics(controller)
               and all(isr == [1, 2, 3] for _, _, isr in leaders(cluster, controller)))
    assert sorted(leader for leader, _, _ in leaders(cluster, controller)) == [1, 2, 3]
    writer = Writer(",".join(node.bootstrap for node in cluster.nodes.values()))
    writer.start()
    writer.wait_writable(time.monotonic())
    return controller, writer


def test_kill_leaders_and_the_controller_under_acks_all_load(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        controller, writer = start_loaded(cluster)
        try:
            # kill -9 the leader of a partition, not the controller
            victim = next(i for i in IDS if i != controller)
            cluster.nodes[victim].kill()
            killed_at = time.monotonic()
            first_failover = writer.wait_writable(killed_at)
            print(f"leader {victim} killed: all partitions writable again after {first_failover:.2f} s")
            assert first_failover < FAILOVER_LIMIT
            after = leaders(cluster, controller)
            assert victim not in {leader for leader, _, _ in after}
            assert all(victim not in isr for _, _, isr in after)
            assert sorted(epoch for _, epoch, _ in after) == [0, 0, 1]  # one partition changed leader once
            assert cluster.nodes[controller].wait_for_log(rf"fenced broker {victim}; new leaders for 1 partition")

            # the restarted node catches up and rejoins every ISR, and is listed again
            cluster.nodes[victim].start()
            eventually(lambda: all(isr == [1, 2, 3] for _, _, isr in leaders(cluster, controller)), 20)
            eventually(lambda: len(cluster.metadata(controller).brokers) == 3)

            # kill -9 the controller (which leads a partition too)
            cluster.nodes[controller].kill()
            killed_at = time.monotonic()
            second_failover = writer.wait_writable(killed_at)
            print(f"controller {controller} killed: all partitions writable again after {second_failover:.2f} s")
            assert second_failover < FAILOVER_LIMIT
            survivors = tuple(i for i in IDS if i != controller)
            new_controller = eventually(lambda: (ids := {cluster.metadata(i).controller_id for i in survivors}) and len(ids) == 1
                                        and ids.pop() not in (-1, controller) and cluster.metadata(survivors[0]).controller_id)
            assert new_controller in survivors
            time.sleep(0.5)  # some writes against the new leaders
        finally:
            writer.finish()
        writer.check_acked(cluster.nodes[survivors[0]].bootstrap)
        assert cluster.nodes[victim].wait_for_log(r"follower caught up on failover-\d")
