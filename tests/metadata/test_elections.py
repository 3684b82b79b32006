"""Fencing, unfencing and the leader election rule of the metadata image, and the controller's liveness rule."""

from __future__ import annotations

import uuid

import pytest

from chronik.cluster.liveness import liveness_change
from chronik.metadata import (
    CommandRejected,
    ControlledShutdown,
    CreateTopic,
    FenceBroker,
    MetadataImage,
    RegisterBroker,
    UnfenceBroker,
)
from chronik.metadata.commands import ChangeIsr, decode_command, encode_command


class Image:
    """A MetadataImage with three brokers, fed commands at increasing offsets."""

    def __init__(self) -> None:
        self.image = MetadataImage()
        self.offset = 0
        for node_id in (1, 2, 3):
            self.apply(RegisterBroker(node_id, "localhost", 9090 + node_id))

    def apply(self, command):  # type: ignore[no-untyped-def]
        self.offset += 1
        return self.image.apply(self.offset, command)

    def create(self, name: str, replicas: list[list[int]], **configs: str) -> str:
        topic_id = uuid.uuid4().hex
        self.apply(CreateTopic(name, topic_id, replicas, dict(configs)))
        return topic_id

    def state(self, name: str) -> list[tuple[int, int, list[int]]]:
        return [(p.leader, p.leader_epoch, p.isr) for p in self.image.topics[name].partitions]


def test_fencing_a_leader_elects_the_next_in_sync_replica_and_bumps_the_epoch() -> None:
    m = Image()
    m.create("t", [[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    changed = m.apply(FenceBroker(2))
    assert changed == [("t", 1)]
    assert m.state("t") == [(1, 0, [1, 3]), (3, 1, [3, 1]), (3, 0, [3, 1])]  # 2 also left every ISR
    assert m.image.live_brokers() == [1, 3]
    assert m.image.brokers[2].fenced
    # a second failure: 3's partitions go to 1, the last live in-sync replica
    m.apply(FenceBroker(3))
    assert m.state("t") == [(1, 0, [1]), (1, 2, [1]), (1, 1, [1])]


def test_with_no_eligible_replica_a_partition_goes_offline_until_its_last_leader_returns() -> None:
    m = Image()
    m.create("t", [[1, 2]])
    m.apply(ChangeIsr("t", m.image.topics["t"].topic_id.hex, 0, 1, 0, [1]))  # 2 fell behind
    m.apply(FenceBroker(1))
    assert m.state("t") == [(-1, 1, [1])]  # 2 is out of sync: no clean leader
    m.apply(UnfenceBroker(2))  # already unfenced: nothing to lead
    assert m.state("t") == [(-1, 1, [1])]
    assert m.apply(UnfenceBroker(1)) == [("t", 0)]
    assert m.state("t") == [(1, 2, [1])]


def test_unclean_election_takes_any_live_replica_when_the_topic_allows_it() -> None:
    m = Image()
    m.create("u", [[1, 2]], **{"unclean.leader.election.enable": "true"})
    m.apply(ChangeIsr("u", m.image.topics["u"].topic_id.hex, 0, 1, 0, [1]))
    m.apply(FenceBroker(1))
    assert m.state("u") == [(2, 1, [2])]


def test_unfencing_elects_an_out_of_sync_replica_only_with_unclean_election() -> None:
    m = Image()
    m.create("clean", [[1, 2]])
    m.create("unclean", [[1, 2]], **{"unclean.leader.election.enable": "true"})
    for name in ("clean", "unclean"):
        m.apply(ChangeIsr(name, m.image.topics[name].topic_id.hex, 0, 1, 0, [1]))
    m.apply(FenceBroker(2))
    m.apply(FenceBroker(1))
    assert m.state("clean") == m.state("unclean") == [(-1, 1, [1])]
    assert m.apply(UnfenceBroker(2)) == [("unclean", 0)]
    assert m.state("clean") == [(-1, 1, [1])]
    assert m.state("unclean") == [(2, 2, [2])]


def test_a_fenced_broker_cannot_join_an_isr_and_a_stale_leader_cannot_change_it() -> None:
    m = Image()
    topic_id = m.create("t", [[1, 2, 3]])
    m.apply(FenceBroker(3))
    with pytest.raises(CommandRejected) as refused:
        m.apply(ChangeIsr("t", topic_id, 0, 1, 0, [1, 2, 3]))
    assert refused.value.error == "INELIGIBLE_REPLICA"
    m.apply(FenceBroker(1))
    with pytest.raises(CommandRejected) as stale:
        m.apply(ChangeIsr("t", topic_id, 0, 1, 0, [1]))  # 1 no longer leads in epoch 0
    assert stale.value.error == "FENCED_LEADER_EPOCH"
    with pytest.raises(CommandRejected):
        m.apply(FenceBroker(9))  # not registered


def test_controlled_shutdown_moves_leadership_cleanly_and_lasts_until_the_broker_registers_again() -> None:
    m = Image()
    m.create("t", [[1, 2, 3], [2, 3, 1]])
    m.create("solo", [[1]])
    m.create("u", [[1, 2]], **{"unclean.leader.election.enable": "true"})
    m.apply(ChangeIsr("u", m.image.topics["u"].topic_id.hex, 0, 1, 0, [1]))
    assert m.apply(ControlledShutdown(1)) == [("t", 0), ("solo", 0), ("u", 0)]
    assert m.state("t") == [(2, 1, [2, 3]), (2, 0, [2, 3])]
    assert m.state("solo") == [(-1, 1, [1])]
    assert m.state("u") == [(-1, 1, [1])]  # no unclean election: 1 still has the data
    assert m.image.brokers[1].fenced and m.image.brokers[1].shutting_down
    restored = MetadataImage.from_snapshot(m.image.to_snapshot())
    assert restored.brokers[1].shutting_down
    assert decode_command(encode_command(ControlledShutdown(1))) == ControlledShutdown(1)
    m.apply(RegisterBroker(1, "localhost", 9091))  # restarted: still fenced until the controller hears it
    assert m.image.brokers[1].fenced and not m.image.brokers[1].shutting_down
    assert m.apply(UnfenceBroker(1)) == [("solo", 0), ("u", 0)]


def test_fencing_survives_re_registration_snapshots_and_the_wire() -> None:
    m = Image()
    m.create("t", [[1, 2, 3]])
    m.apply(FenceBroker(1))
    m.apply(RegisterBroker(1, "elsewhere", 1))
    assert m.image.brokers[1].fenced
    restored = MetadataImage.from_snapshot(m.image.to_snapshot())
    assert restored.live_brokers() == [2, 3] and restored.topics["t"].partitions[0].leader == 2
    for command in (FenceBroker(2), UnfenceBroker(3)):
        assert decode_command(encode_command(command)) == command


def test_the_controller_fences_the_longest_silent_broker_first_and_unfences_returning_ones() -> None:
    heard = {2: 10.0, 3: 8.0}
    brokers = {1: False, 2: False, 3: False}
    assert liveness_change(brokers, heard, 9.5, 2.0, controller=1) is None
    assert liveness_change(brokers, heard, 10.5, 2.0, controller=1) == FenceBroker(3)
    assert liveness_change(brokers, heard, 20.0, 2.0, controller=1) == FenceBroker(3)  # then 2, one at a time
    assert liveness_change({1: False, 2: True, 3: True}, heard, 11.0, 2.0, controller=1) == UnfenceBroker(2)
    assert liveness_change({1: True, 2: False}, {2: 11.0}, 11.0, 2.0, controller=1) == UnfenceBroker(1)  # itself
    assert liveness_change({1: False, 4: False}, {}, 100.0, 2.0, controller=1) == FenceBroker(4)  # never heard


def test_a_preferred_election_gives_leadership_back_to_the_first_replica_when_it_is_in_sync() -> None:
    from chronik.metadata import ElectLeaders

    m = Image()
    m.create("t", [[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    topic_id = m.image.topics["t"].topic_id.hex
    m.apply(FenceBroker(1))  # partition 0 moves to 2; 1 leaves every ISR
    assert m.state("t")[0] == (2, 1, [2, 3])
    m.apply(UnfenceBroker(1))
    # 1 is back but not yet in sync: the preferred leader is not available
    result = m.apply(ElectLeaders(0, [["t", 0], ["t", 1], ["t", 9], ["gone", 0]]))
    assert [(t, p, e) for t, p, e, _ in result] == [
        ("t", 0, "PREFERRED_LEADER_NOT_AVAILABLE"), ("t", 1, "ELECTION_NOT_NEEDED"),
        ("t", 9, "UNKNOWN_TOPIC_OR_PARTITION"), ("gone", 0, "UNKNOWN_TOPIC_OR_PARTITION")]
    assert m.state("t")[0] == (2, 1, [2, 3])
    m.apply(ChangeIsr("t", topic_id, 0, 2, 1, [1, 2, 3]))  # it caught up
    result = m.apply(ElectLeaders(0, [["t", 0]]))
    assert result == [["t", 0, None, None]]
    assert m.state("t")[0] == (1, 2, [1, 2, 3])  # epoch bumped, ISR unchanged
    # "every partition" leaves out the ones that needed nothing
    assert m.apply(ElectLeaders(0, None)) == []
    # a fenced preferred replica cannot lead even if still listed in the ISR
    m.apply(ChangeIsr("t", topic_id, 1, 2, 0, [1, 2, 3]))
    m.apply(FenceBroker(3))
    assert [e for _, _, e, _ in m.apply(ElectLeaders(0, None))] == ["PREFERRED_LEADER_NOT_AVAILABLE"]
    with pytest.raises(CommandRejected):
        m.apply(ElectLeaders(7, None))
    assert decode_command(encode_command(ElectLeaders(1, [["t", 0]]))) == ElectLeaders(1, [["t", 0]])


def test_an_unclean_election_gives_an_offline_partition_the_first_live_replica() -> None:
    from chronik.metadata import ElectLeaders

    m = Image()
    m.create("t", [[1, 2], [2, 1]])
    m.apply(ChangeIsr("t", m.image.topics["t"].topic_id.hex, 0, 1, 0, [1]))  # 2 fell behind
    m.apply(FenceBroker(1))  # no in-sync replica left for partition 0 (unclean election is off)
    assert m.state("t")[0] == (-1, 1, [1])
    result = m.apply(ElectLeaders(1, [["t", 0], ["t", 1]]))
    assert [(t, p, e) for t, p, e, _ in result] == [("t", 0, None), ("t", 1, "ELECTION_NOT_NEEDED")]
    assert m.state("t")[0] == (2, 2, [2])
    m.apply(FenceBroker(2))
    m.apply(UnfenceBroker(1))  # 1 is not in partition 0's ISR any more: it stays offline
    assert m.state("t")[0][0] == -1
    m.apply(FenceBroker(1))
    assert [e for _, _, e, _ in m.apply(ElectLeaders(1, [["t", 0]]))] == ["ELIGIBLE_LEADERS_NOT_AVAILABLE"]


def test_the_balancer_moves_partitions_whose_preferred_replica_is_in_sync_past_the_imbalance_share() -> None:
    from chronik.cluster.balance import preferred_leader_moves

    m = Image()
    m.create("t", [[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    assert preferred_leader_moves(m.image) == []
    m.apply(FenceBroker(1))
    assert preferred_leader_moves(m.image) == []  # 1 is fenced (and out of the ISR)
    m.apply(UnfenceBroker(1))
    topic_id = m.image.topics["t"].topic_id.hex
    m.apply(ChangeIsr("t", topic_id, 0, 2, 1, [1, 2, 3]))
    assert preferred_leader_moves(m.image) == [["t", 0]]
    assert preferred_leader_moves(m.image, percentage=100) == []  # 1 of 1 is not more than 100 %
    # one partition of many led elsewhere is within Kafka's 10 % share per broker
    b = Image()
    b.create("big", [[1, 2, 3]] * 10)
    big = b.image.topics["big"]
    big.partitions[0].leader = 2  # (as a failover would leave it)
    assert preferred_leader_moves(b.image) == []
    big.partitions[1].leader = 3
    assert preferred_leader_moves(b.image) == [["big", 0], ["big", 1]]
