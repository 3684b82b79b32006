"""chronik.metadata.placement: round-robin without racks, Kafka's rack-aware spread with them; request checks."""

from __future__ import annotations

from chronik.metadata.commands import RegisterBroker
from chronik.metadata.image import MetadataImage
from chronik.metadata import CreateTopic
from chronik.metadata.placement import PartitionLimits, TopicRequest, replica_assignment, topic_request_problem


def image_of(racks: dict[int, str | None]) -> MetadataImage:
    image = MetadataImage()
    for offset, (node_id, rack) in enumerate(racks.items()):
        image.apply(offset, RegisterBroker(node_id=node_id, host="h", port=9092, rack=rack))
    return image


def assign(racks: dict[int, str | None], partitions: int, replication_factor: int, first: int = 0) -> list[list[int]]:
    return replica_assignment(image_of(racks), partitions, replication_factor, first, this_node=1)


def test_without_racks_replicas_go_round_robin() -> None:
    assert assign({1: None, 2: None, 3: None}, 3, 2) == [[1, 2], [2, 3], [3, 1]]
    assert assign({1: None, 2: None, 3: None}, 2, 1, first=2) == [[3], [1]]


def test_replicas_of_a_partition_are_on_distinct_racks_first() -> None:
    racks = {1: "a", 2: "a", 3: "a", 4: "b", 5: "b", 6: "c"}
    assignment = assign(racks, 12, 3)
    for replicas in assignment:
        assert len(set(replicas)) == 3
        assert {racks[b] for b in replicas} == {"a", "b", "c"}, assignment
    leaders = [replicas[0] for replicas in assignment]
    assert sorted(leaders) == sorted(list(racks) * 2)  # leaders round-robin over every broker


def test_more_replicas_than_racks_reuse_racks_only_when_all_are_used() -> None:
    racks = {1: "a", 2: "a", 3: "b", 4: "b"}
    for replicas in assign(racks, 8, 3):
        assert len(set(replicas)) == 3
        assert {racks[b] for b in replicas} == {"a", "b"}
    for replicas in assign(racks, 8, 2):
        assert {racks[b] for b in replicas} == {"a", "b"}


def test_a_broker_without_a_rack_counts_as_a_rack_of_its_own() -> None:
    racks = {1: "a", 2: "a", 3: None}
    for replicas in assign(racks, 6, 2):
        assert {racks[b] for b in replicas} == {"a", None}


def test_before_any_broker_registered_this_node_holds_every_replica() -> None:
    assert replica_assignment(MetadataImage(), 2, 1, this_node=7) == [[7], [7]]


LIMITS = PartitionLimits(per_topic=2000, total=10_000)


def test_topic_request_problems_name_kafka_errors() -> None:
    image = image_of({1: None, 2: None})

    def error(partitions: int, replication_factor: int) -> str | None:
        problem = topic_request_problem(image, TopicRequest("t", partitions, replication_factor, {}), LIMITS)
        return None if problem is None else problem[0]

    assert error(3, 2) is None
    assert error(0, 1) == "INVALID_PARTITIONS"
    assert error(2001, 1) == "INVALID_PARTITIONS"
    assert error(1, 0) == "INVALID_REPLICATION_FACTOR"
    assert error(1, 3) == "INVALID_REPLICATION_FACTOR"
    assert "2 available" in str(topic_request_problem(image, TopicRequest("t", 1, 3, {}), LIMITS))
    # no broker registered yet (a single node starting): one counts as available
    assert topic_request_problem(MetadataImage(), TopicRequest("t", 1, 1, {}), LIMITS) is None


def test_partition_limits_per_topic_and_in_all() -> None:
    image = image_of({1: None})
    image.apply(image.applied_offset + 1, CreateTopic("a", "0" * 32, [[1]] * 1500, {}))
    limits = PartitionLimits(per_topic=1000, total=2000)
    assert topic_request_problem(image, TopicRequest("b", 500, 1, {}), limits) is None
    problem = topic_request_problem(image, TopicRequest("b", 501, 1, {}), limits)
    assert problem is not None and problem[0] == "POLICY_VIOLATION" and "2001 in all" in problem[1]
    # CreatePartitions counts only what it adds
    assert topic_request_problem(image, TopicRequest("a", 1000, 1, {}), limits, added=0) is None
