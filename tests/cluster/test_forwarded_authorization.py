"""The controller authorizes forwarded metadata writes with the client's principal, against its own image.

Three real consensus nodes on loopback sockets (:mod:`.test_node_snapshots`'s
cluster), each feeding a :class:`~chronik.cluster.metadata.ReplicatedMetadataLog`
whose ``authorize`` is the broker's (:func:`~chronik.security.commands.command_check`
over an :class:`~chronik.security.authorizer.Authorizer` reading that node's own
image).  To get a follower whose image is stale on purpose, its committed
entries can be *held*: its consensus node commits them, but they reach its
image only once released -- as when a follower has not applied an ACL change
yet.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from chronik.cluster.node import CommittedEntry, ProposalRefused, Snapshot
from chronik.metadata import CommandRejected, CreateTopic, RegisterBroker
from chronik.metadata.acls import AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType
from chronik.metadata.commands import CreateAcls, DeleteAcls
from chronik.metadata.view import Origin
from chronik.protocol import ErrorCode
from chronik.security.authorizer import Authorizer
from chronik.security.commands import command_check

from .test_node_snapshots import MetadataCluster

ALICE = Origin("User:alice", "10.1.1.1")
ALICE_ELSEWHERE = Origin("User:alice", "10.9.9.9")
MALLORY = Origin("User:mallory", "10.1.1.1")
MAY_CREATE_ORDERS = AclBinding(ResourceType.TOPIC, "orders", PatternType.LITERAL, ALICE.principal, ALICE.host,
                               AclOperation.CREATE, AclPermissionType.ALLOW)
ADMIN_CLUSTER = AclBinding(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, "User:admin", "*",
                           AclOperation.ALTER, AclPermissionType.ALLOW)


class AuthorizingCluster(MetadataCluster):
    """Each node's metadata log authorizes commands with an origin against its own image;
    ``hold`` keeps a node's committed entries from its image until ``release``."""

    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery)
        self.authorizers: dict[int, Authorizer] = {}
        self.held: dict[int, list[CommittedEntry | Snapshot]] = {}
        self.deliver: dict[int, Callable[[CommittedEntry | Snapshot], None]] = {}

    def _on_commit(self, node_id: int) -> Callable[[CommittedEntry | Snapshot], None]:
        deliver = self.deliver[node_id] = super()._on_commit(node_id)
        metadata = self.metadata[node_id]
        authorizer = self.authorizers[node_id] = Authorizer(lambda: metadata.image.security.acls)
        metadata.authorize = command_check(authorizer)

        def on_commit(item: CommittedEntry | Snapshot) -> None:
            if node_id in self.held:
                self.held[node_id].append(item)
            else:
                deliver(item)
        return on_commit

    def hold(self, node_id: int) -> None:
        self.held[node_id] = []

    def release(self, node_id: int) -> None:
        for item in self.held.pop(node_id):
            self.deliver[node_id](item)

    def allows(self, node_id: int, origin: Origin, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
        return self.authorizers[node_id].allowed(origin.principal, origin.host, operation, resource_type, name)


@asynccontextmanager
async def running_cluster() -> AsyncIterator[tuple[AuthorizingCluster, int, int]]:
    """The cluster with every node registered and the ACLs at their start; its leader and a follower."""
    async with trio.open_nursery() as nursery:
        cluster = AuthorizingCluster(nursery)
        await cluster.start_all()
        leader = (await cluster.wait_leader()).node_id
        for i in cluster.ids:
            await cluster.metadata[leader].submit(RegisterBroker(node_id=i, host="127.0.0.1", port=9000 + i))
        await cluster.metadata[leader].submit(CreateAcls(acls=[ADMIN_CLUSTER.to_list(), MAY_CREATE_ORDERS.to_list()]))
        await cluster.wait_same_image()
        yield cluster, leader, next(i for i in cluster.ids if i != leader)
        nursery.cancel_scope.cancel()


def orders(name: str = "orders") -> CreateTopic:
    return CreateTopic(name=name, topic_id=uuid.uuid4().hex, replicas=[[1, 2, 3]])


async def test_a_write_the_follower_allowed_on_a_stale_image_is_refused_by_the_controller() -> None:
    async with running_cluster() as (cluster, leader, follower):
        cluster.hold(follower)  # the follower commits what follows but does not apply it yet
        await cluster.metadata[leader].submit(DeleteAcls(filters=[AclBindingFilter(
            ResourceType.TOPIC, "orders", PatternType.LITERAL).to_list()]))
        assert not cluster.allows(leader, ALICE, AclOperation.CREATE, ResourceType.TOPIC, "orders")
        # the follower's image still has the ACL: its CreateTopics handler would allow alice ...
        assert cluster.allows(follower, ALICE, AclOperation.CREATE, ResourceType.TOPIC, "orders")
        # ... and the controller, which has applied the deletion, refuses the forwarded write
        with pytest.raises(CommandRejected) as refused:
            await cluster.metadata[follower].submit(orders(), ALICE)
        assert refused.value.error == "TOPIC_AUTHORIZATION_FAILED"
        assert "User:alice may not CREATE topic 'orders'" in refused.value.message
        cluster.release(follower)
        image = await cluster.wait_same_image()
        assert image["topics"] == []  # nothing was committed for it


async def test_the_controller_allows_what_its_image_allows_and_matches_the_client_host() -> None:
    async with running_cluster() as (cluster, leader, follower):
        with pytest.raises(CommandRejected) as elsewhere:  # the ACL names alice's host: the host travels too
            await cluster.metadata[follower].submit(orders(), ALICE_ELSEWHERE)
        assert elsewhere.value.error == "TOPIC_AUTHORIZATION_FAILED"
        with pytest.raises(CommandRejected) as mallory:
            await cluster.metadata[follower].submit(orders(), MALLORY)
        assert mallory.value.error == "TOPIC_AUTHORIZATION_FAILED"
        topic = await cluster.metadata[follower].submit(orders(), ALICE)  # forwarded, allowed, committed
        assert topic.name == "orders"
        image = await cluster.wait_same_image()
        assert [t["name"] for t in image["topics"]] == ["orders"]  # type: ignore[index, union-attr]


async def test_cluster_commands_need_alter_on_the_cluster_on_the_controller_too() -> None:
    async with running_cluster() as (cluster, leader, follower):
        grant = AclBinding(ResourceType.TOPIC, "x", PatternType.LITERAL, MALLORY.principal, "*", AclOperation.ALL,
                           AclPermissionType.ALLOW)
        for node in (follower, leader):  # forwarded, and proposed by the controller itself
            with pytest.raises(CommandRejected) as refused:
                await cluster.metadata[node].submit(CreateAcls(acls=[grant.to_list()]), MALLORY)
            assert refused.value.error == "CLUSTER_AUTHORIZATION_FAILED"
        assert await cluster.metadata[follower].submit(CreateAcls(acls=[grant.to_list()]),
                                                       Origin("User:admin", "10.2.2.2")) == [None]
        await cluster.wait_same_image()
        assert cluster.allows(follower, MALLORY, AclOperation.CREATE, ResourceType.TOPIC, "x")


async def test_a_nodes_own_writes_are_not_checked() -> None:
    """No origin: the node writes on its own behalf (registration, ISR, fencing), as only
    nodes reach the replication port; the ACLs allow nobody here but the admin."""
    async with running_cluster() as (cluster, leader, follower):
        await cluster.metadata[follower].submit(RegisterBroker(node_id=follower, host="127.0.0.2", port=9100))
        image = await cluster.wait_same_image()
        assert any(b["host"] == "127.0.0.2" for b in image["brokers"])  # type: ignore[union-attr]


async def test_a_refusal_is_final_not_retried_until_the_timeout() -> None:
    async with running_cluster() as (cluster, leader, follower):
        node = cluster.nodes[follower]
        with trio.fail_after(1.0):  # well under the submit timeout (3 s): answered, not retried
            with pytest.raises(ProposalRefused) as refused:
                await node.submit(b'{"v":1,"type":"create_topic","name":"t","topic_id":"00","replicas":[]}',
                                  timeout=3.0, origin=MALLORY)
        assert refused.value.code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
        with pytest.raises(ProposalRefused) as garbage:  # a payload the controller cannot read is refused too
            await node.submit(b"not a command", timeout=3.0, origin=MALLORY)
        assert garbage.value.code == ErrorCode.INVALID_REQUEST
