"""Broker.replica_assignment: round-robin without racks, Kafka's rack-aware spread with them."""

from __future__ import annotations

from types import SimpleNamespace

from chronik.broker import Broker
from chronik.metadata.commands import RegisterBroker
from chronik.metadata.image import MetadataImage


def assign(racks: dict[int, str | None], partitions: int, replication_factor: int, first: int = 0) -> list[list[int]]:
    image = MetadataImage()
    for offset, (node_id, rack) in enumerate(racks.items()):
        image.apply(offset, RegisterBroker(node_id=node_id, host="h", port=9092, rack=rack))
    return Broker.replica_assignment(SimpleNamespace(image=image, node_id=1), partitions, replication_factor, first)  # type: ignore[arg-type]


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
