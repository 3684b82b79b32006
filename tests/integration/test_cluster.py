"""Cluster mode: three real ``python -m chronik serve`` nodes on loopback agree on metadata.

Each node gets every voter either with ``--peer`` flags or, as operators
write it, from a ``nodeN.toml`` file given with ``--config`` alone (ports
chosen by binding port 0 first).  Metadata is read from one node at a time with raw Metadata
requests, so "visible on every node" means exactly that.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from chronik.cluster.node import ELECTION_TIMEOUT
from chronik.protocol import decode_response

from .brokerproc import BrokerProcess, free_ports
from .clients import Sent, confluent_consume, confluent_produce
from .raw import Raw, request_frame

IDS = (1, 2, 3)
T0 = 1_700_000_000_000


def node_toml(node_id: int, data_dir: Path, kafka: dict[int, int], replication: dict[int, int]) -> str:
    """One node's config file, keys exactly as the README documents them."""
    lines = [f"node_id = {node_id}", f'data_dir = "{data_dir}"', "",
             "[listeners]", f'kafka = "127.0.0.1:{kafka[node_id]}"',
             f'replication = "127.0.0.1:{replication[node_id]}"', ""]
    for peer in sorted(kafka):
        lines += ["[[peers]]", f"id = {peer}", f'kafka = "127.0.0.1:{kafka[peer]}"',
                  f'replication = "127.0.0.1:{replication[peer]}"', ""]
    return "\n".join(lines)


class Cluster:
    def __init__(self, root: Path, *extra_args: str, racks: dict[int, str] | None = None,
                 config_files: bool = False) -> None:
        ports = free_ports(2 * len(IDS))
        kafka, replication = dict(zip(IDS, ports)), dict(zip(IDS, ports[len(IDS):]))
        self.replication = {i: f"127.0.0.1:{port}" for i, port in replication.items()}
        """Each node's replication (Raft) address."""
        self.nodes = {i: self._node(root, i, kafka, replication, extra_args, racks, config_files) for i in IDS}

    @staticmethod
    def _node(root: Path, i: int, kafka: dict[int, int], replication: dict[int, int], extra_args: tuple[str, ...],
              racks: dict[int, str] | None, config_files: bool) -> BrokerProcess:
        rack = ["--rack", racks[i]] if racks else []
        if config_files:
            config = root / f"node{i}.toml"
            config.write_text(node_toml(i, root / f"node{i}", kafka, replication))
            return BrokerProcess(root / f"node{i}", *extra_args, *rack, port=kafka[i], config=config)
        peers = [f"--peer={p}@127.0.0.1:{kafka[p]}/127.0.0.1:{replication[p]}" for p in IDS]
        return BrokerProcess(root / f"node{i}", "--node-id", str(i), "--replication-listen",
                             f"127.0.0.1:{replication[i]}", *peers, *extra_args, *rack, port=kafka[i])

    def metadata(self, node_id: int) -> Any:
        """A Metadata v12 answer (all topics) from this node alone."""
        return node_metadata(self.nodes[node_id])

    def controller(self, among: tuple[int, ...] = IDS) -> int | None:
        """The controller every node in ``among`` names, once all have registered brokers; else None."""
        answers = [self.metadata(i) for i in among]
        ids = {a.controller_id for a in answers}
        if len(ids) == 1 and -1 not in ids and all(len(a.brokers) == len(IDS) for a in answers):
            return ids.pop()
        return None

    def topics(self, node_id: int) -> dict[str, Any]:
        return {t.name: t for t in self.metadata(node_id).topics}


def node_metadata(node: BrokerProcess) -> Any:
    """A Metadata v12 answer (all topics) from ``node`` alone."""
    with Raw(node) as connection:
        connection.send(request_frame(3, 12, {"topics": None, "allow_auto_topic_creation": False,
                                              "include_topic_authorized_operations": False}))
        frame = connection.read_frame()
    assert frame is not None
    return decode_response(3, 12, frame, 5)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def running_cluster(root: Path, *extra_args: str, racks: dict[int, str] | None = None,
                    config_files: bool = False) -> Iterator[Cluster]:
    """Three started nodes (``extra_args`` go to each); stopped on exit, whose logs must hold no traceback."""
    with running(Cluster(root, *extra_args, racks=racks, config_files=config_files)) as cluster:
        yield cluster


@contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    """``cluster``'s nodes started; stopped on exit (:func:`stop_all`), whose logs must hold no traceback."""
    try:
        for node in cluster.nodes.values():
            node.start()
        yield cluster
    finally:
        stop_all(cluster)
        for node in cluster.nodes.values():
            assert "Traceback" not in node.output(), node.output()


#: How long :func:`stop_all` waits for the nodes left to see a stopped node fenced (a broker session timeout,
#: 1 s by default, and a commit) before it goes on regardless: at most a controlled shutdown's timeout.
FENCED_WAIT = 5.0


def stop_all(cluster: Cluster) -> None:
    """Stop every running node cleanly (SIGTERM, each waited for), in an order that lets each controlled
    shutdown end at once instead of after its 5 s timeout (``CONTROLLED_SHUTDOWN_SECONDS``).

    A node leading a partition with another in-sync replica asks the controller to move the leadership,
    which needs a quorum (two of three nodes); the last node left would ask to hand over to a dead but
    unfenced node, which nothing can commit any more, and waits out the timeout; a node stopping right
    after the controller waits for an election.  So: of three, first a node that hands something over
    (its command fences it at once), a follower before the controller; the next stop waits until the two
    left see the first fenced (a node that handed nothing over: once its broker session timed out), so
    that no node is left to hand over to a dead one; of the last two, the one that hands something over
    stops first (on a tie, the controller).  The waits are bounded: an unexpected state costs at most
    about the timeouts it would have cost anyway."""
    running_ids = [i for i, node in cluster.nodes.items() if node.proc is not None and node.proc.poll() is None]

    def view(node_id: int) -> Any:
        try:
            return node_metadata(cluster.nodes[node_id])  # (``cluster`` may be anything with ``nodes``)
        except (OSError, AssertionError):
            return None

    def fenced_everywhere(gone: set[int]) -> bool:
        views = [view(i) for i in running_ids]
        return all(v is not None and not gone & {b.node_id for b in v.brokers} for v in views)

    def hands_over(node_id: int, answer: Any) -> bool:
        return answer is not None and any(p.leader_id == node_id and len(p.isr_nodes) > 1
                                          for t in answer.topics for p in t.partitions)

    while running_ids:
        gone = set(cluster.nodes) - set(running_ids)
        if len(running_ids) == 2 and gone:  # the dead must be fenced while two nodes can still commit it
            deadline = time.monotonic() + FENCED_WAIT
            while not fenced_everywhere(gone) and time.monotonic() < deadline:
                time.sleep(0.05)
        views = {i: view(i) for i in running_ids}
        controllers = {v.controller_id for v in views.values() if v is not None}

        def order(node_id: int) -> tuple[bool, bool, int]:
            if len(running_ids) > 2:  # a follower keeps the controller for the next stop's command (no election)
                return not hands_over(node_id, views[node_id]), node_id in controllers, node_id
            # of two, a tie (ACLs can hide topics from these views) goes to the controller
            return not hands_over(node_id, views[node_id]), node_id not in controllers, node_id

        first = min(running_ids, key=order)
        cluster.nodes[first].stop()
        running_ids.remove(first)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes started from TOML config files."""
    with running_cluster(tmp_path, config_files=True) as started:
        yield started


def create(node: BrokerProcess, name: str, partitions: int, replication_factor: int) -> None:
    admin = AdminClient({"bootstrap.servers": node.bootstrap})
    admin.create_topics([NewTopic(name, partitions, replication_factor)], operation_timeout=10)[name].result(15)


def test_three_nodes_agree_forward_writes_and_serve_clients(cluster: Cluster) -> None:
    controller = eventually(cluster.controller)
    assert len({cluster.metadata(i).cluster_id for i in IDS}) == 1
    assert cluster.nodes[controller].wait_for_log(r"became controller \(epoch \d+\)")
    follower = next(i for i in IDS if i != controller)
    assert cluster.nodes[follower].wait_for_log(rf"follower of {controller}")

    create(cluster.nodes[follower], "spread", 3, 1)
    for i in IDS:
        topic = eventually(lambda: cluster.topics(i).get("spread"), 2.0)
        assert sorted(p.leader_id for p in topic.partitions) == [1, 2, 3]  # one partition led by each node
    assert cluster.nodes[controller].wait_for_log("committed metadata offset")

    # RF 3 is placed over the three brokers; RF 4 cannot be.
    create(cluster.nodes[follower], "wide", 1, 3)
    assert sorted(cluster.topics(controller)["wide"].partitions[0].replica_nodes) == [1, 2, 3]
    with pytest.raises(Exception, match="INVALID_REPLICATION_FACTOR"):
        create(cluster.nodes[follower], "too-wide", 1, 4)

    # Clients follow partition leaders: produce and read back every partition through one node.
    bootstrap = cluster.nodes[follower].bootstrap
    for partition in range(3):
        records = [Sent(None, b"p%d-%d" % (partition, n), [], T0 + n) for n in range(5)]
        assert confluent_produce(bootstrap, "spread", records, partition=partition) == list(range(5))
        got = confluent_consume(bootstrap, "spread", 5, partition=partition)
        assert [r.value for r in got] == [r.value for r in records]

    # A node that does not lead a partition says so (clients then go to the leader).
    led_elsewhere = next(p for p, meta in enumerate(cluster.topics(follower)["spread"].partitions) if meta.leader_id != follower)
    from .raw import produce_frame

    with Raw(cluster.nodes[follower]) as connection:
        connection.send(produce_frame("spread", led_elsewhere, b"x"))
        frame = connection.read_frame()
    assert frame is not None
    answer = decode_response(0, 9, frame, 5)
    assert answer.responses[0].partition_responses[0].error_code == 6  # NOT_LEADER_OR_FOLLOWER


def test_controller_failover_and_restarted_node_catches_up(cluster: Cluster) -> None:
    old = eventually(cluster.controller)
    create(cluster.nodes[old], "before", 1, 1)
    cluster.nodes[old].kill()
    killed_at = time.monotonic()
    survivors = tuple(i for i in IDS if i != old)

    def new_controller() -> int | None:
        ids = {cluster.metadata(i).controller_id for i in survivors}
        return ids.pop() if len(ids) == 1 and ids != {-1} and ids != {old} else None

    new = eventually(new_controller, 5.0)
    assert time.monotonic() - killed_at < 3.0
    follower = next(i for i in survivors if i != new)
    create(cluster.nodes[follower], "after", 2, 1)
    for i in survivors:
        eventually(lambda: "after" in cluster.topics(i), 2.0)

    cluster.nodes[old].start()
    eventually(lambda: {"before", "after"} <= set(cluster.topics(old)), 10.0)
    assert eventually(lambda: cluster.metadata(old).controller_id == new, 5.0)


def test_leader_commit_mode_and_rack_aware_placement(tmp_path: Path) -> None:
    racks = {1: "a", 2: "b", 3: "c"}
    with running_cluster(tmp_path, "--metadata-commit", "leader", racks=racks) as cluster:
        controller = eventually(cluster.controller)
        follower = next(i for i in IDS if i != controller)
        assert {b.node_id: b.rack for b in cluster.metadata(follower).brokers} == racks
        create(cluster.nodes[controller], "fast", 3, 3)  # answered after the controller's fsync
        create(cluster.nodes[follower], "forwarded", 2, 2)  # forwarded: the same early answer
        for i in IDS:
            fast = eventually(lambda: cluster.topics(i).get("fast"), 2.0)
            assert sorted(p.leader_id for p in fast.partitions) == [1, 2, 3]
            assert all({racks[r] for r in p.replica_nodes} == {"a", "b", "c"} for p in fast.partitions)
            forwarded = eventually(lambda: cluster.topics(i).get("forwarded"), 2.0)
            assert all(len({racks[r] for r in p.replica_nodes}) == 2 for p in forwarded.partitions)


_SNAPSHOT_TAKEN = re.compile(r"snapshot taken at offset (\d+)")
_RECOVERED = re.compile(r"node \d+: recovered epoch \d+, vote \S+, (\d+) log entries")
_LOADED = re.compile(r"node \d+: snapshot loaded at offset (\d+)")
_INSTALLED = re.compile(r"node \d+: installed snapshot at (\d+) from leader")


def test_a_node_dead_while_the_others_compact_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    """Snapshots every 3 metadata commands: the others compact their Raft logs past the dead
    node's end, so it catches up from the controller's snapshot, then restarts from its own.

    A leader sends its snapshot only to a follower that needs entries it no longer has, so
    two things must hold when the node comes back, or it catches up from the log instead
    (which is just as correct):

    * the leader's log starts above the dead node's end: six commands are applied while
      it is dead, and each live node (whichever leads) logs two snapshots after the kill --
      before it only the three registrations and ``before`` were applied, too few for two
      snapshots, so the second covers a command the dead node never saw (checked again from
      the node's recovery lines once it is back);
    * no append the leader pushed to the dead node before compacting (those carry exactly
      the entries it lacks) is still waiting in the leader's queue for it: a queued message
      older than an election timeout is dropped when the connection comes back (see
      :mod:`chronik.cluster.transport`), so the node stays dead for that long.
    """
    with running_cluster(tmp_path, "--metadata-snapshot-every", "3") as cluster:
        controller = eventually(cluster.controller)
        dead = next(i for i in IDS if i != controller)
        alive = [i for i in IDS if i != dead]

        def snapshots(node_id: int) -> list[int]:
            return [int(x) for x in _SNAPSHOT_TAKEN.findall(cluster.nodes[node_id].output())]

        create(cluster.nodes[controller], "before", 1, 1)
        eventually(lambda: "before" in cluster.topics(dead), 5.0)
        taken_before = {i: len(snapshots(i)) for i in alive}
        cluster.nodes[dead].kill()
        for n in range(6):
            create(cluster.nodes[alive[0]], f"while-dead-{n}", 1, 1)
        appends_expire = time.monotonic() + ELECTION_TIMEOUT  # each append carrying them was queued by now
        eventually(lambda: all(len(snapshots(i)) >= taken_before[i] + 2 for i in alive), 10.0)
        compacted_to = min(snapshots(i)[-1] + 1 for i in alive)
        time.sleep(max(0.0, appends_expire - time.monotonic()) + 0.2)

        node = cluster.nodes[dead]
        first = len(node.log_lines)
        node.start()
        expected = {"before", *(f"while-dead-{n}" for n in range(6))}
        eventually(lambda: expected <= set(cluster.topics(dead)), 15.0)
        restarted = "\n".join(node.log_lines[first:])
        loaded, recovered = _LOADED.search(restarted), _RECOVERED.search(restarted)
        assert recovered is not None, restarted
        dead_end = (int(loaded.group(1)) + 1 if loaded else 0) + int(recovered.group(1))  # its log's end
        assert dead_end < compacted_to, f"the dead node's log ends at {dead_end}, the live nodes' snapshots " \
                                        f"only at {compacted_to}: they did not compact past it"
        installed = _INSTALLED.search(restarted)
        assert installed is not None, restarted
        assert int(installed.group(1)) >= compacted_to - 1

        second = len(node.log_lines)
        node.stop()
        node.start()
        eventually(lambda: expected <= set(cluster.topics(dead)), 15.0)
        loaded = _LOADED.search("\n".join(node.log_lines[second:]))
        assert loaded is not None and int(loaded.group(1)) >= int(installed.group(1))
