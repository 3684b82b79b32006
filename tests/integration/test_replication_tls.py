"""Cluster mode with mutual TLS on the replication port: three real ``python -m chronik serve`` nodes.

With ``--replication-security-protocol SSL`` every Raft message, forwarded
write and partition fetch between nodes is TLS, each side presenting a
certificate the other verifies (certificates made here with ``trustme``).
The cluster replicates and fails over as in ``test_replication.py``; a node
whose certificate comes from another CA, or that speaks plaintext, never
joins; raw connections with a wrong certificate or none inject nothing.
Every refusal is one log line on the refusing node, which keeps serving.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from confluent_kafka.admin import AdminClient, NewTopic

from chronik.cluster.messages import VoteRequest
from chronik.cluster.transport import encode_frame

from .clients import Sent, confluent_consume, confluent_produce
from .test_cluster import IDS, T0, Cluster, eventually, running, stop_all
from .test_replication import isr, stored_batches

NODE_PRINCIPAL = "User:CN=chronik-node,OU=cluster,O=Example"


@dataclass
class Certs:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    root = tmp_path_factory.mktemp("cluster-tls")
    ca, rogue = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    for name, issuer, identities, cn, ou in (
            ("node.pem", ca, ("127.0.0.1", "localhost"), "chronik-node", "cluster"),
            ("alice.pem", ca, ("alice@example.com",), "alice", "clients"),  # a client's certificate, same CA
            ("rogue.pem", rogue, ("127.0.0.1", "localhost"), "chronik-node", "cluster")):
        issuer.issue_cert(*identities, common_name=cn, organization_name="Example", organization_unit_name=ou) \
            .private_key_and_cert_chain_pem.write_to_path(str(root / name))
    (root / "both-cas.pem").write_bytes(ca.cert_pem.bytes() + rogue.cert_pem.bytes())
    return Certs(root)


def tls_args(certs: Certs, keystore: str = "node.pem", truststore: str = "ca.pem") -> list[str]:
    return ["--replication-security-protocol", "SSL", "--set", f"ssl.keystore.location={certs.path(keystore)}",
            "--set", f"ssl.truststore.location={certs.path(truststore)}"]


def create(cluster: Cluster, node_id: int, topic: str, replicas: int) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.nodes[node_id].bootstrap})
    admin.create_topics([NewTopic(topic, 1, replicas)], operation_timeout=10)[topic].result(15)


def refusals(cluster: Cluster, node_id: int) -> list[str]:
    return [line for line in cluster.nodes[node_id].log_lines if "refused replication connection" in line]


def inject(port: int, context: ssl.SSLContext | None) -> bytes:
    """A VoteRequest for a far-future term, sent to a replication port over plain TCP (no context)
    or TLS; what came back before the node closed the connection."""
    frame = encode_frame(VoteRequest(1 << 40, 9, 1, 1 << 40, 1 << 40, pre_vote=False))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            if context is None:
                raw.sendall(frame)
                return raw.recv(1 << 16)
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(frame)
                return sock.recv(1 << 16)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b""


def client_context(certs: Certs, keystore: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.path("both-cas.pem"))
    if keystore is not None:
        context.load_cert_chain(certs.path(keystore))
    return context


def replication_port(cluster: Cluster, node_id: int) -> int:
    args = cluster.nodes[node_id].extra_args
    return int(args[args.index("--replication-listen") + 1].rsplit(":", 1)[1])


def test_three_nodes_replicate_and_fail_over_over_mutual_tls(tmp_path: Path, certs: Certs) -> None:
    """An authorizer is on, so a peer must also be a node: the nodes' principal is a super user
    (User:ANONYMOUS too, for this test's PLAINTEXT clients); a client certificate of the same CA
    is refused on the replication port."""
    authorizer = ["--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                  "--set", f"super.users={NODE_PRINCIPAL};User:ANONYMOUS", "--set", "replica.lag.time.max.ms=1500"]
    with running(Cluster(tmp_path, *tls_args(certs), *authorizer)) as cluster:
        controller = eventually(cluster.controller, 30)
        for i in IDS:
            assert cluster.nodes[i].wait_for_log(r"replication port: mutual TLS \(certificate .*node\.pem.*peer host "
                                                 r"names checked, peers must be super users or allowed ClusterAction\)")
        create(cluster, controller, "r", 3)
        leader = eventually(lambda: cluster.topics(controller).get("r")).partitions[0].leader_id
        eventually(lambda: isr(cluster, leader, "r") == [1, 2, 3])
        first = [Sent(b"k%d" % n, b"v%d" % n, [], T0 + n) for n in range(20)]
        assert confluent_produce(cluster.nodes[leader].bootstrap, "r", first, acks="all") == list(range(20))

        # a client certificate from the cluster's own CA is not a node: refused, nothing delivered
        alice = inject(replication_port(cluster, leader), client_context(certs, "alice.pem"))
        assert alice == b""
        line = cluster.nodes[leader].wait_for_log(r"refused replication connection from 127\.0\.0\.1:\d+: "
                                                  r"User:CN=alice,OU=clients,O=Example is not a node")
        assert "list the nodes' principals in super.users" in line

        # kill -9 the partition leader: a survivor takes over, over TLS
        cluster.nodes[leader].kill()
        survivors = [i for i in IDS if i != leader]

        def new_leader() -> int | None:
            try:
                found = cluster.topics(survivors[0])["r"].partitions[0].leader_id
            except (OSError, KeyError, IndexError):  # a node catching up answers without the partitions
                return None
            return found if found in survivors else None

        successor = eventually(new_leader, 15)
        second = [Sent(None, b"w%d" % n, [], T0 + n) for n in range(10)]
        assert confluent_produce(cluster.nodes[successor].bootstrap, "r", second, acks="all") == list(range(20, 30))
        got = confluent_consume(cluster.nodes[successor].bootstrap, "r", 30)
        assert [r.value for r in got] == [r.value for r in first + second]

        # the killed node comes back, catches up over TLS and rejoins the ISR
        cluster.nodes[leader].start()
        eventually(lambda: isr(cluster, successor, "r") == [1, 2, 3], 20)
        assert cluster.nodes[leader].wait_for_log(r"follower caught up on r-0")
        topic_id = cluster.topics(successor)["r"].topic_id.hex
        assert all(not refusals(cluster, i) for i in survivors)  # the nodes never refused each other
        assert all("User:CN=alice" in line for line in refusals(cluster, leader))
        stop_all(cluster)

    replicas = {i: stored_batches(tmp_path / f"node{i}", "r", topic_id) for i in IDS}
    assert replicas[1] == replicas[2] == replicas[3] and b"w9" in b"".join(replicas[1])


@pytest.mark.parametrize("intruder", ["another CA", "plaintext"])
def test_a_node_without_a_trusted_certificate_cannot_join_or_inject(tmp_path: Path, certs: Certs,
                                                                    intruder: str) -> None:
    """Node 3 has a certificate from another CA (and trusts both CAs), or no TLS at all. Nodes 1
    and 2 form the cluster without it; node 3 never learns a controller nor registers; raw
    connections to node 1's replication port with the wrong certificate, none, or plaintext
    deliver nothing; every node keeps running."""
    cluster = Cluster(tmp_path, *tls_args(certs))
    node3 = cluster.nodes[3]
    node3.extra_args = [a for a in node3.extra_args if a not in tls_args(certs)]  # its own settings below
    if intruder == "another CA":
        node3.extra_args += tls_args(certs, "rogue.pem", "both-cas.pem")
    with running(cluster):
        def formed() -> int | None:
            answers = [cluster.metadata(i) for i in (1, 2)]
            ids = {a.controller_id for a in answers}
            if len(ids) == 1 and ids <= {1, 2} and all(sorted(b.node_id for b in a.brokers) == [1, 2] for a in answers):
                return ids.pop()
            return None

        controller = eventually(formed, 30)
        expected = "certificate not accepted" if intruder == "another CA" else "not TLS (a plaintext peer, or garbage)"
        assert cluster.nodes[1].wait_for_log(rf"node 1: refused replication connection from 127\.0\.0\.1:\d+: {re.escape(expected)}")
        if intruder == "plaintext":  # the intruder's own log names the mismatch too
            assert node3.wait_for_log(r"refused replication connection from .*: TLS client on the PLAINTEXT "
                                      r"replication port")
        else:
            # the acceptor's TLS alert tells the intruder why (not just a closed connection)
            assert node3.wait_for_log(r"replication connection to peer \d lost \(the peer does not trust this "
                                      r"node's certificate \(unknown CA\)")

        port = replication_port(cluster, 1)
        for context in (client_context(certs, "rogue.pem"), client_context(certs, None), None):
            assert inject(port, context) == b""  # closed: no Ack, no answer
        time.sleep(1.0)  # what an election would take, had a vote got through
        assert formed() == controller
        create(cluster, controller, "two-of-three", 2)  # the two trusted nodes still agree and serve
        assert eventually(lambda: "two-of-three" in cluster.topics(1) and "two-of-three" in cluster.topics(2))
        alone = cluster.metadata(3)  # node 3 knows no controller, no other broker, no topic
        assert alone.controller_id == -1 and [b.node_id for b in alone.brokers] == [3] and not alone.topics
        lines = refusals(cluster, 1)
        assert any("no certificate presented" in line for line in lines), lines
        assert any("not TLS" in line for line in lines), lines
        # one line per peer host and reason a minute, however often node 3 redials
        assert len(lines) <= 3, lines
        assert all(node.proc is not None and node.proc.poll() is None for node in cluster.nodes.values())


@pytest.mark.parametrize("settings,message", [
    (["--set", "listener.name.replication.ssl.keystore.location=/nonexistent/node.pem"],
     "cannot load listener.name.replication.ssl.keystore.location /nonexistent/node.pem"),
    (["--set", "ssl.truststore.location=/nonexistent/ca.pem"], "cannot load ssl.truststore.location /nonexistent/ca.pem"),
    ([], "the SSL replication port needs a key store"),
])
def test_unusable_replication_tls_settings_stop_start_up_with_one_line(tmp_path: Path, certs: Certs,
                                                                        settings: list[str], message: str) -> None:
    from .brokerproc import one_line_error, serve

    stores = ["--set", f"ssl.keystore.location={certs.path('node.pem')}",
              "--set", f"ssl.truststore.location={certs.path('ca.pem')}"] if settings else []
    done = serve("--data-dir", str(tmp_path / "data"), "--node-id", "1", "--replication-security-protocol", "SSL",
                 "--peer", "1@127.0.0.1:1/127.0.0.1:2", "--peer", "2@127.0.0.1:3/127.0.0.1:4", *stores, *settings)
    assert message in one_line_error(done)
