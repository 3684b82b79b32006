"""Cluster benchmark: three local ``chronik serve`` nodes (Raft metadata, replicated partitions).

Run:  python bench/cluster.py [--quick] [--messages N] [--workloads a,b,...] [--json out.json]

Starts three nodes on loopback (fresh data directories under ``--data-parent``,
ports chosen by binding port 0 first, every node given every voter with
``--peer``), waits until all of them name the same controller, runs the
workloads and stops the nodes (SIGTERM, then SIGKILL).  Workloads
(``--workloads``, default all; issue 5 and issue 6):

  create       sequential one-topic CreateTopics (raw v5 requests on one
               connection, so the request goes to the node chosen and not
               to the controller librdkafka would pick): against a follower
               and against the controller (metadata.commit=quorum), and on
               one single-node broker for comparison; the same two on a
               cluster started with metadata.commit=leader; then the
               same creates from --create-clients connections at once
               (one thread each, closed loop) to the follower and the
               controller in both modes: the concurrent rate
  produce      batch produce, N x 256 B, linger.ms=5, acks=1 and acks=all,
               to an RF 1 and an RF 3 topic whose leader is the same
               (non-controller) node; the RF 3 / RF 1 acks=all ratio
  inflight     128 single-message requests in flight, acks=all, RF 3,
               closed loop for --seconds
  failover     SIGKILL of a partition leader that is not the controller
               while a producer sends acks=all (one message every 2 ms):
               time from the kill to the first acknowledged message that
               was produced after it; "not available" when no write is
               accepted within --failover-wait and the partition still has
               no live leader
  election     on a fresh 3-node cluster: SIGKILL of the controller, then
               one-topic creates sent to a surviving node until one
               succeeds: time from the kill to that create's answer
               (a new controller elected, registered and committing)

With ``--replication-tls`` the produce, inflight and failover workloads also
run on a second Chronik cluster whose replication port is mutual TLS
(``--replication-security-protocol SSL``, certificates made with ``trustme``),
in the same run, after the plaintext one; the comparison table gives
plaintext / TLS ratios ("Chronik / Chronik, replication mTLS").

Clients, rows, targets and the table are bench/broker.py's (librdkafka
clients in separate processes, warmed up before the clock starts).  A node
that dies unexpectedly fails the running workload, and every node's log tail
is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import broker as single
import peers
from broker import (  # bench/broker.py, next to this script; it puts the repository on sys.path
    COMMON_CLIENT, MESSAGE_BYTES, WARMUP_TOPIC, Row, Target, apply_size_defaults, cpu_seconds, high_watermark_sum, machine_note, print_table,
    run_clients, wait_for_metadata, write_json_report,
)
from stats import percentile_ms  # noqa: E402

from chronik.protocol import decode_response  # noqa: E402
from tests.integration.brokerproc import BrokerProcess  # noqa: E402
from tests.integration.raw import Raw, request_frame  # noqa: E402
from tests.integration.test_cluster import IDS, Cluster  # noqa: E402

WORKLOADS = ("create", "produce", "inflight", "failover", "election")
MTLS = "chronik-mtls"
"""The second Chronik cluster of --replication-tls: mutual TLS on the replication port."""
peers.TITLES.setdefault(MTLS, "Chronik, replication mTLS")
PEER_WORKLOADS = ("produce", "inflight", "failover")  # create and election use Chronik-only set-ups
NOT_AVAILABLE = "not available"


@dataclass
class ClusterRow(Row):
    """A broker.py row whose targets are its own (some depend on another row, e.g. 0.5x the RF 1 rate)."""

    targets: list[Target] = field(default_factory=list)

    def target_fractions(self) -> list[tuple[Target, float | None]]:
        return [(t, t.fraction(self)) for t in self.targets]


CREATE_TARGETS = [Target("p50_ms", False, 3.0, "p50 <= 3 ms"), Target("msgs_per_s", True, 500, ">= 500 topics/s")]


# --------------------------------------------------------------------------------------------
# Nodes


class Nodes:
    """The running nodes; quacks like a BrokerProcess for broker.run_clients: ``proc`` is a dead node's, if any."""

    def __init__(self, nodes: dict[int, BrokerProcess]) -> None:
        self.nodes = nodes
        self.killed: set[int] = set()  # killed on purpose (failover)

    def dead(self) -> list[int]:
        return [i for i, n in self.nodes.items()
                if i not in self.killed and n.proc is not None and n.proc.poll() is not None]

    @property
    def proc(self) -> Any:
        dead = self.dead()
        return self.nodes[dead[0]].proc if dead else next(iter(self.nodes.values())).proc

    def check(self) -> None:
        dead = self.dead()
        if dead:
            raise RuntimeError("node(s) died: " + ", ".join(f"{i} (status {self.nodes[i].proc.returncode})" for i in dead))  # type: ignore[union-attr]

    @property
    def pids(self) -> list[int]:
        return [n.proc.pid for i, n in self.nodes.items() if i not in self.killed and n.proc is not None]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for i, n in self.nodes.items() if i not in self.killed)

    def print_logs(self, lines: int = 30) -> None:
        for i, node in self.nodes.items():
            print(f"---- node {i} log (last {lines} lines) ----\n" + "\n".join(node.log_lines[-lines:]), file=sys.stderr)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc is None:
                continue
            try:
                node.stop(timeout=20)
            except Exception:  # noqa: BLE001 - a node that will not stop is killed
                node.kill()


class PeerCluster(Cluster):
    """Three nodes of a peer broker (bench/peers.py): Cluster's Metadata helpers, KRaft's controller.

    A KRaft broker names a random live broker as controller in Metadata, so the
    controller is the metadata quorum's leader, asked with DescribeQuorum.
    """

    def __init__(self, nodes: dict[int, Any]) -> None:  # noqa: D107 - no Cluster.__init__: the nodes are given
        self.nodes = nodes

    def controller(self, among: tuple[int, ...] = IDS) -> int | None:
        if not all(len(self.metadata(i).brokers) == len(IDS) for i in among):
            return None
        return peers.quorum_leader(self.nodes[among[0]])


def replication_tls_args(root: Path) -> list[str]:
    """Serve arguments for mutual TLS on the replication port, with a CA and a node certificate
    (for 127.0.0.1, shared by the three nodes) made in ``root``."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(root / "node.pem"))
    return ["--replication-security-protocol", "SSL", "--set", f"ssl.keystore.location={root / 'node.pem'}",
            "--set", f"ssl.truststore.location={root / 'ca.pem'}"]


def start_cluster(root: Path, extra: list[str], timeout: float, cluster: Cluster | None = None) -> tuple[Cluster, Nodes, int]:
    """Three started nodes agreeing on a controller (all brokers registered); returns the controller id too.

    ``cluster``: nodes made elsewhere (a peer's), else three Chronik nodes under ``root`` with ``extra`` arguments.
    """
    cluster = cluster or Cluster(root, *extra)
    nodes = Nodes(cluster.nodes)
    try:
        for node in cluster.nodes.values():
            node.start(timeout=30)
        deadline = time.monotonic() + timeout
        while True:
            nodes.check()
            try:
                controller = cluster.controller()
            except OSError:
                controller = None
            if controller is not None:
                return cluster, nodes, controller
            if time.monotonic() > deadline:
                raise TimeoutError(f"the nodes did not agree on a controller within {timeout:.0f} s")
            time.sleep(0.05)
    except BaseException:
        nodes.print_logs()
        nodes.stop()
        raise


def with_cpu(pids: list[int], run: Callable[[], ClusterRow]) -> ClusterRow:
    """``run()``'s row, with the CPU seconds these processes used meanwhile (all nodes together)."""
    before = [cpu_seconds(pid) for pid in pids]
    row = run()
    after = [cpu_seconds(pid) for pid in pids]
    if all(x is not None for x in before + after):
        row.broker_cpu_s = sum(after) - sum(before)  # type: ignore[arg-type]
    return row


def partition_leader(cluster: Cluster, node_id: int, topic: str) -> int:
    return cluster.topics(node_id)[topic].partitions[0].leader_id


# --------------------------------------------------------------------------------------------
# CreateTopics on one connection to one node (librdkafka's AdminClient would go to the controller)


def create_frame(name: str, replicas: list[int] | None, correlation_id: int) -> bytes:
    """CreateTopics v5 for one single-partition topic: RF 1 placed by the broker, or this replica list (leader first)."""
    return request_frame(19, 5, {"topics": [{
        "name": name, "num_partitions": -1 if replicas else 1, "replication_factor": -1 if replicas else 1,
        "assignments": [{"partition_index": 0, "broker_ids": replicas}] if replicas else [], "configs": []}],
        "timeout": 30_000, "validate_only": False}, correlation_id)


def create_on(connection: Raw, name: str, replicas: list[int] | None = None, correlation_id: int = 1) -> None:
    connection.send(create_frame(name, replicas, correlation_id))
    check_created(connection.read_frame(), name)


def check_created(response: bytes | None, name: str) -> None:
    if response is None:
        raise RuntimeError(f"the broker closed the connection while creating {name}")
    result = decode_response(19, 5, response, 5).topics[0]
    if result.error_code != 0:
        raise RuntimeError(f"creating {name}: error {result.error_code} {result.error_message}")


def create_topic(node: BrokerProcess, name: str, replicas: list[int]) -> None:
    with Raw(node, timeout=30) as connection:
        create_on(connection, name, replicas)


def sequential_creates(workload: str, node: BrokerProcess, count: int, targets: list[Target]) -> ClusterRow:
    prefix = f"bench-{uuid.uuid4().hex[:6]}-ct"
    names = [f"{prefix}-{i}" for i in range(count)]
    frames = [create_frame(name, None, i + 2) for i, name in enumerate(names)]
    latencies: list[float] = []
    with Raw(node, timeout=30) as connection:
        create_on(connection, f"{prefix}-warmup")
        started = time.perf_counter()
        for i, frame in enumerate(frames):
            t = time.perf_counter()
            connection.send(frame)
            response = connection.read_frame()
            latencies.append(time.perf_counter() - t)
            check_created(response, names[i])
        seconds = time.perf_counter() - started
    return ClusterRow(workload, msgs_per_s=count / seconds, p50_ms=percentile_ms(latencies, 0.5),
                      p99_ms=percentile_ms(latencies, 0.99), count=count, seconds=seconds, targets=targets)


def concurrent_creates(workload: str, node: BrokerProcess, count: int, clients: int, targets: list[Target]) -> ClusterRow:
    """``count`` one-topic creates from ``clients`` connections at once (a thread each, closed loop)."""
    import threading

    prefix = f"bench-{uuid.uuid4().hex[:6]}-cc"
    shares = [list(range(c, count, clients)) for c in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    ready = threading.Barrier(clients + 1)
    go = threading.Event()

    def client(index: int) -> None:
        try:
            with Raw(node, timeout=30) as connection:
                create_on(connection, f"{prefix}-warmup-{index}")
                ready.wait()
                go.wait()
                for i in shares[index]:
                    t = time.perf_counter()
                    connection.send(create_frame(f"{prefix}-{i}", None, i + 2))
                    response = connection.read_frame()
                    latencies[index].append(time.perf_counter() - t)
                    check_created(response, f"{prefix}-{i}")
        except Exception as exc:  # noqa: BLE001 - reported in the row
            failures.append(f"{type(exc).__name__}: {exc}")
            ready.abort()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for thread in threads:
        thread.start()
    try:
        ready.wait(60)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join(300)
    seconds = time.perf_counter() - started
    if failures:
        return ClusterRow(workload, error=failures[0])
    merged = [x for per_client in latencies for x in per_client]
    return ClusterRow(workload, msgs_per_s=count / seconds, p50_ms=percentile_ms(merged, 0.5),
                      p99_ms=percentile_ms(merged, 0.99), count=count, seconds=seconds, targets=targets,
                      extra={"clients": clients})


def creates_on(nodes: Nodes, cluster: Cluster, controller: int, args: argparse.Namespace, mode: str,
               targets: list[Target]) -> list[ClusterRow]:
    """Sequential then concurrent creates via a follower and via the controller; ``mode`` names the rows."""
    follower = next(i for i in IDS if i != controller)
    rate_only = [t for t in targets if t.metric == "msgs_per_s"]

    def name(*parts: str) -> str:
        return "-".join(p for p in ("create", mode, *parts) if p)

    rows = [with_cpu(nodes.pids, lambda: sequential_creates(name(where), cluster.nodes[node], args.topics, targets))
            for where, node in (("fol", follower), ("ctl", controller))]
    rows += [with_cpu(nodes.pids, lambda: concurrent_creates(name("conc", where), cluster.nodes[node], args.topics,
                                                             args.create_clients, rate_only))
             for where, node in (("fol", follower), ("ctl", controller))]
    return rows


def election(args: argparse.Namespace, root: Path) -> list[ClusterRow]:
    """Kill the controller of a fresh cluster; time until a create sent to a survivor succeeds."""
    cluster, nodes, controller = start_cluster(root / "election", [], args.timeout)
    try:
        survivor = next(i for i in IDS if i != controller)
        create_topic(cluster.nodes[survivor], f"bench-{uuid.uuid4().hex[:6]}-before", [survivor])
        row = ClusterRow("election", targets=[Target("p50_ms", False, 3000.0, "<= 3 s")],
                         extra={"killed_controller": controller, "asked": survivor})
        victim = cluster.nodes[controller]
        assert victim.proc is not None
        nodes.killed.add(controller)
        killed_at = time.monotonic()
        victim.proc.kill()
        victim.proc.wait(10)
        attempts, last_error = 0, ""
        while time.monotonic() - killed_at < args.failover_wait:
            attempts += 1
            try:
                create_topic(cluster.nodes[survivor], f"bench-{uuid.uuid4().hex[:6]}-after", [survivor])
            except (RuntimeError, OSError) as exc:  # NOT_CONTROLLER, a timeout: no controller yet
                last_error = str(exc)
                time.sleep(0.02)
                continue
            row.p50_ms = (time.monotonic() - killed_at) * 1000
            row.count = 1
            row.extra["attempts"] = attempts
            return [row]
        row.error = f"{NOT_AVAILABLE} (no create accepted within {args.failover_wait:.0f} s: {last_error})"
        return [row]
    finally:
        nodes.stop()


# --------------------------------------------------------------------------------------------
# Workloads on the running cluster


class ClusterBench:
    def __init__(self, args: argparse.Namespace, cluster: Cluster, nodes: Nodes, controller: int, root: Path) -> None:
        self.args = args
        self.root = root  # where workloads that start clusters of their own put them
        self.cluster = cluster
        self.nodes = nodes
        self.controller = controller
        self.followers = [i for i in IDS if i != controller]
        self.leader = self.followers[0]  # partition leader for produce/inflight/failover: not the controller
        self.rf3 = [self.leader] + [i for i in IDS if i != self.leader]
        self.run_id = uuid.uuid4().hex[:6]
        create_topic(cluster.nodes[self.leader], WARMUP_TOPIC, self.rf3)  # warms the producers' connection to the leader

    def topic(self, name: str, replicas: list[int]) -> str:
        topic = f"bench-{self.run_id}-{name}"
        create_topic(self.cluster.nodes[self.leader], topic, replicas)
        return topic

    def create(self) -> list[ClusterRow]:
        return creates_on(self.nodes, self.cluster, self.controller, self.args, "", CREATE_TARGETS)

    def election(self) -> list[ClusterRow]:
        return election(self.args, self.root)

    def batch_produce(self, workload: str, replicas: list[int], acks: str, count: int | None = None) -> ClusterRow:
        topic = self.topic(workload, replicas)
        n = count or self.args.messages
        outs = run_clients("batch_produce", [dict(bootstrap=self.nodes.bootstrap, topic=topic, partitions=1, count=n,
                                                  acks=acks, linger_ms=self.args.linger_ms)],
                           self.args.timeout, self.nodes)  # type: ignore[arg-type]
        row = self._throughput_row(workload, outs)
        row.extra["replicas"] = replicas
        deadline = time.monotonic() + 10  # acks=1 on RF 3: the high watermark follows the followers
        while (stored := high_watermark_sum(self.nodes.bootstrap, topic, 1)) != n and time.monotonic() < deadline:
            time.sleep(0.1)
        row.extra["high_watermark"] = stored
        if stored != n and row.error is None:
            row.error = f"{n} messages acknowledged but the high watermark is {stored}"
        return row

    def produce(self) -> list[ClusterRow]:
        rows: dict[tuple[int, str], ClusterRow] = {}
        for rf in (1, 3):
            for acks in ("1", "all"):
                rows[(rf, acks)] = with_cpu(self.nodes.pids, lambda: self.batch_produce(f"rf{rf}-acks{acks}", self.rf3[:rf], acks))
        for acks in ("1", "all"):
            base, rf3 = rows[(1, acks)], rows[(3, acks)]
            if base.msgs_per_s and rf3.msgs_per_s:
                rf3.extra["ratio_to_rf1"] = rf3.msgs_per_s / base.msgs_per_s
                if acks == "all":  # issue 6: RF 3 acks=all >= 0.5x RF 1
                    rf3.targets = [Target("msgs_per_s", True, 0.5 * base.msgs_per_s, ">= 0.5x RF 1 acks=all")]
        return list(rows.values())

    def inflight(self) -> list[ClusterRow]:
        return [with_cpu(self.nodes.pids, self._inflight)]

    def _inflight(self) -> ClusterRow:
        topic = self.topic("rf3-inflight-128", self.rf3)
        outs = run_clients("closed_loop", [dict(bootstrap=self.nodes.bootstrap, topic=topic, in_flight=128,
                                                seconds=self.args.seconds)],
                           self.args.seconds + self.args.timeout, self.nodes)  # type: ignore[arg-type]
        row = self._throughput_row("rf3-inflight-128", outs)
        latencies = outs[0]["latencies"]
        row.p50_ms, row.p99_ms = percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99)
        return row

    def failover(self) -> list[ClusterRow]:
        import confluent_kafka

        topic = self.topic("failover", self.rf3)
        wait = self.args.failover_wait
        producer = confluent_kafka.Producer({
            "bootstrap.servers": self.nodes.bootstrap, **COMMON_CLIENT, "log_level": 2,  # no connection-refused noise
            "acks": "all", "linger.ms": 0,
            "message.timeout.ms": int((wait + 30) * 1000), "retry.backoff.ms": 20, "retry.backoff.max.ms": 100,
            "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100, "topic.metadata.refresh.fast.interval.ms": 50,
        })
        acked_after_kill: list[float] = []  # ack times of messages produced after the kill
        errors: list[str] = []
        state = {"killed_at": None, "acked": 0}

        def on_delivery(sent_at: float, err: Any, msg: Any) -> None:
            if err is not None:
                if len(errors) < 5:
                    errors.append(str(err))
                return
            state["acked"] += 1
            if state["killed_at"] is not None and sent_at > state["killed_at"]:
                acked_after_kill.append(time.monotonic())

        def send_for(seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end and not stop():
                sent_at = time.monotonic()
                producer.produce(topic, b"x" * MESSAGE_BYTES, partition=0,
                                 on_delivery=lambda err, msg, sent_at=sent_at: on_delivery(sent_at, err, msg))
                producer.poll(0.002)

        send_for(2.0)
        if state["acked"] == 0:
            raise RuntimeError(f"no acks=all write accepted before the kill: {errors[:3]}")
        victim = self.cluster.nodes[self.leader]
        assert victim.proc is not None
        self.nodes.killed.add(self.leader)
        killed_at = time.monotonic()
        victim.proc.kill()  # SIGKILL
        victim.proc.wait(10)
        state["killed_at"] = time.monotonic()  # messages produced from here on cannot be acknowledged by the victim
        send_for(wait, lambda: bool(acked_after_kill))
        producer.purge()
        producer.flush(5)
        row = ClusterRow("failover", targets=[Target("p50_ms", False, 3000.0, "<= 3 s")],
                         extra={"killed_leader": self.leader, "controller": self.controller, "wait_s": wait})
        try:
            leader_now = partition_leader(self.cluster, self.controller, topic)
        except Exception as exc:  # noqa: BLE001
            leader_now = None
            row.extra["metadata_error"] = str(exc)
        row.extra["leader_after"] = leader_now
        if acked_after_kill:
            row.p50_ms = (acked_after_kill[0] - killed_at) * 1000
            row.count = 1
            return [row]
        if leader_now in (None, -1, self.leader):
            row.error = f"{NOT_AVAILABLE} (no leader failover yet: after {wait:.0f} s the partition's leader is still {leader_now})"
        else:
            row.error = f"the leader moved to {leader_now} but no write was accepted within {wait:.0f} s: {errors[:2]}"
        return [row]

    def _throughput_row(self, workload: str, outs: list[dict[str, Any]]) -> ClusterRow:
        # broker.Bench's own (it reads no Bench state), as a ClusterRow
        return ClusterRow(**vars(single.Bench._throughput_row(self, workload, outs)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------


def single_node_creates(args: argparse.Namespace, root: Path) -> list[ClusterRow]:
    node = BrokerProcess(root / "single")
    node.start(timeout=30)
    try:
        wait_for_metadata(node.bootstrap, 30, node)
        row = with_cpu([node.proc.pid], lambda: sequential_creates("create-single", node, args.topics, []))  # type: ignore[union-attr]
        row.extra["note"] = "one node, no --peer: comparison, no target"
        return [row]
    except BaseException:
        print("---- single node log (last 30 lines) ----\n" + "\n".join(node.log_lines[-30:]), file=sys.stderr)
        raise
    finally:
        try:
            node.stop(timeout=20)
        except Exception:  # noqa: BLE001
            node.kill()


def leader_mode_creates(args: argparse.Namespace, root: Path) -> list[ClusterRow]:
    cluster, nodes, controller = start_cluster(root / "leader-mode", ["--metadata-commit", "leader"], args.timeout)
    try:
        targets = [Target("p50_ms", False, 2.0, "p50 <= 2 ms"), Target("msgs_per_s", True, 500, ">= 500 topics/s")]
        return creates_on(nodes, cluster, controller, args, "leader", targets)
    finally:
        nodes.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: 300k messages, 5 s loop, 200 topics")
    parser.add_argument("--messages", type=int, help="N per batch produce row (default 1,000,000; 300,000 with --quick)")
    parser.add_argument("--seconds", type=float, help="duration of the in-flight loop (default 10; 5 with --quick)")
    parser.add_argument("--topics", type=int, help="topics per create row (default 1000; 200 with --quick)")
    parser.add_argument("--create-clients", type=int, default=16, help="connections creating at once (concurrent rows)")
    parser.add_argument("--linger-ms", type=float, default=5.0, help="linger.ms of the batch producers")
    parser.add_argument("--failover-wait", type=float, default=10.0, help="how long to wait for a write after the kill")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-workload timeout in seconds")
    parser.add_argument("--data-parent", default=None, help="where the nodes' temporary data dirs go (default: cwd, a real disk)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data directories")
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--peer", default="", metavar="NAMES",
                        help="also run produce, inflight and failover on a 3-node cluster of these peers, started here,"
                             " and print Chronik/peer ratios: kafka (both modes), kafka-default, kafka-durable")
    parser.add_argument("--replication-tls", action="store_true",
                        help="also run produce, inflight and failover on a Chronik cluster with mutual TLS on the "
                             "replication port (same run), and print plaintext / TLS ratios")
    parser.add_argument("--kafka-heap", default="1G", help="-Xmx/-Xms of each Kafka node")
    parser.add_argument("--broker-warmup", type=int, default=0, metavar="N",
                        help="before the timed workloads, produce N messages (RF 3, acks=all) untimed on every cluster")
    args = parser.parse_args(argv)
    apply_size_defaults(parser, args, WORKLOADS, quick_messages=300_000)
    try:
        args.peer = peers.parse_peers(args.peer)
    except ValueError as exc:
        parser.error(str(exc))
    if "tansu" in args.peer:
        parser.error("tansu is not a cluster peer: its memory storage is one node")
    return args


# Comparison with the peers: (workload, Row field, label, higher is better), as broker.COMPARED
COMPARED: list[tuple[str, str, str, bool]] = [
    (f"rf{rf}-acks{acks}", metric, label, higher)
    for rf in (1, 3) for acks in ("1", "all")
    for metric, label, higher in (("msgs_per_s", "msg/s", True), ("cpu_s_per_million", "CPU s/M msg", False))
] + [
    ("rf3-inflight-128", "msgs_per_s", "msg/s", True), ("rf3-inflight-128", "p50_ms", "p50 ms", False),
    ("rf3-inflight-128", "p99_ms", "p99 ms", False), ("rf3-inflight-128", "cpu_s_per_million", "CPU s/M msg", False),
    ("failover", "p50_ms", "kill -> first ack ms", False),
]


def measure(args: argparse.Namespace, name: str, root: Path) -> single.Measured:
    """Run the selected workloads on one 3-node cluster: Chronik's (``name`` "chronik") or a peer's."""
    rows: list[ClusterRow] = []
    failed = False
    nodes: Nodes | None = None

    def record(new_rows: list[ClusterRow]) -> None:
        nonlocal failed
        for row in new_rows:
            row.extra["broker"] = name
            rows.append(row)
            failed |= row.error is not None and not row.error.startswith(NOT_AVAILABLE)
            print(f"  {row.workload}: " + (row.error if row.error else "done"), flush=True)

    def attempt(workload: str, run: Callable[[], list[ClusterRow]]) -> None:
        try:
            if nodes is not None:
                nodes.check()
            record(run())
        except Exception as exc:  # noqa: BLE001 - one failed workload fails its row, not the run
            record([ClusterRow(workload, error=f"{type(exc).__name__}: {exc}")])

    try:
        if name == "chronik":
            print(f"Chronik: 3 nodes on loopback, metadata.commit=quorum, {args.messages:,} x {MESSAGE_BYTES} B", flush=True)
            workloads = WORKLOADS
            if "create" in args.workloads:
                attempt("create-single", lambda: single_node_creates(args, root))
                attempt("create-leader", lambda: leader_mode_creates(args, root))
            cluster, nodes, controller = start_cluster(root / "quorum", [], 60)
        elif name == MTLS:
            print(f"Chronik, mutual TLS on the replication port: 3 nodes on loopback, {args.messages:,} x "
                  f"{MESSAGE_BYTES} B", flush=True)
            workloads = PEER_WORKLOADS  # the rows the plaintext cluster is compared on
            (root / name).mkdir()
            cluster, nodes, controller = start_cluster(root / name, replication_tls_args(root / name), 60)
        else:
            print(f"{peers.TITLES[name]}: 3 nodes on loopback (KRaft, combined broker+controller)", flush=True)
            workloads = PEER_WORKLOADS
            (root / name).mkdir()
            cluster, nodes, controller = start_cluster(
                root / name, [], 120, PeerCluster(peers.peer_nodes(name, root / name, len(IDS), heap=args.kafka_heap)))
        print(f"controller: node {controller}", flush=True)
        bench = ClusterBench(args, cluster, nodes, controller, root)
        if args.broker_warmup > 0:  # untimed, so that a JIT (Kafka's JVMs) is measured warm
            warm = bench.batch_produce("broker-warmup", bench.rf3, "all", args.broker_warmup)
            if warm.error:
                raise RuntimeError(f"broker warm-up: {warm.error}")
        for workload in (w for w in workloads if w in args.workloads):  # failover, election last: they kill nodes
            attempt(workload, getattr(bench, workload))
            if nodes.dead():
                print("a node died; skipping the remaining workloads", file=sys.stderr)
                break
    except Exception as exc:  # noqa: BLE001
        print(f"benchmark of {name} aborted: {type(exc).__name__}: {exc}", file=sys.stderr)
        failed = True
    finally:
        if nodes is not None:
            if failed or nodes.dead():
                nodes.print_logs()
            nodes.stop()
    return single.Measured(name, rows, failed)  # type: ignore[arg-type]


def print_rows(rows: list[Row]) -> None:
    print_table([r for r in rows if not (r.error or "").startswith(NOT_AVAILABLE)])
    for row in rows:
        if (row.error or "").startswith(NOT_AVAILABLE):
            print(f"{row.workload:<17}  {row.error}")
    for row in rows:
        if "ratio_to_rf1" in row.extra:
            print(f"{row.workload}: {row.extra['ratio_to_rf1']:.2f}x the RF 1 rate with the same acks"
                  + (" (issue 6 target: >= 0.5x)" if row.workload.endswith("all") else ""))


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def tls_cost_lines(results: list[single.Measured]) -> list[str]:
    """Per workload: the TLS cluster's figure over the plaintext one's (same run), for msg/s, CPU and p99."""
    by_name = {m.broker: {r.workload: r for r in m.rows} for m in results}
    if MTLS not in by_name:
        return []
    lines = ["replication mTLS / plaintext, same run:"]
    for workload, tls_row in by_name[MTLS].items():
        plain_row = by_name["chronik"].get(workload)
        if plain_row is None or tls_row.error or plain_row.error:
            continue
        parts = []
        for metric, label in (("msgs_per_s", "msg/s"), ("cpu_s_per_million", "CPU s/M msg"), ("p99_ms", "p99 ms"),
                              ("p50_ms", "p50 ms")):
            a, b = getattr(tls_row, metric, None), getattr(plain_row, metric, None)
            if a is not None and b and a == a and b == b:
                parts.append(f"{label} {_figure(a)} / {_figure(b)} = {a / b:.2f}x")
        if parts:
            lines.append(f"  {workload}: " + "; ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["chronik", *([MTLS] if args.replication_tls else []), *args.peer]
    try:
        single.check_peers(names)
    except peers.PeerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_before = machine_note()
    print(f"load average {load_before['loadavg']}, {load_before['cpus']} cpus", flush=True)
    root = Path(tempfile.mkdtemp(prefix="chronik-bench-cluster-", dir=args.data_parent or os.getcwd()))
    try:
        results = [measure(args, name, root) for name in names]
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
    for result in results:
        print()
        if len(results) > 1:
            print(f"## {peers.TITLES[result.broker]}")
        print_rows(result.rows)
    print("create-*: topics/s in the msg/s column; failover: time from the kill to the first accepted write in p50 ms;"
          " broker CPU: all live nodes together")
    load_after = machine_note()
    print(f"load average before {load_before['loadavg']}, after {load_after['loadavg']}; {load_after['cpus']} cpus")
    if len(results) > 1:
        print()
        print("\n".join(single.comparison_lines(results, COMPARED)))
        print("Chronik / peer: Chronik's figure divided by the peer's, same run, same clients;"
              " 'better' says which direction is better for Chronik.")
    cost = tls_cost_lines(results)
    if cost:
        print()
        print("\n".join(cost))
    if args.json:
        write_json_report(args.json, {
            "nodes": len(IDS), "metadata_commit": "quorum", "peers": args.peer, "replication_tls": args.replication_tls,
            "messages": args.messages,
            "message_bytes": MESSAGE_BYTES, "seconds": args.seconds, "topics": args.topics,
            "machine_before": load_before, "machine_after": load_after,
            "comparison_markdown": single.comparison_lines(results, COMPARED) if len(results) > 1 else None,
            "replication_tls_cost": cost or None,
        }, [row for r in results for row in r.rows])
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
