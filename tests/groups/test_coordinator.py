"""The coordinator on trio's virtual clock, and committed offsets in the metadata image."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio
import trio.testing

from chronik.groups import GroupCoordinator, GroupState, JoinAnswer, JoinRequest, OffsetToCommit
from chronik.metadata import CreateTopic, DeleteTopic, MetadataImage, decode_command, encode_command
from chronik.metadata.commands import Command, CommitOffsets, DeleteGroup, DeleteOffsets
from chronik.protocol.errors import ErrorCode

from .test_group import subscription


class MemoryMetadata:
    """The image with commands applied on submit (no log): enough for the coordinator."""

    def __init__(self) -> None:
        self.image = MetadataImage()
        self.submitted: list[Command] = []

    def append(self, command: Command) -> Command:
        self.submitted.append(command)
        return command

    async def outcome(self, command: Command) -> Any:
        await trio.lowlevel.checkpoint()
        return self.image.apply(self.image.applied_offset + 1, command)

    async def submit(self, command: Command) -> Any:
        return await self.outcome(self.append(command))


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def join_request(member_id: str = "", session_ms: int = 10_000) -> JoinRequest:
    return JoinRequest(member_id, None, "c", "/h", session_ms, 20_000, "consumer", (("range", subscription("t")),), True)


async def join_fully(coordinator: GroupCoordinator, group: str, session_ms: int = 10_000) -> JoinAnswer:
    first = await coordinator.join(group, join_request(session_ms=session_ms))
    assert first.error == ErrorCode.MEMBER_ID_REQUIRED
    return await coordinator.join(group, join_request(first.member_id, session_ms))


def offset(topic: str, partition: int, value: int) -> OffsetToCommit:
    return OffsetToCommit(topic, partition, value, 3, "meta")


async def test_join_waits_for_the_initial_delay_and_session_timeout_empties_the_group(autojump_clock: Any) -> None:
    metadata = MemoryMetadata()
    coordinator = GroupCoordinator(metadata, initial_rebalance_delay_ms=3000)
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        started = trio.current_time()
        answers: list[JoinAnswer] = []

        async def member() -> None:
            answers.append(await join_fully(coordinator, "g", session_ms=5000))

        async with trio.open_nursery() as members:
            for _ in range(3):
                members.start_soon(member)
        assert trio.current_time() - started == pytest.approx(3.0)
        assert {a.generation_id for a in answers} == {1} and len({a.member_id for a in answers}) == 3
        leader = next(a for a in answers if a.members)
        assert all(a.leader == leader.member_id for a in answers)
        # nobody syncs or heartbeats: the sync deadline (the rebalance timeout) removes everyone
        await trio.sleep(21)
        assert coordinator.group_state("g") == GroupState.EMPTY
        assert coordinator.heartbeat("g", leader.member_id, None, 1) == ErrorCode.UNKNOWN_MEMBER_ID
        nursery.cancel_scope.cancel()


async def test_heartbeats_keep_a_member_and_silence_expires_it(autojump_clock: Any) -> None:
    coordinator = GroupCoordinator(MemoryMetadata(), initial_rebalance_delay_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        answer = await join_fully(coordinator, "g", session_ms=1000)
        synced = await coordinator.sync("g", answer.member_id, None, 1, None, None, {answer.member_id: b"x"})
        assert synced.assignment == b"x"
        for _ in range(10):
            await trio.sleep(0.5)
            assert coordinator.heartbeat("g", answer.member_id, None, 1) == ErrorCode.NONE
        await trio.sleep(1.01)
        assert coordinator.group_state("g") == GroupState.EMPTY
        nursery.cancel_scope.cancel()


async def test_offsets_commit_fetch_delete(autojump_clock: Any) -> None:
    metadata = MemoryMetadata()
    metadata.image.apply(0, CreateTopic("t", uuid.uuid4().hex, [[1], [1]]))
    coordinator = GroupCoordinator(metadata, initial_rebalance_delay_ms=0)
    unknown = ErrorCode.GROUP_ID_NOT_FOUND
    # assign()-only consumer: generation -1, no membership
    errors = await coordinator.commit_offsets("simple", "", None, -1, [offset("t", 0, 5), offset("t", 7, 1), offset("x", 0, 1)],
                                              unknown_group=unknown)
    assert errors == [ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert len(metadata.submitted) == 1
    # "simple" exists by its offsets: a member of a generation it does not know must rejoin
    assert await coordinator.commit_offsets("simple", "m", None, 4, [offset("t", 0, 6)], unknown_group=unknown) == [
        ErrorCode.UNKNOWN_MEMBER_ID]
    assert await coordinator.commit_offsets("nobody", "m", None, 4, [offset("t", 0, 6)], unknown_group=unknown) == [unknown]
    assert await coordinator.commit_offsets("", "", None, -1, [offset("t", 0, 6)], unknown_group=unknown) == [ErrorCode.INVALID_GROUP_ID]
    too_long = OffsetToCommit("t", 1, 1, -1, "x" * 5000)
    assert await coordinator.commit_offsets("simple", "", None, -1, [too_long], unknown_group=unknown) == [ErrorCode.OFFSET_METADATA_TOO_LARGE]
    fetched = coordinator.committed_offsets("simple", [("t", 0), ("t", 1)])
    assert [(t, p, o.offset if o else None) for t, p, o in fetched] == [("t", 0, 5), ("t", 1, None)]
    assert fetched[0][2] is not None and (fetched[0][2].leader_epoch, fetched[0][2].metadata) == (3, "meta")
    assert [g.group_id for g in coordinator.list_groups()] == ["simple"]
    described = coordinator.describe("simple")
    assert described is not None and described.state == "Empty"
    assert coordinator.describe("nope") is None
    assert await coordinator.delete_offsets("simple", [("t", 0), ("zz", 0)]) == (ErrorCode.NONE, [ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION])
    assert coordinator.committed_offsets("simple", None) == []
    assert await coordinator.delete_group("simple") == ErrorCode.GROUP_ID_NOT_FOUND


async def test_member_commits_and_group_deletion(autojump_clock: Any) -> None:
    metadata = MemoryMetadata()
    metadata.image.apply(0, CreateTopic("t", uuid.uuid4().hex, [[1]]))
    coordinator = GroupCoordinator(metadata, initial_rebalance_delay_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        answer = await join_fully(coordinator, "g")
        member = answer.member_id
        commit = coordinator.commit_offsets
        assert await commit("g", member, None, 1, [offset("t", 0, 1)], unknown_group=ErrorCode.ILLEGAL_GENERATION) == [ErrorCode.REBALANCE_IN_PROGRESS]
        await coordinator.sync("g", member, None, 1, None, None, {})
        assert await commit("g", member, None, 1, [offset("t", 0, 1)], unknown_group=ErrorCode.ILLEGAL_GENERATION) == [ErrorCode.NONE]
        assert await commit("g", member, None, 0, [offset("t", 0, 1)], unknown_group=ErrorCode.ILLEGAL_GENERATION) == [ErrorCode.ILLEGAL_GENERATION]
        assert await commit("g", "other", None, 1, [offset("t", 0, 1)], unknown_group=ErrorCode.ILLEGAL_GENERATION) == [ErrorCode.UNKNOWN_MEMBER_ID]
        assert await coordinator.delete_group("g") == ErrorCode.NON_EMPTY_GROUP
        assert await coordinator.delete_offsets("g", [("t", 0)]) == (ErrorCode.NONE, [ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC])
        assert coordinator.leave("g", [(member, None)]) == (ErrorCode.NONE, [ErrorCode.NONE])
        assert coordinator.group_state("g") == GroupState.EMPTY
        assert [(g.group_id, g.protocol_type, g.state) for g in coordinator.list_groups()] == [("g", "consumer", "Empty")]
        assert await coordinator.delete_group("g") == ErrorCode.NONE
        assert coordinator.list_groups() == [] and "g" not in metadata.image.group_offsets
        assert coordinator.heartbeat("g", member, None, 1) == ErrorCode.UNKNOWN_MEMBER_ID
        assert coordinator.heartbeat("", member, None, 1) == ErrorCode.INVALID_GROUP_ID
        assert (await coordinator.join("", join_request())).error == ErrorCode.INVALID_GROUP_ID
        assert (await coordinator.join("g", join_request("stale"))).error == ErrorCode.UNKNOWN_MEMBER_ID
        nursery.cancel_scope.cancel()


def test_offset_commands_round_trip_and_snapshot() -> None:
    commands: list[Command] = [
        CommitOffsets("g", [["t", 0, 10, 2, "m"], ["t", 1, 11, -1, None]]),
        DeleteOffsets("g", [["t", 1]]),
        DeleteGroup("g"),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command
    image = MetadataImage()
    topic_id = uuid.uuid4().hex
    image.apply(0, CreateTopic("t", topic_id, [[1], [1]]))
    image.apply(1, CreateTopic("u", uuid.uuid4().hex, [[1]]))
    assert image.apply(2, CommitOffsets("g", [["t", 0, 10, 2, "m"], ["t", 5, 1, -1, None], ["u", 0, 3, -1, None]])) == [
        None, "UNKNOWN_TOPIC_OR_PARTITION", None]
    image.apply(3, CommitOffsets("h", [["t", 1, 4, -1, None]]))
    restored = MetadataImage.from_snapshot(image.to_snapshot())
    assert restored.group_offsets == image.group_offsets
    image.apply(4, DeleteTopic("t", topic_id))
    assert set(image.group_offsets) == {"g"} and list(image.group_offsets["g"]) == [("u", 0)]
    assert image.apply(5, DeleteOffsets("g", [["u", 0]])) == 1 and image.group_offsets == {}
    assert image.apply(6, DeleteGroup("nobody")) == 0


class SwitchableRole:
    """A coordinator role a test flips: ``error`` None means this node coordinates."""

    def __init__(self) -> None:
        self.error: ErrorCode | None = None
        self.coordinator_epoch = 1

    def coordinator_error(self) -> ErrorCode | None:
        return self.error


async def test_losing_coordination_refuses_requests_and_releases_parked_joins(autojump_clock: Any) -> None:
    metadata = MemoryMetadata()
    metadata.image.apply(0, CreateTopic("t", uuid.uuid4().hex, [[1]]))
    role = SwitchableRole()
    coordinator = GroupCoordinator(metadata, initial_rebalance_delay_ms=3000, role=role)
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        first = await coordinator.join("g", join_request())
        parked: list[JoinAnswer] = []

        async def join() -> None:
            parked.append(await coordinator.join("g", join_request(first.member_id)))

        nursery.start_soon(join)
        await trio.sleep(1)  # parked in the initial rebalance delay
        role.error = ErrorCode.NOT_COORDINATOR
        await trio.sleep(0.2)  # the run loop notices within ROLE_CHECK_SECONDS
        assert [a.error for a in parked] == [ErrorCode.NOT_COORDINATOR]
        assert coordinator.group_state("g") is None
        assert coordinator.heartbeat("g", first.member_id, None, 1) == ErrorCode.NOT_COORDINATOR
        staged = coordinator.stage_commit("g", "", None, -1, [offset("t", 0, 5)], unknown_group=ErrorCode.ILLEGAL_GENERATION)
        assert staged.errors == [ErrorCode.NOT_COORDINATOR] and metadata.submitted == []
        assert coordinator.list_groups() == []
        assert coordinator.availability() == ErrorCode.NOT_COORDINATOR

        role.error = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS  # elected again, still applying
        assert (await coordinator.join("g", join_request())).error == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        role.error = None
        assert (await coordinator.join("g", join_request())).error == ErrorCode.MEMBER_ID_REQUIRED
        assert coordinator.group_state("g") is not None
        role.coordinator_epoch = 2  # coordination may have been elsewhere meanwhile: start afresh
        assert coordinator.availability() is None and coordinator.group_state("g") is None
        nursery.cancel_scope.cancel()
