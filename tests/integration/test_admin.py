"""Admin APIs with real clients: configs, partitions, records, cluster, leader epochs.

confluent-kafka's AdminClient (librdkafka) and kafka-python's KafkaAdminClient
drive the broker as users do; versions and fields those clients do not send
(every version of a range, ``include_documentation``, endpoint types, leader
epoch fencing) are sent raw with kafka-python's protocol classes, which are
generated from Kafka's message specs independently of Chronik's codec.
"""

from __future__ import annotations

import warnings
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from chronik.handlers import served_versions
from chronik.config import KAFKA_SETTING_DOCS
from chronik.metadata.topic_configs import TOPIC_CONFIGS

from .brokerproc import BrokerProcess
from .raw import Raw

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import ConfigResource as KpConfigResource
    from kafka.admin import ConfigResourceType as KpConfigResourceType
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.admin.cluster import DescribeClusterRequest, DescribeClusterResponse
    from kafka.protocol.admin.configs import (
        AlterConfigsRequest,
        AlterConfigsResponse,
        DescribeConfigsRequest,
        DescribeConfigsResponse,
        IncrementalAlterConfigsRequest,
        IncrementalAlterConfigsResponse,
    )
    from kafka.protocol.admin.topics import (
        CreatePartitionsRequest,
        CreatePartitionsResponse,
        DeleteRecordsRequest,
        DeleteRecordsResponse,
    )
    from kafka.protocol.consumer.offsets import OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse
    from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse

NODE_ID = 1  # the broker fixture's node id (the default)
TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
SOURCE_TOPIC, SOURCE_STATIC_BROKER, SOURCE_DEFAULT = 1, 4, 5


def raw(broker: BrokerProcess, request_class: Any, response_class: Any, version: int, **fields: Any) -> Any:
    """Send one request of ``version`` over a fresh connection; the decoded response."""
    request = request_class[version](**fields)
    request.with_header(correlation_id=42, client_id="test-admin")
    with Raw(broker) as connection:
        connection.send(bytes(request.encode(header=True, framed=True)))
        payload = connection.read_frame()
    assert payload is not None, "broker closed the connection"
    response = response_class[version].decode(payload, header=True)
    assert response._header.correlation_id == 42
    return response


def config_resource(resource_type: int, name: str, keys: list[str] | None = None) -> Any:
    return DescribeConfigsRequest.DescribeConfigsResource(resource_type=resource_type, resource_name=name, configuration_keys=keys)


def admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kafka_python_admin(broker: BrokerProcess) -> KafkaAdminClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="test-admin")


def error_of(future: Any) -> int:
    """The Kafka error code a confluent future failed with (0 if it did not)."""
    try:
        future.result(10)
    except KafkaException as exc:
        return exc.args[0].code()
    return 0


def create(client: AdminClient, *topics: NewTopic) -> None:
    for future in client.create_topics(list(topics)).values():
        future.result(10)


def described(client: AdminClient, resource: ConfigResource) -> dict[str, ConfigEntry]:
    return client.describe_configs([resource])[resource].result(10)


# -- ApiVersions ---------------------------------------------------------------


def test_api_versions_advertise_exactly_the_registered_handlers(broker: BrokerProcess) -> None:
    response = raw(broker, ApiVersionsRequest, ApiVersionsResponse, 3,
                   client_software_name="test", client_software_version="1")
    advertised = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert advertised == {r.api_key: (r.min_version, r.max_version) for r in served_versions()}
    assert {key: advertised[key] for key in (21, 23, 32, 33, 37, 44, 60)} == {
        21: (0, 2), 23: (2, 4), 32: (1, 4), 33: (0, 2), 37: (0, 3), 44: (0, 1), 60: (0, 1),
    }


# -- configs -------------------------------------------------------------------


def test_topic_configs_with_confluent(broker: BrokerProcess) -> None:
    client = admin(broker)
    create(client, NewTopic("cfg", 1, 1, config={"retention.ms": "1000"}))
    resource = ConfigResource(ResourceType.TOPIC, "cfg")

    configs = described(client, resource)
    assert set(configs) == set(TOPIC_CONFIGS)
    retention = configs["retention.ms"]
    assert (retention.value, retention.source, retention.is_read_only, retention.is_sensitive) == (
        "1000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value, False, False)
    assert [(s.name, s.value, s.source) for s in retention.synonyms.values()] == [
        ("retention.ms", "1000", SOURCE_TOPIC), ("log.retention.ms", "604800000", SOURCE_DEFAULT)]
    segment = configs["segment.bytes"]
    assert (segment.value, segment.source, segment.is_default) == ("1073741824", SOURCE_DEFAULT, True)
    assert error_of(client.describe_configs([ConfigResource(ResourceType.TOPIC, "nope")])[
        ConfigResource(ResourceType.TOPIC, "nope")]) == KafkaError.UNKNOWN_TOPIC_OR_PART

    def incremental(*entries: ConfigEntry, validate_only: bool = False) -> int:
        change = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=list(entries))
        return error_of(client.incremental_alter_configs([change], validate_only=validate_only)[change])

    set_op, delete_op, append_op = AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND
    assert incremental(ConfigEntry("segment.ms", "60000", incremental_operation=set_op),
                       ConfigEntry("retention.ms", None, incremental_operation=delete_op)) == 0
    configs = described(client, resource)
    assert (configs["segment.ms"].value, configs["segment.ms"].source) == ("60000", SOURCE_TOPIC)
    assert (configs["retention.ms"].value, configs["retention.ms"].source) == ("604800000", SOURCE_DEFAULT)
    # Refused edits change nothing, not even their valid parts.
    assert incremental(ConfigEntry("retention.ms", "5", incremental_operation=set_op),
                       ConfigEntry("segment.ms", "soon", incremental_operation=set_op)) == KafkaError.INVALID_CONFIG
    assert incremental(ConfigEntry("no.such.config", "1", incremental_operation=set_op)) == KafkaError.INVALID_CONFIG
    assert incremental(ConfigEntry("segment.ms", "5", incremental_operation=append_op)) == KafkaError.INVALID_CONFIG
    assert incremental(ConfigEntry("cleanup.policy", "compaction", incremental_operation=append_op)) == KafkaError.INVALID_CONFIG
    assert incremental(ConfigEntry("cleanup.policy", "delete", incremental_operation=append_op)) == 0
    assert incremental(ConfigEntry("retention.ms", "7", incremental_operation=set_op), validate_only=True) == 0
    configs = described(client, resource)
    assert {k: configs[k].value for k in ("segment.ms", "retention.ms", "cleanup.policy")} == {
        "segment.ms": "60000", "retention.ms": "604800000", "cleanup.policy": "delete"}

    # Legacy AlterConfigs replaces the whole explicit config.
    replace = ConfigResource(ResourceType.TOPIC, "cfg", set_config={"max.message.bytes": "2048"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert error_of(client.alter_configs([replace])[replace]) == 0
        bad = ConfigResource(ResourceType.TOPIC, "cfg", set_config={"max.message.bytes": "-5"})
        assert error_of(client.alter_configs([bad])[bad]) == KafkaError.INVALID_CONFIG
    configs = described(client, resource)
    assert (configs["max.message.bytes"].value, configs["max.message.bytes"].source) == ("2048", SOURCE_TOPIC)
    assert (configs["segment.ms"].value, configs["segment.ms"].source) == ("604800000", SOURCE_DEFAULT)
    assert configs["cleanup.policy"].source == SOURCE_DEFAULT


def test_broker_configs_are_described_and_read_only(broker: BrokerProcess) -> None:
    client = admin(broker)
    resource = ConfigResource(ResourceType.BROKER, str(NODE_ID))
    configs = described(client, resource)
    assert {"num.partitions", "log.retention.ms", "message.max.bytes", "auto.create.topics.enable"} <= set(configs)
    assert all(e.is_read_only and not e.is_sensitive for e in configs.values())
    assert (configs["num.partitions"].value, configs["num.partitions"].source) == ("1", SOURCE_DEFAULT)
    change = ConfigResource(ResourceType.BROKER, str(NODE_ID),
                            incremental_configs=[ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    assert error_of(client.incremental_alter_configs([change])[change]) == KafkaError.INVALID_REQUEST
    assert described(client, resource)["num.partitions"].value == "1"


def test_describe_configs_every_version_raw(broker: BrokerProcess) -> None:
    create(admin(broker), NewTopic("raw", 1, 1, config={"segment.bytes": "4096"}))
    for version in range(1, 5):
        fields: dict[str, Any] = {"include_synonyms": version >= 2}
        if version >= 3:
            fields["include_documentation"] = True
        response = raw(broker, DescribeConfigsRequest, DescribeConfigsResponse, version, resources=[
            config_resource(TOPIC, "raw", ["segment.bytes", "nope"]), config_resource(TOPIC, "raw"),
            config_resource(BROKER, ""), config_resource(BROKER, "7"), config_resource(BROKER_LOGGER, str(NODE_ID)),
            config_resource(TOPIC, "bad/name"), config_resource(BROKER, str(NODE_ID), ["num.partitions"]),
        ], **fields)
        filtered, every, default_broker, other_broker, logger, bad_name, this_broker = response.results
        assert [r.error_code for r in response.results] == [0, 0, 0, 42, 42, 17, 0], version
        (segment,) = filtered.configs
        assert (segment.name, segment.value, segment.config_source, segment.read_only) == ("segment.bytes", "4096", SOURCE_TOPIC, False)
        assert len(every.configs) == len(TOPIC_CONFIGS)
        assert default_broker.configs == []  # no dynamic cluster-wide broker defaults
        assert "expected 1 or the empty string" in other_broker.error_message
        if version >= 2:
            assert [(s.name, s.source) for s in segment.synonyms] == [
                ("segment.bytes", SOURCE_TOPIC), ("log.segment.bytes", SOURCE_DEFAULT)]
        else:
            assert segment.synonyms == []
        if version >= 3:
            assert segment.config_type == 3  # INT
            assert segment.documentation == TOPIC_CONFIGS["segment.bytes"].doc
            assert this_broker.configs[0].documentation == KAFKA_SETTING_DOCS["num.partitions"]
    # A configuration key list that is empty means "all", as in Kafka.
    response = raw(broker, DescribeConfigsRequest, DescribeConfigsResponse, 4,
                   resources=[config_resource(TOPIC, "raw", [])])
    assert len(response.results[0].configs) == len(TOPIC_CONFIGS)
    assert all(c.documentation is None and c.synonyms == [] for c in response.results[0].configs)


def test_alter_configs_every_version_raw(broker: BrokerProcess) -> None:
    create(admin(broker), NewTopic("alter", 1, 1, config={"retention.ms": "1000"}))
    legacy = AlterConfigsRequest.AlterConfigsResource

    def replace(name: str, *configs: tuple[str, str | None], resource_type: int = TOPIC) -> Any:
        return legacy(resource_type=resource_type, resource_name=name,
                      configs=[legacy.AlterableConfig(name=k, value=v) for k, v in configs])

    for version in range(3):
        response = raw(broker, AlterConfigsRequest, AlterConfigsResponse, version, validate_only=False, resources=[
            replace("alter", ("segment.ms", "1000")), replace("absent", ("segment.ms", "1")),
            replace("dup", ("segment.ms", "1")), replace("dup", ("segment.ms", "2")),
            replace(str(NODE_ID), ("num.partitions", "3"), resource_type=BROKER), replace("", resource_type=BROKER),
        ])
        assert [(r.resource_name, r.error_code) for r in response.responses] == [
            ("alter", 0), ("absent", 3), ("dup", 42), ("dup", 42), (str(NODE_ID), 42), ("", 0)], version
        assert "dynamically" in response.responses[4].error_message
    response = raw(broker, AlterConfigsRequest, AlterConfigsResponse, 2, validate_only=False, resources=[
        replace("alter", ("segment.ms", None)), replace("alter", ("x", "1"), ("y", "2"))])
    assert [r.error_code for r in response.responses] == [42, 42]  # null value; resource named twice
    response = raw(broker, AlterConfigsRequest, AlterConfigsResponse, 2, validate_only=True, resources=[
        replace("alter", ("retention.ms", "2000"))])
    assert response.responses[0].error_code == 0

    incremental = IncrementalAlterConfigsRequest.AlterConfigsResource

    def edit(*configs: tuple[str, int, str | None]) -> Any:
        return incremental(resource_type=TOPIC, resource_name="alter", configs=[
            incremental.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in configs])

    for version, (key, value) in enumerate([("retention.ms", "3000"), ("retention.bytes", "4096")]):
        response = raw(broker, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, version,
                       validate_only=False, resources=[edit((key, 0, value), ("segment.ms", 1, None))])
        assert response.responses[0].error_code == 0
        for refused, code in [(edit(("segment.ms", 0, "1"), ("segment.ms", 0, "2")), 42), (edit(("segment.ms", 9, "1")), 42),
                              (edit(("segment.ms", 0, None)), 42), (edit(("cleanup.policy", 3, "delete")), 40)]:
            response = raw(broker, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, version,
                           validate_only=False, resources=[refused])
            assert response.responses[0].error_code == code, (version, refused)
    response = raw(broker, DescribeConfigsRequest, DescribeConfigsResponse, 4, resources=[config_resource(TOPIC, "alter")])
    explicit = {c.name: c.value for c in response.results[0].configs if c.config_source == SOURCE_TOPIC}
    assert explicit == {"retention.ms": "3000", "retention.bytes": "4096"}


def test_broker_config_set_explicitly_is_static_broker_config(tmp_path: Any) -> None:
    proc = BrokerProcess(tmp_path / "data", "--set", "log.retention.ms=123456").start()
    try:
        client = admin(proc)
        create(client, NewTopic("inherits", 1, 1))
        topic = described(client, ConfigResource(ResourceType.TOPIC, "inherits"))["retention.ms"]
        assert (topic.value, topic.source) == ("123456", SOURCE_STATIC_BROKER)
        response = raw(proc, DescribeConfigsRequest, DescribeConfigsResponse, 4, include_synonyms=True,
                       resources=[config_resource(TOPIC, "inherits", ["retention.ms"])])
        assert [(s.name, s.value, s.source) for s in response.results[0].configs[0].synonyms] == [
            ("log.retention.ms", "123456", SOURCE_STATIC_BROKER), ("log.retention.ms", "604800000", SOURCE_DEFAULT)]
        setting = described(client, ConfigResource(ResourceType.BROKER, str(NODE_ID)))["log.retention.ms"]
        assert (setting.value, setting.source, setting.is_read_only) == ("123456", SOURCE_STATIC_BROKER, True)
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()


def test_kafka_python_configs_and_partitions(broker: BrokerProcess) -> None:
    client = kafka_python_admin(broker)
    try:
        create(admin(broker), NewTopic("kp", 1, 1))
        described_all = client.describe_configs([KpConfigResource(KpConfigResourceType.TOPIC, "kp")], config_filter="all")
        assert described_all["topic"]["kp"]["retention.ms"]["value"] == "604800000"
        assert described_all["topic"]["kp"]["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        result = client.alter_configs([KpConfigResource(KpConfigResourceType.TOPIC, "kp", configs={"retention.ms": "5000"})])
        assert result == {"topic": {"kp": "OK"}}
        modified = client.describe_configs([KpConfigResource(KpConfigResourceType.TOPIC, "kp")])
        assert {k: v["value"] for k, v in modified["topic"]["kp"].items()} == {"retention.ms": "5000"}
        legacy = client.alter_configs([KpConfigResource(KpConfigResourceType.TOPIC, "kp", configs={"segment.ms": "9000"})],
                                      incremental=False)
        assert legacy == {"topic": {"kp": "OK"}}
        modified = client.describe_configs([KpConfigResource(KpConfigResourceType.TOPIC, "kp")])
        # kafka-python re-sends the modified keys with a legacy AlterConfigs, so nothing is lost.
        assert {k: v["value"] for k, v in modified["topic"]["kp"].items()} == {"retention.ms": "5000", "segment.ms": "9000"}

        client.create_partitions({"kp": 3})
        client.create_partitions({"kp": {"count": 4, "assignments": [[NODE_ID]]}})
        partitions = client.describe_topics(["kp"])[0]["partitions"]
        assert sorted(p["partition_index"] for p in partitions) == [0, 1, 2, 3]
        response = client.create_partitions({"kp": 2}, raise_errors=False)
        assert [(r.name, r.error_code) for r in response.results] == [("kp", 37)]
        cluster = client.describe_cluster()
        assert cluster["controller_id"] == NODE_ID
        assert [(b["broker_id"], b["port"]) for b in cluster["brokers"]] == [(NODE_ID, broker.port)]
    finally:
        client.close()


# -- partitions ----------------------------------------------------------------


def test_create_partitions_with_confluent(broker: BrokerProcess) -> None:
    client = admin(broker)
    create(client, NewTopic("grow", 1, 1))

    def grow(count: int, assignments: list[list[int]] | None = None, validate_only: bool = False) -> int:
        wanted = NewPartitions("grow", count) if assignments is None else NewPartitions("grow", count, assignments)
        future = client.create_partitions([wanted], validate_only=validate_only)
        return error_of(future["grow"])

    assert grow(5, validate_only=True) == 0
    assert len(client.list_topics("grow", timeout=10).topics["grow"].partitions) == 1
    assert grow(3) == 0
    assert grow(3) == KafkaError.INVALID_PARTITIONS
    assert grow(2) == KafkaError.INVALID_PARTITIONS
    assert grow(4, [[NODE_ID + 1]]) == KafkaError.INVALID_REPLICA_ASSIGNMENT  # no such broker
    assert grow(4, [[NODE_ID, NODE_ID]]) == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert grow(4, [[NODE_ID]]) == 0
    assert error_of(client.create_partitions([NewPartitions("absent", 2)])["absent"]) == KafkaError.UNKNOWN_TOPIC_OR_PART
    metadata = client.list_topics("grow", timeout=10).topics["grow"]
    assert sorted(metadata.partitions) == [0, 1, 2, 3]
    assert all(p.leader == NODE_ID and p.replicas == [NODE_ID] for p in metadata.partitions.values())

    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("grow", value=b"new partition", partition=3)
    assert producer.flush(10) == 0
    latest = client.list_offsets({TopicPartition("grow", 3): OffsetSpec.latest()})
    assert latest[TopicPartition("grow", 3)].result(10).offset == 1

    for version in range(4):
        new = CreatePartitionsRequest.CreatePartitionsTopic
        one = CreatePartitionsRequest.CreatePartitionsTopic.CreatePartitionsAssignment(broker_ids=[NODE_ID])
        response = raw(broker, CreatePartitionsRequest, CreatePartitionsResponse, version, topics=[
            new(name="grow", count=5 + version, assignments=None),
            new(name="grow-more", count=5, assignments=[one]),
            new(name="twice", count=2, assignments=None), new(name="twice", count=3, assignments=None),
        ], timeout_ms=1000, validate_only=False)
        assert [(r.name, r.error_code) for r in response.results] == [
            ("grow", 0), ("grow-more", 3), ("twice", 42), ("twice", 42)], version
    create(client, NewTopic("big", 1, 1))
    response = raw(broker, CreatePartitionsRequest, CreatePartitionsResponse, 3, topics=[
        new(name="grow", count=10, assignments=[one]), new(name="big", count=3000, assignments=None),  # over max_partitions_per_topic
    ], timeout_ms=1000, validate_only=False)
    # INVALID_REPLICA_ASSIGNMENT (1 assignment for 2 new partitions); INVALID_PARTITIONS (over the limit)
    assert [r.error_code for r in response.results] == [39, 37]
    assert len(client.list_topics("grow", timeout=10).topics["grow"].partitions) == 8

    broker.restart()  # the added partitions are in the metadata log and their logs reopen
    client = admin(broker)
    assert len(client.list_topics("grow", timeout=10).topics["grow"].partitions) == 8
    latest = client.list_offsets({TopicPartition("grow", 3): OffsetSpec.latest()})
    assert latest[TopicPartition("grow", 3)].result(10).offset == 1


# -- records -------------------------------------------------------------------


def test_delete_records_with_confluent(broker: BrokerProcess) -> None:
    client = admin(broker)
    create(client, NewTopic("trim", 2, 1))
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        producer.produce("trim", value=b"%d" % i, partition=0)
    producer.produce("trim", value=b"x", partition=1)
    assert producer.flush(10) == 0

    def delete(partition: int, offset: int) -> Any:
        tp = TopicPartition("trim", partition, offset)
        return client.delete_records([tp])[TopicPartition("trim", partition)]

    def earliest(partition: int) -> int:
        tp = TopicPartition("trim", partition)
        return client.list_offsets({tp: OffsetSpec.earliest()})[tp].result(10).offset

    assert delete(0, 4).result(10).low_watermark == 4
    assert earliest(0) == 4
    assert delete(0, 2).result(10).low_watermark == 4  # never moves back
    assert error_of(delete(0, 11)) == KafkaError.OFFSET_OUT_OF_RANGE
    assert earliest(0) == 4
    assert delete(1, confluent_kafka.OFFSET_END).result(10).low_watermark == 1  # -1: the high watermark
    assert earliest(1) == 1
    for version in range(3):
        response = raw(broker, DeleteRecordsRequest, DeleteRecordsResponse, version, timeout_ms=1000, topics=[
            DeleteRecordsRequest.DeleteRecordsTopic(name="trim", partitions=[
                DeleteRecordsRequest.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=p, offset=offset)
                for p, offset in ((0, 5 + version), (1, -5), (2, 0))])])
        assert [(p.partition_index, p.error_code, p.low_watermark) for p in response.topics[0].partitions] == [
            (0, 0, 5 + version), (1, 1, -1), (2, 3, -1)], version
    assert earliest(0) == 7

    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "trim",
                                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("trim", 0, confluent_kafka.OFFSET_BEGINNING)])
        message = consumer.poll(10)
        assert message is not None and message.error() is None, message and message.error()
        assert (message.offset(), message.value()) == (7, b"7")
    finally:
        consumer.close()

    broker.restart()  # the log start offset is durable
    client = admin(broker)
    assert (earliest(0), earliest(1)) == (7, 1)


# -- cluster -------------------------------------------------------------------


def test_describe_cluster(broker: BrokerProcess) -> None:
    client = admin(broker)
    cluster = client.describe_cluster().result(10)
    assert cluster.controller.id == NODE_ID
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(NODE_ID, "127.0.0.1", broker.port)]
    metadata = client.list_topics(timeout=10)
    assert cluster.cluster_id == metadata.cluster_id and cluster.cluster_id

    v0 = raw(broker, DescribeClusterRequest, DescribeClusterResponse, 0, include_cluster_authorized_operations=False)
    assert (v0.error_code, v0.cluster_id, v0.controller_id) == (0, cluster.cluster_id, NODE_ID)
    assert [(b.broker_id, b.port) for b in v0.brokers] == [(NODE_ID, broker.port)]
    v1 = raw(broker, DescribeClusterRequest, DescribeClusterResponse, 1,
             include_cluster_authorized_operations=False, endpoint_type=1)
    assert (v1.error_code, v1.endpoint_type, len(v1.brokers)) == (0, 1, 1)
    controllers = raw(broker, DescribeClusterRequest, DescribeClusterResponse, 1,
                      include_cluster_authorized_operations=False, endpoint_type=2)
    assert (controllers.error_code, controllers.brokers) == (115, [])  # UNSUPPORTED_ENDPOINT_TYPE


# -- leader epochs ---------------------------------------------------------------


def test_offset_for_leader_epoch(broker: BrokerProcess) -> None:
    client = admin(broker)
    create(client, NewTopic("epochs", 1, 1))
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(7):
        producer.produce("epochs", value=b"v", partition=0)
    assert producer.flush(10) == 0

    def ask(version: int, *partitions: tuple[int, int, int], topic: str = "epochs") -> list[tuple[int, int, int, int]]:
        wanted = OffsetForLeaderEpochRequest.OffsetForLeaderTopic
        fields: dict[str, Any] = {"topics": [wanted(topic=topic, partitions=[
            wanted.OffsetForLeaderPartition(partition=p, current_leader_epoch=current, leader_epoch=epoch)
            for p, current, epoch in partitions])]}
        if version >= 3:
            fields["replica_id"] = -1
        response = raw(broker, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, version, **fields)
        (result,) = response.topics
        return [(p.partition, p.error_code, p.leader_epoch, p.end_offset) for p in result.partitions]

    for version in (2, 3, 4):
        assert ask(version, (0, -1, 0), (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, -2, 0), (5, -1, 0)) == [
            (0, 0, 0, 7),  # the current epoch ends at the log end
            (0, 0, 0, 7),
            (0, 0, -1, -1),  # a later epoch is undefined
            (0, 75, -1, -1),  # UNKNOWN_LEADER_EPOCH: the asker knows a newer epoch than this node
            (0, 74, -1, -1),  # FENCED_LEADER_EPOCH: the asker is behind
            (5, 3, -1, -1),  # no such partition
        ], version
        assert ask(version, (0, -1, 0), topic="absent") == [(0, 3, -1, -1)]

    # librdkafka validates a position given with its leader epoch through OffsetForLeaderEpoch (KIP-320).
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "epochs",
                                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("epochs", 0, 3, leader_epoch=0)])
        message = consumer.poll(10)
        assert message is not None and message.error() is None, message and message.error()
        assert (message.offset(), message.leader_epoch()) == (3, 0)
    finally:
        consumer.close()


def test_create_topics_manual_assignment_and_config_sources(tmp_path: Any) -> None:
    """(confluent-kafka 2.16's NewTopic refuses replica assignments client-side, so these are raw v5 requests.)"""
    from chronik.protocol import decode_response

    from .raw import request_frame

    def create_v5(connection: Raw, name: str, assignments: list[list[int]], configs: dict[str, str]) -> Any:
        connection.send(request_frame(19, 5, {"topics": [{
            "name": name, "num_partitions": -1 if assignments else 1, "replication_factor": -1 if assignments else 1,
            "assignments": [{"partition_index": i, "broker_ids": ids} for i, ids in enumerate(assignments)],
            "configs": [{"name": k, "value": v} for k, v in configs.items()]}], "timeout": 5000, "validate_only": False}))
        response = connection.read_frame()
        assert response is not None
        return decode_response(19, 5, response, 5).topics[0]

    proc = BrokerProcess(tmp_path / "data", "--set", "log.retention.ms=123456").start()
    try:
        with Raw(proc) as connection:
            assert create_v5(connection, "manual", [[NODE_ID]] * 3, {}).error_code == 0
            assert create_v5(connection, "unknown-broker", [[NODE_ID], [7]], {}).error_code == 39
            assert create_v5(connection, "twice", [[NODE_ID, NODE_ID]], {}).error_code == 39
            result = create_v5(connection, "sourced", [], {"segment.bytes": "4096"})
        topics = admin(proc).list_topics(timeout=10).topics
        assert len(topics["manual"].partitions) == 3 and "unknown-broker" not in topics
        sources = {c.name: (c.value, c.config_source) for c in result.configs}
        assert sources["segment.bytes"] == ("4096", SOURCE_TOPIC)
        assert sources["retention.ms"] == ("123456", SOURCE_STATIC_BROKER)
        assert sources["cleanup.policy"] == ("delete", SOURCE_DEFAULT)
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()
