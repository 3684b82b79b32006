"""Mutual TLS on the replication port (:mod:`chronik.cluster.tls`), with real sockets on 127.0.0.1.

Every refusal test has a control beside it that sends the same bytes where
they are accepted -- a trusted node, or a plaintext port -- so that "nothing
was delivered" means the refusal did it.  Certificates are made here with
``trustme``; the contexts come from the broker's own
:func:`~chronik.server.security.replication_tls_contexts`.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from chronik.cluster.messages import ForwardRequest, ForwardResponse, Message, VoteRequest
from chronik.cluster.network import TCP, PeerRefused, listener_address
from chronik.cluster.tls import TlsNetwork, TlsStream
from chronik.cluster.transport import ForwardAnswer, RaftTransport, encode_frame
from chronik.config import BrokerConfig
from chronik.metadata.acls import AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType
from chronik.server.security import replication_peer_check, replication_tls_contexts
from chronik.tlsstream import TlsSocketStream

from .simnet import SimNetwork

LOGGER = "chronik.cluster.transport"
NODE_SUBJECT = "User:CN=chronik-node,OU=cluster,O=Example"


@dataclass
class Certs:
    dir: Path
    ca: trustme.CA

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def issue(self, name: str, *identities: str, ca: trustme.CA | None = None, common_name: str | None = None,
              organization_unit_name: str | None = None) -> str:
        """A PEM key store (chain + key) for ``identities``, signed by ``ca`` (default: the cluster's)."""
        cert = (ca or self.ca).issue_cert(*identities, common_name=common_name,
                                          organization_name="Example" if common_name else None,
                                          organization_unit_name=organization_unit_name)
        cert.private_key_and_cert_chain_pem.write_to_path(self.path(name))
        return self.path(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    root = tmp_path_factory.mktemp("replication-tls")
    made = Certs(root, trustme.CA())
    made.ca.cert_pem.write_to_path(made.path("ca.pem"))
    made.issue("node.pem", "127.0.0.1", "localhost", common_name="chronik-node", organization_unit_name="cluster")
    # a Kafka client's certificate, from the same CA
    made.issue("alice.pem", "alice@example.com", common_name="alice", organization_unit_name="clients")
    made.issue("localhost-only.pem", "localhost", common_name="chronik-node", organization_unit_name="cluster")
    rogue = trustme.CA()
    made.issue("rogue.pem", "127.0.0.1", ca=rogue, common_name="chronik-node", organization_unit_name="cluster")
    rogue.cert_pem.write_to_path(made.path("rogue-ca.pem"))
    yield made


def tls_config(certs: Certs, keystore: str = "node.pem", **settings: Any) -> BrokerConfig:
    return BrokerConfig(replication_security_protocol="SSL", ssl_keystore_location=certs.path(keystore),
                        ssl_truststore_location=certs.path("ca.pem"), **settings)


def tls_network(certs: Certs, keystore: str = "node.pem", acls: list[AclBinding] | None = None, inner: Any = TCP,
                **settings: Any) -> TlsNetwork:
    config = tls_config(certs, keystore, **settings)
    server, client = replication_tls_contexts(config)
    return TlsNetwork(inner, server, client, admit=replication_peer_check(config, lambda: acls or []))


class Node:
    """One RaftTransport on 127.0.0.1 and what it delivered."""

    def __init__(self, node_id: int, listener: trio.abc.Listener[trio.abc.Stream]) -> None:
        self.node_id = node_id
        self.listener = listener
        self.address = listener_address(listener)
        self.delivered: list[Message] = []
        self.transport: RaftTransport


async def start_nodes(nursery: trio.Nursery, networks: dict[int, Any], address: str = "127.0.0.1:0") -> dict[int, Node]:
    """One node per ``{id: network}``, each with every other as a peer, serving (listening on
    ``address``, where ``{id}`` is the node's id)."""
    nodes = {i: Node(i, await network.listen(address.format(id=i))) for i, network in networks.items()}
    for i, node in nodes.items():
        node.transport = RaftTransport(i, node.listener, {j: n.address for j, n in nodes.items() if j != i},
                                       node.delivered.append, random.Random(i), network=networks[i])
        await nursery.start(node.transport.run)
    return nodes


async def wait_until(check: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


def vote(src: int, dst: int, term: int = 7) -> VoteRequest:
    return VoteRequest(term, src, dst, 0, 0, pre_vote=False)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and "refused" in r.getMessage()]


async def test_two_nodes_exchange_raft_messages_and_forwards_over_mutual_tls(certs: Certs,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    network = tls_network(certs)
    async with trio.open_nursery() as nursery:
        one, two = (await start_nodes(nursery, {1: network, 2: network})).values()

        async def answer(request: ForwardRequest) -> ForwardAnswer:
            return ForwardAnswer(len(request.payload), 1, 3)

        one.transport.on_forward = answer
        two.transport.send(vote(2, 1))
        one.transport.send(vote(1, 2))
        await wait_until(lambda: one.delivered and two.delivered)
        assert one.delivered == [vote(2, 1)] and two.delivered == [vote(1, 2)]
        forwarded = await two.transport.forward(1, b"create topic x", timeout=5)
        assert (forwarded.offset, forwarded.leader_id, forwarded.term) == (14, 1, 3)
        assert isinstance(forwarded, ForwardResponse)
        assert one.transport.stats.refused == two.transport.stats.refused == 0
        nursery.cancel_scope.cancel()
    assert refusals(caplog) == []


@pytest.mark.parametrize("keystore,truststore,refused_by_acceptor,dialer_says", [
    ("rogue.pem", "ca.pem", "certificate not accepted: self-signed certificate in certificate chain",
     "the peer does not trust this node's certificate (unknown CA)"),  # the acceptor's alert
], ids=["certificate from another CA"])
async def test_a_node_with_a_certificate_from_another_ca_delivers_nothing_either_way(
        certs: Certs, caplog: pytest.LogCaptureFixture, keystore: str, truststore: str, refused_by_acceptor: str,
        dialer_says: str) -> None:
    """The rogue node dials a cluster node (refused by the acceptor) and is dialled by it (the
    dialer refuses its certificate): no message crosses either way, and each side says why."""
    caplog.set_level(logging.INFO, LOGGER)
    rogue_config = BrokerConfig(replication_security_protocol="SSL", ssl_keystore_location=certs.path(keystore),
                                ssl_truststore_location=certs.path(truststore))
    server, client = replication_tls_contexts(rogue_config)
    client.load_verify_locations(certs.path("rogue-ca.pem"))  # it would trust us, too: only our side refuses
    server.load_verify_locations(certs.path("rogue-ca.pem"))
    rogue_network = TlsNetwork(TCP, server, client)
    async with trio.open_nursery() as nursery:
        good, rogue = (await start_nodes(nursery, {1: tls_network(certs), 2: rogue_network})).values()
        for term in range(1, 20):
            rogue.transport.send(vote(2, 1, term))
            good.transport.send(vote(1, 2, term))
            await trio.sleep(0.05)
        await wait_until(lambda: good.transport.stats.refused >= 2)
        assert good.delivered == [] and rogue.delivered == []
        nursery.cancel_scope.cancel()
    lines = refusals(caplog)
    assert any(f"node 1: refused replication connection from 127.0.0.1:" in line and refused_by_acceptor in line
               for line in lines), lines
    assert any(f"node 1: replication connection to peer 2 at {rogue.address} refused: certificate not accepted"
               in line for line in lines), lines
    lost = [r.getMessage() for r in caplog.records if r.name == LOGGER and "node 2" in r.getMessage()]
    assert any(dialer_says in line for line in lost), lost
    # one line per peer and direction a minute, however often it redials
    assert len([line for line in lines if line.startswith("node 1: refused")]) == 1


async def test_one_read_returns_every_record_received_over_tcp(certs: Certs) -> None:
    """Over TCP the stream is a TlsSocketStream: a 1 MiB write (64 TLS records) is read in a few
    receives, not one per record (trio.SSLStream's 16 KiB at most)."""
    async with trio.open_nursery() as nursery:
        network = tls_network(certs)
        listener = await network.listen("127.0.0.1:0")
        accepted: list[trio.abc.Stream] = []
        nursery.start_soon(lambda: _accept_into(listener, accepted))
        dialer = await network.connect(listener_address(listener))
        await wait_until(lambda: accepted)
        (acceptor,) = accepted
        payload = random.Random(5).randbytes(1 << 20)
        sizes: list[int] = []

        async def read() -> None:
            while sum(sizes) < len(payload):
                sizes.append(len(await acceptor.receive_some(1 << 20)))
                await trio.sleep(0.01)  # let records pile up, as behind a busy reader

        async with trio.open_nursery() as inner:
            inner.start_soon(read)
            await dialer.send_all(payload)
        assert max(sizes) > 16 * 1024 and len(sizes) < 64, sizes
        assert isinstance(dialer, TlsStream) and isinstance(dialer._ssl, TlsSocketStream)
        await dialer.aclose()
        assert await acceptor.receive_some() == b""  # close_notify
        await acceptor.aclose()
        await listener.aclose()
        nursery.cancel_scope.cancel()


async def _accept_into(listener: trio.abc.Listener[trio.abc.Stream], accepted: list[trio.abc.Stream]) -> None:
    stream = await listener.accept()
    assert isinstance(stream, TlsStream)
    await stream.handshake()  # the acceptor's side, in this task (as the transport's connection task does)
    accepted.append(stream)


@pytest.mark.parametrize("keystore,delivered", [("sim.pem", True), ("sim-rogue.pem", False)],
                         ids=["a node certificate", "a certificate from another CA"])
async def test_an_in_memory_network_carries_mutual_tls_through_trio_ssl_streams(
        certs: Certs, caplog: pytest.LogCaptureFixture, keystore: str, delivered: bool) -> None:
    """A network without sockets (the simulation's) gets trio.SSLStream: the same handshake, checks
    and refusals; a refused dialer learns it from the connection closing (no alert over memory)."""
    caplog.set_level(logging.INFO, LOGGER)
    certs.issue("sim.pem", "n1", "n2", common_name="chronik-node", organization_unit_name="cluster")
    rogue = trustme.CA()
    certs.issue("sim-rogue.pem", "n2", ca=rogue, common_name="chronik-node", organization_unit_name="cluster")
    sim = SimNetwork(random.Random(3), spike_probability=0)
    rogue_network = tls_network(certs, keystore, inner=sim.node(2))
    rogue_network.client.load_verify_locations(cadata=rogue.cert_pem.bytes().decode())  # it trusts itself
    async with trio.open_nursery() as nursery:
        one, two = (await start_nodes(nursery, {1: tls_network(certs, "sim.pem", inner=sim.node(1)),
                                                2: rogue_network}, "n{id}:9291")).values()
        for term in range(1, 4):
            two.transport.send(vote(2, 1, term))
            await trio.sleep(0.05)
        if delivered:
            await wait_until(lambda: len(one.delivered) == 3)
            assert one.delivered == [vote(2, 1, term) for term in range(1, 4)]
            assert one.transport.stats.refused == two.transport.stats.refused == 0
        else:
            await wait_until(lambda: one.transport.stats.refused >= 1)
            assert one.delivered == []
        nursery.cancel_scope.cancel()
    lines = refusals(caplog)
    if delivered:
        assert lines == []
    else:
        assert any(line.startswith("node 1: refused replication connection from node 2")
                   and "certificate not accepted" in line for line in lines), lines
        lost = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("node 2")]
        assert any("it may not accept this node's certificate" in line for line in lost), lost


def plaintext_dial(address: str, data: bytes) -> bytes:
    """Send ``data`` over a plain TCP socket and read until the peer closes (at most 5 s)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(1 << 16):
                got += chunk
        except ConnectionResetError:
            pass
        return got


@pytest.mark.parametrize("secure", [True, False], ids=["TLS port: refused", "plaintext port: control"])
async def test_plaintext_raft_frames(certs: Certs, caplog: pytest.LogCaptureFixture, secure: bool) -> None:
    """The same raw VoteRequest bytes: delivered on a plaintext port, refused on a TLS one."""
    caplog.set_level(logging.INFO, LOGGER)
    async with trio.open_nursery() as nursery:
        (node,) = (await start_nodes(nursery, {1: tls_network(certs) if secure else TCP})).values()
        frame = encode_frame(vote(9, 1, term=1000))
        if secure:
            answer = await trio.to_thread.run_sync(plaintext_dial, node.address, frame)
            assert answer == b""  # closed without a byte: no Ack, no TLS alert to a non-TLS peer
            assert node.delivered == []
            assert node.transport.stats.refused == 1
        else:
            with trio.fail_after(5):
                stream = await TCP.connect(node.address)
                await stream.send_all(frame)
                await stream.receive_some()  # its Ack
                await stream.aclose()
            assert node.delivered == [vote(9, 1, term=1000)]
        nursery.cancel_scope.cancel()
    lines = refusals(caplog)
    if secure:
        assert len(lines) == 1 and "not TLS (a plaintext peer, or garbage)" in lines[0], lines
    else:
        assert lines == []


async def test_a_tls_node_dialling_a_plaintext_port_is_named_on_both_sides(certs: Certs,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    async with trio.open_nursery() as nursery:
        plain, secure = (await start_nodes(nursery, {1: TCP, 2: tls_network(certs)})).values()
        secure.transport.send(vote(2, 1))
        await wait_until(lambda: plain.transport.stats.refused >= 1 and secure.transport.stats.refused >= 1)
        assert plain.delivered == []
        nursery.cancel_scope.cancel()
    lines = refusals(caplog)
    assert any(line.startswith("node 1: refused replication connection from 127.0.0.1:")
               and "TLS client on the PLAINTEXT replication port" in line for line in lines), lines
    assert any(line.startswith("node 2: replication connection to peer 1") and "during the TLS handshake" in line
               for line in lines), lines


def tls_dial(address: str, certs: Certs, keystore: str | None, data: bytes) -> bytes:
    """A Python ssl client (trusting the cluster CA) with ``keystore`` or no certificate: sends ``data``
    after the handshake, returns what it reads before the peer closes (or raises ssl.SSLError)."""
    context = ssl.create_default_context(cafile=certs.path("ca.pem"))
    if keystore is not None:
        context.load_cert_chain(certs.path(keystore))
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as sock:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(1 << 16):
            got += chunk
            if len(got) >= 4 + 23:  # an Ack frame
                break
        return got


@pytest.mark.parametrize("keystore,refusal", [
    (None, "no certificate presented"),
    ("alice.pem", "User:CN=alice,OU=clients,O=Example is not a node: it may not ClusterAction on the cluster"),
    ("node.pem", None),  # the control: a node's certificate is served
], ids=["no certificate", "a client certificate of the same CA", "a node certificate"])
async def test_injecting_with_a_wrong_or_missing_certificate(certs: Certs, caplog: pytest.LogCaptureFixture,
                                                             keystore: str | None, refusal: str | None) -> None:
    """With an authorizer the trust store is not enough: the certificate's principal must be a
    super user (Kafka's advice for brokers) or hold ClusterAction."""
    caplog.set_level(logging.INFO, LOGGER)
    settings = dict(authorizer_class_name="chronik", super_users=f"{NODE_SUBJECT};User:admin")
    async with trio.open_nursery() as nursery:
        (node,) = (await start_nodes(nursery, {1: tls_network(certs, **settings)})).values()
        frame = encode_frame(vote(9, 1, term=1000))
        try:
            answer = await trio.to_thread.run_sync(tls_dial, node.address, certs, keystore, frame)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            answer = b""
        if refusal is None:
            assert answer[:4] == (len(answer) - 4).to_bytes(4, "big") and node.delivered == [vote(9, 1, term=1000)]
        else:
            assert answer == b"" and node.delivered == []
            await wait_until(lambda: node.transport.stats.refused == 1)
        nursery.cancel_scope.cancel()
    lines = refusals(caplog)
    if refusal is None:
        assert lines == []
    else:
        assert len(lines) == 1 and refusal in lines[0], lines


def test_the_peer_check_follows_super_users_and_cluster_action_acls(certs: Certs) -> None:
    # subjects as ssl's getpeercert() gives them: the certificate's order, most general first
    alice = {"subject": ((("organizationName", "Example"),), (("commonName", "alice"),))}
    node = {"subject": ((("organizationName", "Example"),), (("organizationalUnitName", "cluster"),),
                        (("commonName", "chronik-node"),))}
    open_door = replication_peer_check(tls_config(certs), list)
    assert open_door(alice, "10.0.0.1") is None  # no authorizer: the trust store decides alone
    acls: list[list[AclBinding]] = [[]]  # the image's ACL list: a new list on every change
    check = replication_peer_check(tls_config(certs, authorizer_class_name="chronik", super_users=NODE_SUBJECT),
                                   lambda: acls[0])
    assert check(node, "10.0.0.1") is None
    assert "User:CN=alice,O=Example is not a node" in (check(alice, "10.0.0.1") or "")
    acls[0] = [AclBinding(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, "User:CN=alice,O=Example",
                          "10.0.0.1", AclOperation.CLUSTER_ACTION, AclPermissionType.ALLOW)]
    assert check(alice, "10.0.0.1") is None  # an ACL, replicated like any other, may name a node too
    assert check(alice, "10.0.0.2") is not None  # ... from its host
    rules = replication_peer_check(tls_config(certs, ssl_principal_mapping_rules="RULE:^CN=chronik-(.*?),.*$/$1/"),
                                   list)
    assert "maps to no principal" in (rules(alice, "10.0.0.1") or "")


@pytest.mark.parametrize("algorithm,accepted", [("https", False), ("", True)])
async def test_endpoint_identification_checks_the_dialled_host(certs: Certs, algorithm: str, accepted: bool) -> None:
    """A peer whose certificate names only localhost, dialled as 127.0.0.1."""
    async with trio.open_nursery() as nursery:
        (peer,) = (await start_nodes(nursery, {2: tls_network(certs, "localhost-only.pem")})).values()
        dialer = tls_network(certs, ssl_endpoint_identification_algorithm=algorithm)
        if accepted:
            stream = await dialer.connect(peer.address)
            assert isinstance(stream, TlsStream) and stream.certificate is not None
            await stream.aclose()
        else:
            with pytest.raises(PeerRefused, match="certificate not accepted: IP address mismatch"):
                await dialer.connect(peer.address)
        nursery.cancel_scope.cancel()


async def test_a_peer_that_never_finishes_its_handshake_is_closed(certs: Certs) -> None:
    network = TlsNetwork(TCP, *replication_tls_contexts(tls_config(certs)), handshake_timeout=0.3)
    async with trio.open_nursery() as nursery:
        (node,) = (await start_nodes(nursery, {1: network})).values()
        with trio.fail_after(5):
            stream = await TCP.connect(node.address)
            assert await stream.receive_some() == b""  # sent nothing; closed after the timeout
        await wait_until(lambda: node.transport.stats.refused == 1)
        await stream.aclose()
        nursery.cancel_scope.cancel()


def test_the_contexts_are_mutual_whatever_ssl_client_auth_says(certs: Certs, tmp_path: Path) -> None:
    server, client = replication_tls_contexts(tls_config(certs, ssl_client_auth="none"))
    assert server.verify_mode == client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    config = tls_config(certs, listener_name_replication_ssl_truststore_location=str(other),
                        listener_name_replication_ssl_keystore_location=certs.path("rogue.pem"))
    assert config.replication_keystore == ("listener.name.replication.ssl.keystore.location", certs.path("rogue.pem"))
    assert config.replication_truststore == ("listener.name.replication.ssl.truststore.location", str(other))
    with pytest.raises(ValueError, match="cannot load listener.name.replication.ssl.truststore.location"):
        replication_tls_contexts(tls_config(certs, listener_name_replication_ssl_truststore_location="/nonexistent"))
    with pytest.raises(ValueError, match="the replication port's TLS contexts must both require"):
        TlsNetwork(TCP, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), client)
