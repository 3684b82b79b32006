"""ACLs with real clients (issue 15, authorization), on a PLAINTEXT listener.

Every connection here is ``User:ANONYMOUS`` (Kafka's principal on PLAINTEXT),
so the ACLs name it.  The enforcing broker runs with
``allow.everyone.if.no.acl.found=true`` so that ANONYMOUS may create the first
ACLs (nothing names the cluster yet); once an ACL names the cluster, only
what the ACLs allow is allowed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from chronik.protocol import decode_response

from .brokerproc import BrokerProcess, running_broker
from .clients import Sent, confluent_consume, confluent_produce
from .raw import Raw, request_frame
from .test_admin import create, error_of
from .test_cluster import IDS, eventually, running_cluster
from .test_cluster import create as create_on
from .test_java import MISSING as JAVA_MISSING
from .test_kafka_tools import run_tools

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KpResourceType
    from kafka.errors import SecurityDisabledError

ANON = "User:ANONYMOUS"
ENFORCE = ("--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer")
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
SECURITY_DISABLED = 54
ACL_COMMAND = "org.apache.kafka.tools.AclCommand"  # what bin/kafka-acls.sh runs


def kafka_python_admin(broker: BrokerProcess) -> KafkaAdminClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="test-acls")


def produce_error(bootstrap: str, topic: str) -> int:
    """The error code producing one record to ``topic`` fails with (0: delivered)."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 10000})
    errors: list[Any] = []
    producer.produce(topic, b"v", partition=0, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(15)
    assert len(errors) == 1
    return 0 if errors[0] is None else errors[0].code()


def consume_error(bootstrap: str, topic: str, group: str | None = None, timeout: float = 15.0) -> int:
    """The first error a consumer of ``topic`` gets (0 if it reads a record first).

    With ``group`` it subscribes as a member of that group, else it reads partition 0 by assignment."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group or "unused",
                                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        if group is None:
            consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        else:
            consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            return 0 if message.error() is None else message.error().code()
        raise AssertionError("neither a record nor an error arrived")
    finally:
        consumer.close()


def listed_topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


@pytest.fixture
def enforcing(tmp_path: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", *ENFORCE, "--set", "allow.everyone.if.no.acl.found=true") as proc:
        yield proc


def test_without_an_authorizer_acl_apis_answer_security_disabled(broker: BrokerProcess) -> None:
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, ANON, "*", AclOperation.READ,
                         AclPermissionType.ALLOW)
    assert error_of(client.create_acls([binding])[binding]) == SECURITY_DISABLED
    # without an authorizer, every supported operation is authorized (KIP-430, as Kafka)
    create(client, NewTopic("t", 1, 1))
    assert len(client.describe_topics(TopicCollection(["t"]), include_authorized_operations=True)["t"]
               .result(10).authorized_operations) == 8
    # (librdkafka 2.16 drops DescribeAcls' top-level error: kafka-python reports it)
    kp = kafka_python_admin(broker)
    try:
        with pytest.raises(SecurityDisabledError):
            kp.describe_acls(ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                                       ResourcePatternFilter(KpResourceType.ANY, None, ACLResourcePatternType.ANY)))
    finally:
        kp.close()


def test_acl_matrix_with_kafka_python_admin(enforcing: BrokerProcess) -> None:
    bootstrap = enforcing.bootstrap
    client = AdminClient({"bootstrap.servers": bootstrap})
    # before any ACL names them (allow.everyone.if.no.acl.found=true), everything is allowed
    create(client, *(NewTopic(name, 1, 1) for name in ("app-ok", "app-blocked", "readonly", "hidden", "open")))
    for name in ("app-ok", "app-blocked", "readonly"):
        confluent_produce(bootstrap, name, [Sent(b"k", b"v", [], 0)])

    kp = kafka_python_admin(enforcing)
    try:
        def acl(principal: str, operation: ACLOperation, resource_type: KpResourceType, name: str,
                pattern: ACLResourcePatternType = ACLResourcePatternType.LITERAL,
                permission: ACLPermissionType = ACLPermissionType.ALLOW) -> ACL:
            return ACL(principal, "*", operation, permission, ResourcePattern(resource_type, name, pattern))

        acls = [
            acl(ANON, ACLOperation.ALTER, KpResourceType.CLUSTER, "kafka-cluster"),  # implies DESCRIBE
            acl(ANON, ACLOperation.ALL, KpResourceType.TOPIC, "app-", ACLResourcePatternType.PREFIXED),
            acl(ANON, ACLOperation.WRITE, KpResourceType.TOPIC, "app-blocked", permission=ACLPermissionType.DENY),
            acl(ANON, ACLOperation.DESCRIBE, KpResourceType.TOPIC, "readonly"),
            acl("User:bob", ACLOperation.ALL, KpResourceType.TOPIC, "hidden"),
            acl("User:bob", ACLOperation.ALL, KpResourceType.TOPIC, "bob-", ACLResourcePatternType.PREFIXED),
            acl(ANON, ACLOperation.READ, KpResourceType.GROUP, "app-", ACLResourcePatternType.PREFIXED),
            acl("User:bob", ACLOperation.READ, KpResourceType.GROUP, "locked"),
        ]
        result = kp.create_acls(acls)
        assert not result["failed"], result["failed"]
        assert len(result["succeeded"]) == len(acls)
        listed, error = kp.describe_acls(ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                                                   ResourcePatternFilter(KpResourceType.ANY, None,
                                                                         ACLResourcePatternType.ANY)))
        assert error.errno == 0
        assert len(listed) == len(acls)
        # a binding that is not concrete is refused, the others stored
        bad = kp.create_acls([acl(ANON, ACLOperation.READ, KpResourceType.CLUSTER, "not-the-cluster")])
        assert bad["failed"] and not bad["succeeded"]
    finally:
        kp.close()

    # write without WRITE, read without READ: refused
    assert produce_error(bootstrap, "readonly") == TOPIC_AUTHORIZATION_FAILED
    assert consume_error(bootstrap, "readonly") == TOPIC_AUTHORIZATION_FAILED
    # a prefixed ALLOW beside a literal DENY: the DENY wins (for WRITE only)
    assert produce_error(bootstrap, "app-ok") == 0
    assert produce_error(bootstrap, "app-blocked") == TOPIC_AUTHORIZATION_FAILED
    assert consume_error(bootstrap, "app-blocked") == 0
    # a group: allowed by the prefixed group ACL, refused without READ on it
    assert consume_error(bootstrap, "app-ok", group="app-readers") == 0
    assert consume_error(bootstrap, "app-ok", group="locked") == GROUP_AUTHORIZATION_FAILED
    # Metadata: a topic the principal may not describe is hidden; named, it is refused
    assert listed_topics(bootstrap) >= {"app-ok", "app-blocked", "readonly", "open"}
    assert "hidden" not in listed_topics(bootstrap)
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics("hidden", timeout=10)
    assert meta.topics["hidden"].error.code() == TOPIC_AUTHORIZATION_FAILED
    # CreateTopics: CREATE on the cluster (now named by an ACL, not allowed) or on the topic
    # (a topic no ACL names at all may be created: allow.everyone.if.no.acl.found=true)
    assert error_of(client.create_topics([NewTopic("app-new", 1, 1)])["app-new"]) == 0
    assert error_of(client.create_topics([NewTopic("bob-new", 1, 1)])["bob-new"]) == TOPIC_AUTHORIZATION_FAILED
    assert error_of(client.create_topics([NewTopic("other-new", 1, 1)])["other-new"]) == 0
    # AlterConfigs / DescribeConfigs: ALTER_CONFIGS (which ALL gives) / DESCRIBE_CONFIGS on the topic
    for name, code in (("app-ok", 0), ("readonly", TOPIC_AUTHORIZATION_FAILED)):
        resource = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
        assert error_of(client.incremental_alter_configs([resource])[resource]) == code, name
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        assert error_of(client.describe_configs([resource])[resource]) == code, name
    # KIP-430 authorized operations, as Describe(Topics|Cluster) report them
    described = client.describe_topics(TopicCollection(["readonly", "app-ok"]), include_authorized_operations=True)
    assert described["readonly"].result(10).authorized_operations == [AclOperation.DESCRIBE]
    assert set(described["app-ok"].result(10).authorized_operations) == {
        AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE, AclOperation.DELETE,
        AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS}
    group = client.describe_consumer_groups(["app-readers"], include_authorized_operations=True)["app-readers"]
    assert set(group.result(10).authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
    cluster = client.describe_cluster(include_authorized_operations=True).result(10)
    assert set(cluster.authorized_operations) == {AclOperation.ALTER, AclOperation.DESCRIBE}
    # DeleteTopics needs DELETE
    assert error_of(client.delete_topics(["readonly"])["readonly"]) == TOPIC_AUTHORIZATION_FAILED
    # the denials were logged, one line each, naming principal, operation and resource
    line = enforcing.wait_for_log(r"authorization denied: principal User:ANONYMOUS .* may not WRITE TOPIC 'readonly'")
    assert "readonly" in line
    assert len([l for l in enforcing.output().splitlines() if "may not WRITE TOPIC 'readonly'" in l]) == 1


def test_confluent_admin_acls_and_a_super_user(tmp_path: Path) -> None:
    with running_broker(tmp_path / "data", *ENFORCE, "--set", f"super.users=User:admin;{ANON}") as broker:
        bootstrap = broker.bootstrap
        client = AdminClient({"bootstrap.servers": bootstrap})
        create(client, NewTopic("guarded", 1, 1))
        bindings = [
            AclBinding(ResourceType.TOPIC, "guarded", ResourcePatternType.LITERAL, ANON, "*", AclOperation.ALL,
                       AclPermissionType.DENY),
            AclBinding(ResourceType.GROUP, "g", ResourcePatternType.PREFIXED, "User:alice", "10.0.0.1",
                       AclOperation.READ, AclPermissionType.ALLOW),
        ]
        for future in client.create_acls(bindings).values():
            assert future.result(10) is None
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                      AclPermissionType.ANY)
        assert sorted(map(str, client.describe_acls(everything).result(10))) == sorted(map(str, bindings))
        # MATCH finds the prefixed group binding covering a concrete group name
        match = AclBindingFilter(ResourceType.GROUP, "group-1", ResourcePatternType.MATCH, None, None,
                                 AclOperation.ANY, AclPermissionType.ANY)
        assert client.describe_acls(match).result(10) == [bindings[1]]
        # a super user bypasses every ACL, a DENY included
        assert confluent_produce(bootstrap, "guarded", [Sent(b"k", b"v", [], 0)]) == [0]
        assert [r.value for r in confluent_consume(bootstrap, "guarded", 1)] == [b"v"]
        # deleting by filter answers what it deleted
        deleted = client.delete_acls([match])[match].result(10)
        assert deleted == [bindings[1]]
        assert client.describe_acls(everything).result(10) == [bindings[0]]


def test_without_cluster_alter_acls_cannot_be_managed(tmp_path: Path) -> None:
    with running_broker(tmp_path / "data", *ENFORCE) as broker:
        client = AdminClient({"bootstrap.servers": broker.bootstrap})
        binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, ANON, "*", AclOperation.READ,
                             AclPermissionType.ALLOW)
        assert error_of(client.create_acls([binding])[binding]) == CLUSTER_AUTHORIZATION_FAILED
        # and with no ACL at all and allow.everyone.if.no.acl.found=false, nothing else is allowed either
        assert produce_error(broker.bootstrap, "t") == TOPIC_AUTHORIZATION_FAILED
        with pytest.raises(KafkaException) as refused:
            client.create_topics([NewTopic("t", 1, 1)])["t"].result(10)
        assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acls_created_on_one_node_apply_on_all(tmp_path: Path) -> None:
    """CreateAcls sent to a follower goes through the (Raft) metadata log: every node enforces it."""
    with running_cluster(tmp_path, *ENFORCE, "--set", "allow.everyone.if.no.acl.found=true") as cluster:
        controller = eventually(cluster.controller)
        follower = next(i for i in IDS if i != controller)
        create_on(cluster.nodes[follower], "shared", 1, 3)
        for i in IDS:
            eventually(lambda: "shared" in cluster.topics(i), 5.0)
        deny = {"resource_type": 2, "resource_name": "shared", "resource_pattern_type": 3, "principal": ANON,
                "host": "*", "operation": 8, "permission_type": 2}  # DENY DESCRIBE on topic shared
        with Raw(cluster.nodes[follower]) as connection:
            connection.send(request_frame(30, 3, {"creations": [deny]}))
            frame = connection.read_frame()
        assert frame is not None
        assert [r.error_code for r in decode_response(30, 3, frame, 5).results] == [0]
        for i in IDS:  # Metadata on every node now hides the topic
            eventually(lambda: "shared" not in cluster.topics(i), 5.0)
            with Raw(cluster.nodes[i]) as connection:
                connection.send(request_frame(29, 3, {
                    "resource_type_filter": 2, "resource_name_filter": None, "pattern_type_filter": 1,
                    "principal_filter": None, "host_filter": None, "operation": 1, "permission_type": 1}))
                frame = connection.read_frame()
            assert frame is not None
            described = decode_response(29, 3, frame, 5)
            assert described.error_code == 0
            assert [(r.resource_name, [(a.principal, a.operation, a.permission_type) for a in r.acls])
                    for r in described.resources] == [("shared", [(ANON, 8, 2)])]


def create_topic_through(node: BrokerProcess, name: str) -> tuple[int, str | None]:
    """CreateTopics v7 sent to ``node`` itself (admin clients send it to the controller that
    Metadata names); the topic's error code and message."""
    with Raw(node) as connection:
        connection.send(request_frame(19, 7, {"topics": [{
            "name": name, "num_partitions": 1, "replication_factor": 3, "assignments": [], "configs": []}],
            "timeout_ms": 10000, "validate_only": False}))
        frame = connection.read_frame()
    assert frame is not None
    (topic,) = decode_response(19, 7, frame, 5).topics
    return topic.error_code, topic.error_message


def auto_create_through(node: BrokerProcess, name: str) -> int:
    """Metadata v12 for ``name`` with auto-creation, sent to ``node``; the topic's error code."""
    with Raw(node) as connection:
        connection.send(request_frame(3, 12, {"topics": [{"name": name, "topic_id": None}],
                                              "allow_auto_topic_creation": True,
                                              "include_topic_authorized_operations": False}))
        frame = connection.read_frame()
    assert frame is not None
    (topic,) = decode_response(3, 12, frame, 5).topics
    return topic.error_code


def test_creating_topics_through_a_follower_is_authorized_by_the_controller(tmp_path: Path) -> None:
    """CreateTopics sent to a non-controller reaches the controller with the client's principal
    and host, and the controller authorizes it against its own image (Kafka's forwarding)."""
    with running_cluster(tmp_path, *ENFORCE, "--set", "allow.everyone.if.no.acl.found=true") as cluster:
        controller = eventually(cluster.controller)
        follower = next(i for i in IDS if i != controller)
        client = AdminClient({"bootstrap.servers": cluster.nodes[follower].bootstrap})
        bindings = [  # ANONYMOUS may manage ACLs, see and create any topic, but not no-* ones from this host
            AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, ANON, "*",  # (CLUSTER)
                       AclOperation.ALTER, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, "*", ResourcePatternType.LITERAL, ANON, "*", AclOperation.CREATE,
                       AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, "*", ResourcePatternType.LITERAL, ANON, "*", AclOperation.DESCRIBE,
                       AclPermissionType.ALLOW),  # (Metadata shows a topic only to who may describe it)
            AclBinding(ResourceType.TOPIC, "no-", ResourcePatternType.PREFIXED, ANON, "127.0.0.1",
                       AclOperation.CREATE, AclPermissionType.DENY),
        ]
        for future in client.create_acls(bindings).values():
            assert future.result(10) is None
        everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                      AclPermissionType.ANY)
        for i in IDS:  # committed, and applied on every node
            node_client = AdminClient({"bootstrap.servers": cluster.nodes[i].bootstrap})
            eventually(lambda: len(node_client.describe_acls(everything).result(10)) == len(bindings), 5.0)

        # allowed: created, on every node; denied (here by the follower's own check: the same answer)
        assert create_topic_through(cluster.nodes[follower], "ok-1") == (0, None)
        for i in IDS:
            eventually(lambda: "ok-1" in cluster.topics(i), 5.0)
        assert create_topic_through(cluster.nodes[follower], "no-1")[0] == TOPIC_AUTHORIZATION_FAILED

        # The controller decides: the follower restarts with ANONYMOUS a super user of its own, so
        # its handlers let every write through -- and the controller's ACLs still refuse it (only
        # the DENY for the client's host does: the host travels with the principal).
        node = cluster.nodes[follower]
        node.stop()
        node.extra_args += ["--set", f"super.users={ANON}"]
        node.start()
        assert eventually(cluster.controller) == controller, "the controller moved while the follower restarted"
        eventually(lambda: "ok-1" in cluster.topics(follower), 5.0)
        assert create_topic_through(node, "no-2") == (TOPIC_AUTHORIZATION_FAILED, "User:ANONYMOUS may not CREATE topic 'no-2'")
        cluster.nodes[controller].wait_for_log(
            r"controller refused create_topic: principal User:ANONYMOUS from 127\.0\.0\.1 may not CREATE topic 'no-2'")
        assert auto_create_through(node, "no-auto") == TOPIC_AUTHORIZATION_FAILED  # auto-creation is forwarded alike
        assert create_topic_through(node, "ok-2") == (0, None)
        assert auto_create_through(node, "ok-auto") == 0
        for i in IDS:
            eventually(lambda: {"ok-2", "ok-auto"} <= set(cluster.topics(i)), 5.0)
            assert not {"no-1", "no-2", "no-auto"} & set(cluster.topics(i))
        since_restart = node.output().rsplit("INFO chronik: starting node", 1)[1]
        assert "authorization denied" not in since_restart  # the follower itself refused nothing


@pytest.mark.skipif(JAVA_MISSING is not None, reason=JAVA_MISSING or "")
def test_kafka_acls_tool_adds_lists_and_removes(tmp_path: Path) -> None:
    """Apache Kafka's kafka-acls (org.apache.kafka.tools.AclCommand) against an enforcing broker."""
    with running_broker(tmp_path / "data", *ENFORCE, "--set", f"super.users={ANON}") as broker:
        b = ["--bootstrap-server", broker.bootstrap]
        alice = ["--allow-principal", "User:alice", "--operation", "Read", "--topic", "orders"]
        ran = run_tools(tmp_path, {
            "add": (None, ACL_COMMAND, [*b, "--add", *alice, "--resource-pattern-type", "prefixed"]),
            "list": (None, ACL_COMMAND, [*b, "--list", "--topic", "orders", "--resource-pattern-type", "match"]),
            "remove": (None, ACL_COMMAND, [*b, "--remove", *alice, "--resource-pattern-type", "prefixed", "--force"]),
            "list-after": (None, ACL_COMMAND, [*b, "--list"]),
        })
    for name, result in ran.items():
        assert result.status == 0, f"{name}: {result.out}\n{result.err}"
    listed = ran["list"].out
    assert "ResourcePattern(resourceType=TOPIC, name=orders, patternType=PREFIXED)" in listed, listed
    assert "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)" in listed, listed
    assert "User:alice" not in ran["list-after"].out


def test_transactions_need_write_on_the_transactional_id_and_the_topics(enforcing: BrokerProcess) -> None:
    """Kafka's transactional checks: WRITE on the transactional id for InitProducerId/AddPartitionsToTxn/
    EndTxn, WRITE on every topic added; ListTransactions shows only what the principal may describe."""
    admin = AdminClient({"bootstrap.servers": enforcing.bootstrap})
    create(admin, NewTopic("txn-open", 1, 1))
    create(admin, NewTopic("txn-closed", 1, 1))

    def allow(resource: ResourceType, name: str, operation: AclOperation) -> None:
        binding = AclBinding(resource, name, ResourcePatternType.LITERAL, ANON, "*", operation, AclPermissionType.ALLOW)
        assert admin.create_acls([binding])[binding].result(10) is None

    allow(ResourceType.TRANSACTIONAL_ID, "tx-allowed", AclOperation.WRITE)
    allow(ResourceType.TRANSACTIONAL_ID, "tx-allowed", AclOperation.DESCRIBE)
    allow(ResourceType.TOPIC, "txn-open", AclOperation.WRITE)
    allow(ResourceType.TOPIC, "txn-closed", AclOperation.DESCRIBE)  # an ACL names it: WRITE is now denied
    allow(ResourceType.TRANSACTIONAL_ID, "tx-other", AclOperation.DESCRIBE)  # DESCRIBE only: no WRITE

    denied = confluent_kafka.Producer({"bootstrap.servers": enforcing.bootstrap, "transactional.id": "tx-other"})
    with pytest.raises(KafkaException) as refused:
        denied.init_transactions(10)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

    producer = confluent_kafka.Producer({"bootstrap.servers": enforcing.bootstrap, "transactional.id": "tx-allowed"})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("txn-open", b"ok", partition=0)
    producer.commit_transaction(10)
    producer.begin_transaction()
    producer.produce("txn-closed", b"no", partition=0)
    with pytest.raises(KafkaException) as failed:
        producer.commit_transaction(10)
    assert "TOPIC_AUTHORIZATION_FAILED" in str(failed.value) or \
        failed.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, failed.value

    listed = {t.transactional_id for t in admin.list_transactions().result(10).valid} \
        if hasattr(admin, "list_transactions") else None
    if listed is not None:
        assert listed == {"tx-allowed"}
