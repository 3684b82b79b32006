"""The sans-I/O group state machine, driven with explicit times (milliseconds) and tokens."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Hashable

import pytest

from chronik.groups.group import (
    NEW_MEMBER_JOIN_TIMEOUT_MS,
    Group,
    GroupState,
    JoinAnswer,
    JoinRequest,
    Reply,
    SyncAnswer,
    consumer_subscription_topics,
)
from chronik.protocol.errors import ErrorCode

DELAY = 3000
SESSION = 10_000
REBALANCE = 30_000


def subscription(*topics: str) -> bytes:
    body = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        body += struct.pack(">h", len(topic)) + topic.encode()
    return body + struct.pack(">i", -1)


def request(member_id: str = "", instance: str | None = None, protocols: tuple[tuple[str, bytes], ...] | None = None,
            session: int = SESSION, rebalance: int = REBALANCE, required: bool = False) -> JoinRequest:
    return JoinRequest(member_id, instance, "client", "/127.0.0.1", session, rebalance, "consumer",
                       protocols or (("range", subscription("t")),), required)


def new_group(delay: int = DELAY) -> Group:
    counter = itertools.count(1)
    return Group("g", initial_rebalance_delay_ms=delay, new_member_id=lambda prefix: f"{prefix}-{next(counter)}")


def answers(replies: list[Reply]) -> dict[Hashable, JoinAnswer | SyncAnswer]:
    out = {r.token: r.answer for r in replies}
    assert len(out) == len(replies), "a token got two replies"
    return out


def join_one(group: Group, now: float, token: str, **kwargs: object) -> JoinAnswer:
    """Join and let the initial delay pass; returns the member's answer."""
    replies = group.join(now, token, request(**kwargs))  # type: ignore[arg-type]
    if not replies:
        replies = group.tick(now + DELAY)
    answer = answers(replies)[token]
    assert isinstance(answer, JoinAnswer)
    return answer


def stable_pair(group: Group) -> tuple[str, str]:
    """Two members in a Stable group, generation 1; returns (leader, follower)."""
    assert group.join(0, "a", request()) == []
    assert group.join(10, "b", request()) == []
    done = answers(group.tick(10 + DELAY))
    a, b = done["a"], done["b"]
    assert isinstance(a, JoinAnswer) and isinstance(b, JoinAnswer)
    assert a.generation_id == b.generation_id == 1 and a.leader == a.member_id
    assert {m[0] for m in a.members} == {a.member_id, b.member_id} and b.members == ()
    assert group.sync(20, "sb", b.member_id, None, 1, None, None, {}) == []
    synced = answers(group.sync(30, "sa", a.member_id, None, 1, "consumer", "range",
                                {a.member_id: b"A", b.member_id: b"B"}))
    assert synced == {"sa": SyncAnswer(ErrorCode.NONE, "consumer", "range", b"A"),
                      "sb": SyncAnswer(ErrorCode.NONE, "consumer", "range", b"B")}
    assert group.state == GroupState.STABLE
    return a.member_id, b.member_id


def test_member_id_required_then_initial_delay() -> None:
    group = new_group()
    first = answers(group.join(0, "t1", request(required=True)))["t1"]
    assert isinstance(first, JoinAnswer) and first.error == ErrorCode.MEMBER_ID_REQUIRED and first.member_id
    assert group.state == GroupState.EMPTY and group.next_deadline() == SESSION
    assert group.join(5, "t2", request(first.member_id, required=True)) == []
    assert group.state == GroupState.PREPARING_REBALANCE
    assert group.tick(5 + DELAY - 1) == []
    done = answers(group.tick(5 + DELAY))["t2"]
    assert isinstance(done, JoinAnswer)
    assert (done.error, done.generation_id, done.leader, done.member_id) == (ErrorCode.NONE, 1, first.member_id, first.member_id)
    assert done.protocol_name == "range" and done.members[0][0] == first.member_id


def test_pending_member_id_expires_after_session_timeout() -> None:
    group = new_group()
    first = answers(group.join(0, "t1", request(required=True)))["t1"]
    group.tick(SESSION)
    assert group.pending_members == {} and group.next_deadline() is None
    late = answers(group.join(SESSION + 1, "t2", request(first.member_id, required=True)))["t2"]
    assert isinstance(late, JoinAnswer) and late.error == ErrorCode.UNKNOWN_MEMBER_ID


def test_initial_delay_extends_with_new_members_but_not_past_rebalance_timeout() -> None:
    group = new_group()
    group.join(0, "a", request(rebalance=5000))
    group.join(2000, "b", request(rebalance=5000))
    assert group.tick(3000) == []  # b joined 1000 ms ago: wait one delay from the latest join
    group.join(4000, "c", request(rebalance=5000))
    assert group.next_deadline() == 5000  # bounded by the rebalance timeout after the first join
    done = answers(group.tick(5000))
    assert set(done) == {"a", "b", "c"} and all(a.error == ErrorCode.NONE for a in done.values())


def test_zero_initial_delay_completes_at_once() -> None:
    group = new_group(delay=0)
    done = answers(group.join(0, "a", request()))
    assert done["a"].error == ErrorCode.NONE and group.state == GroupState.COMPLETING_REBALANCE


def test_rebalance_completes_as_soon_as_everyone_rejoined() -> None:
    group = new_group()
    leader, follower = stable_pair(group)
    assert group.join(100, "c", request()) == []
    assert group.state == GroupState.PREPARING_REBALANCE
    assert group.heartbeat(110, leader, None, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    assert group.join(120, "a2", request(leader)) == []
    done = answers(group.join(130, "b2", request(follower)))
    assert set(done) == {"a2", "b2", "c"}
    assert {a.generation_id for a in done.values()} == {2}
    assert group.state == GroupState.COMPLETING_REBALANCE


def test_member_that_does_not_rejoin_is_dropped_at_session_timeout() -> None:
    group = new_group()
    leader, follower = stable_pair(group)
    group.heartbeat(1000, leader, None, 1)
    group.heartbeat(1000, follower, None, 1)
    assert group.leave(2000, [(follower, None)])[0] == [ErrorCode.NONE]
    # the leader stops heartbeating: it expires SESSION after its last heartbeat, not after the rebalance timeout
    assert group.tick(1000 + SESSION - 1) == []
    group.tick(1000 + SESSION)
    assert group.members == {} and group.state == GroupState.EMPTY and group.generation == 2


def test_rebalance_timeout_removes_members_that_keep_heartbeating_but_never_rejoin() -> None:
    group = new_group()
    leader, follower = stable_pair(group)
    group.join(100, "c", request(rebalance=1000))
    group.join(100, "a2", request(leader, rebalance=1000))
    assert group.heartbeat(900, follower, None, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    done = answers(group.tick(group.next_deadline() or 0))
    assert set(done) == {"a2", "c"} and follower not in group.members


def test_sync_passes_assignment_through_and_checks_generation() -> None:
    group = new_group()
    leader, follower = stable_pair(group)
    assert answers(group.sync(40, "x", follower, None, 7, None, None, {}))["x"].error == ErrorCode.ILLEGAL_GENERATION
    assert answers(group.sync(40, "y", "nobody", None, 1, None, None, {}))["y"].error == ErrorCode.UNKNOWN_MEMBER_ID
    again = answers(group.sync(40, "z", follower, None, 1, None, None, {}))["z"]
    assert again == SyncAnswer(ErrorCode.NONE, "consumer", "range", b"B")
    wrong = answers(group.sync(40, "w", follower, None, 1, None, "roundrobin", {}))["w"]
    assert wrong.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    group.join(50, "c", request())
    assert answers(group.sync(60, "v", follower, None, 1, None, None, {}))["v"].error == ErrorCode.REBALANCE_IN_PROGRESS


def test_new_rebalance_during_sync_answers_waiting_syncs() -> None:
    group = new_group(delay=0)
    a = answers(group.join(0, "a", request()))["a"]
    assert isinstance(a, JoinAnswer)
    b_replies = group.join(1, "b", request())  # rebalance: a must rejoin
    assert b_replies == []
    done = answers(group.join(2, "a2", request(a.member_id)))
    b = done["b"]
    assert isinstance(b, JoinAnswer)
    assert group.sync(3, "sb", b.member_id, None, b.generation_id, None, None, {}) == []
    replies = answers(group.join(4, "c", request()))
    assert replies["sb"].error == ErrorCode.REBALANCE_IN_PROGRESS


def test_sync_deadline_drops_members_that_never_sync() -> None:
    group = new_group(delay=0)
    a = answers(group.join(0, "a", request(rebalance=500)))["a"]
    assert isinstance(a, JoinAnswer) and group.state == GroupState.COMPLETING_REBALANCE
    group.tick(500)
    assert group.members == {} and group.state == GroupState.EMPTY


def stable_static_pair(group: Group, a: tuple[tuple[str, bytes], ...] | None = None,
                       b: tuple[tuple[str, bytes], ...] | None = None) -> tuple[JoinAnswer, JoinAnswer]:
    """Static members i-a (leader) and i-b with these protocols, Stable in generation 1 with
    assignments A and B; their join answers."""
    group.join(0, "a", request(instance="i-a", protocols=a))
    group.join(0, "b", request(instance="i-b", protocols=b))
    done = answers(group.tick(DELAY))
    first, second = done["a"], done["b"]
    assert isinstance(first, JoinAnswer) and isinstance(second, JoinAnswer)
    group.sync(DELAY, "sb", second.member_id, "i-b", 1, None, None, {})
    group.sync(DELAY, "sa", first.member_id, "i-a", 1, None, None, {first.member_id: b"A", second.member_id: b"B"})
    assert group.state == GroupState.STABLE
    return first, second


def test_static_member_restart_keeps_assignment_without_rebalance() -> None:
    group = new_group()
    a, b = stable_static_pair(group)
    restarted = answers(group.join(DELAY + 100, "b2", request(instance="i-b")))["b2"]
    assert isinstance(restarted, JoinAnswer)
    assert restarted.error == ErrorCode.NONE and restarted.generation_id == 1 and restarted.member_id != b.member_id
    assert group.state == GroupState.STABLE
    synced = answers(group.sync(DELAY + 110, "s", restarted.member_id, "i-b", 1, None, None, {}))["s"]
    assert synced.assignment == b"B"
    assert group.heartbeat(DELAY + 120, b.member_id, "i-b", 1) == ErrorCode.FENCED_INSTANCE_ID
    assert group.commit_problem(DELAY + 120, b.member_id, "i-b", 1) == ErrorCode.FENCED_INSTANCE_ID
    # a restarted static leader is told to skip the assignment (it keeps the current one)
    leader = answers(group.join(DELAY + 130, "a2", request(instance="i-a")))["a2"]
    assert isinstance(leader, JoinAnswer) and leader.skip_assignment and len(leader.members) == 2
    assert group.leader == leader.member_id and group.generation == 1


def test_static_member_restart_with_new_metadata_keeps_the_generation() -> None:
    """A restarted Java consumer sends other subscription bytes (it owns no partitions and has no
    generation yet): as in Kafka, only a change of the selected protocol rebalances; the leader
    is given the new metadata."""
    group = new_group()
    stable_static_pair(group, a=(("range", b"owned 0,1 gen 1"),))
    leader = answers(group.join(DELAY + 10, "a2", request(instance="i-a", protocols=(("range", b"fresh"),))))["a2"]
    assert isinstance(leader, JoinAnswer) and leader.error == ErrorCode.NONE and leader.skip_assignment
    assert group.state == GroupState.STABLE and group.generation == 1
    assert (leader.member_id, "i-a", b"fresh") in leader.members


def test_static_member_restart_that_changes_the_selected_protocol_rebalances() -> None:
    group = new_group()
    a, _ = stable_static_pair(group, a=(("roundrobin", b""), ("range", b"")), b=(("range", b""), ("roundrobin", b"")))
    assert a.protocol_name == "roundrobin"  # a tie: the leader's order
    assert group.join(DELAY + 10, "a2", request(instance="i-a", protocols=(("range", b""), ("roundrobin", b"")))) == []
    assert group.state == GroupState.PREPARING_REBALANCE


def test_static_member_leaves_by_instance_id() -> None:
    group = new_group(delay=0)
    a = answers(group.join(0, "a", request(instance="i-a")))["a"]
    errors, _ = group.leave(1, [("wrong-id", "i-a"), ("", "i-x"), ("", "i-a")])
    assert errors == [ErrorCode.FENCED_INSTANCE_ID, ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.NONE]
    assert a.member_id not in group.members and group.state == GroupState.EMPTY


def test_protocol_selection_and_inconsistent_protocols() -> None:
    group = new_group()
    both = (("range", b"r"), ("roundrobin", b"rr"))
    group.join(0, "a", request(protocols=both))
    group.join(0, "b", request(protocols=(("roundrobin", b"x"),)))
    bad = answers(group.join(0, "c", request(protocols=(("sticky", b""),))))["c"]
    assert bad.error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    other_type = JoinRequest("", None, "c", "h", SESSION, REBALANCE, "connect", (("range", b""),), False)
    assert answers(group.join(0, "d", other_type))["d"].error == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    done = answers(group.tick(DELAY))
    a = done["a"]
    assert isinstance(a, JoinAnswer) and a.protocol_name == "roundrobin"
    assert sorted(m[2] for m in a.members) == [b"rr", b"x"]


def test_invalid_session_timeout() -> None:
    group = new_group()
    answer = answers(group.join(0, "a", request(session=1)))["a"]
    assert answer.error == ErrorCode.INVALID_SESSION_TIMEOUT


def test_commit_checks() -> None:
    group = new_group(delay=0)
    assert group.commit_problem(0, "", None, -1) is None  # Empty: assign()-only commits
    a = answers(group.join(0, "a", request()))["a"]
    assert isinstance(a, JoinAnswer)
    assert group.commit_problem(1, a.member_id, None, 1) == ErrorCode.REBALANCE_IN_PROGRESS
    group.sync(2, "s", a.member_id, None, 1, None, None, {a.member_id: b"A"})
    assert group.commit_problem(3, a.member_id, None, 1) is None
    assert group.commit_problem(3, a.member_id, None, 0) == ErrorCode.ILLEGAL_GENERATION
    assert group.commit_problem(3, "stranger", None, 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert group.commit_problem(3, "", None, -1) == ErrorCode.UNKNOWN_MEMBER_ID


def test_heartbeat_errors() -> None:
    group = new_group()
    leader, _ = stable_pair(group)
    assert group.heartbeat(40, leader, None, 1) == ErrorCode.NONE
    assert group.heartbeat(40, leader, None, 2) == ErrorCode.ILLEGAL_GENERATION
    assert group.heartbeat(40, "x", None, 1) == ErrorCode.UNKNOWN_MEMBER_ID


def test_new_member_waiting_in_its_first_join_is_dropped_after_the_new_member_timeout() -> None:
    group = new_group()
    leader, follower = stable_pair(group)
    long_rebalance = 10 * NEW_MEMBER_JOIN_TIMEOUT_MS
    assert group.join(100, "c", request(rebalance=long_rebalance)) == []
    replies: dict[Hashable, JoinAnswer | SyncAnswer] = {}
    for now in range(5000, NEW_MEMBER_JOIN_TIMEOUT_MS + 10_000, 5000):
        group.heartbeat(now, leader, None, 1)
        group.heartbeat(now, follower, None, 1)
        replies.update(answers(group.tick(now)))
    assert replies["c"].error == ErrorCode.UNKNOWN_MEMBER_ID
    assert set(group.members) == {leader, follower} and group.state == GroupState.PREPARING_REBALANCE


def test_retried_join_answers_the_older_request() -> None:
    group = new_group()
    leader, follower = stable_pair(group)
    group.join(100, "x1", request(leader))
    replies = answers(group.join(110, "x2", request(leader)))
    assert replies["x1"].error == ErrorCode.REBALANCE_IN_PROGRESS


def test_delete_marks_group_dead() -> None:
    group = new_group()
    group.delete()
    assert group.state == GroupState.DEAD
    assert answers(group.join(0, "a", request()))["a"].error == ErrorCode.COORDINATOR_NOT_AVAILABLE
    with pytest.raises(AssertionError):
        stable = new_group(delay=0)
        stable.join(0, "a", request())
        stable.delete()


def test_consumer_subscription_topics() -> None:
    assert consumer_subscription_topics(subscription("a", "bb")) == ["a", "bb"]
    assert consumer_subscription_topics(b"\x00") is None
    assert consumer_subscription_topics(struct.pack(">hi", 0, 5)) is None


def test_subscribed_topics_of_a_group() -> None:
    group = new_group(delay=0)
    group.join(0, "a", request(protocols=(("range", subscription("t1", "t2")),)))
    assert group.subscribed_topics() == {"t1", "t2"}
