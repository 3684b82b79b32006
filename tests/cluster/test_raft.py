"""Unit tests of the consensus core's rules, one event at a time."""

from __future__ import annotations

import ast
import pathlib

import pytest

from chronik.cluster import messages, raft
from chronik.cluster.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Snapshot,
    SnapshotRequest,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)
from chronik.cluster.raft import (
    Action,
    AppendLog,
    CommitAdvanced,
    DurableState,
    InstallSnapshot,
    NotLeader,
    PersistHardState,
    QuorumView,
    RaftConfig,
    RaftNode,
    Role,
    Send,
    TruncateLog,
    VoterProgress,
)

VOTERS = (1, 2, 3)
TIMEOUT = 1.0


def node(node_id: int = 1, *, voters: tuple[int, ...] = VOTERS, pre_vote: bool = False, chunk: int = 1 << 20, **durable) -> RaftNode:  # type: ignore[no-untyped-def]
    config = RaftConfig(
        node_id, voters, election_timeout=TIMEOUT, heartbeat_interval=0.1, pre_vote=pre_vote, max_snapshot_chunk=chunk
    )
    return RaftNode(config, DurableState(**durable), lambda: 0.5, now=0.0)


def entries(*epochs: int) -> tuple[Entry, ...]:
    return tuple(Entry(epoch, b"e%d" % i) for i, epoch in enumerate(epochs))


def sent(actions: list[Action]) -> list:  # type: ignore[type-arg]
    return [a.message for a in actions if isinstance(a, Send)]


def persist_all(n: RaftNode, actions: list[Action], now: float = 0.0) -> list[Action]:
    """Report every PersistHardState in ``actions`` durable; returns what that released."""
    released: list[Action] = []
    for action in actions:
        if isinstance(action, PersistHardState):
            released += n.hard_state_durable(now, action.term, action.voted_for)
    return released


def elect(n: RaftNode, now: float = 10.0) -> list[Action]:
    """Make ``n`` (pre_vote off) leader of term + 1 with the votes of every other voter."""
    actions = n.tick(now)
    actions += persist_all(n, actions, now)
    for voter in n.config.voters:
        if voter != n.node_id:
            actions += n.receive(now, VoteResponse(n.term, voter, n.node_id, True))
    assert n.role is Role.LEADER
    return actions


def test_vote_is_durable_before_it_is_sent() -> None:
    n = node(1)
    actions = n.receive(0.0, VoteRequest(1, 2, 1, last_epoch=0, log_end=0))
    assert [a for a in actions if isinstance(a, PersistHardState)] == [
        PersistHardState(1, None),
        PersistHardState(1, 2),
    ]
    assert sent(actions) == []  # held until the vote is durable
    assert n.hard_state_durable(0.0, 1, None) == []
    assert sent(n.hard_state_durable(0.0, 1, 2)) == [VoteResponse(1, 1, 2, True)]


def test_one_vote_per_term() -> None:
    n = node(1)
    persist_all(n, n.receive(0.0, VoteRequest(1, 2, 1, 0, 0)))
    assert sent(n.receive(0.0, VoteRequest(1, 3, 1, 0, 0))) == [VoteResponse(1, 1, 3, False)]
    assert sent(n.receive(0.0, VoteRequest(1, 2, 1, 0, 0))) == [VoteResponse(1, 1, 2, True)]  # a retry
    assert n.voted_for == 2


def test_stale_term_vote_request_is_refused_with_our_term() -> None:
    n = node(1, term=5)
    assert sent(n.receive(0.0, VoteRequest(4, 2, 1, 9, 100))) == [VoteResponse(5, 1, 2, False)]


@pytest.mark.parametrize(
    ("last_epoch", "log_end", "granted"),
    [
        (2, 3, True),  # same log
        (2, 4, True),  # longer, same last epoch
        (2, 2, False),  # shorter, same last epoch
        (1, 10, False),  # longer, but older last epoch
        (3, 1, True),  # shorter, but newer last epoch
    ],
)
def test_vote_only_for_an_up_to_date_log(last_epoch: int, log_end: int, granted: bool) -> None:
    n = node(1, term=2, entries=entries(1, 2, 2))
    actions = n.receive(0.0, VoteRequest(3, 2, 1, last_epoch, log_end))
    actions += persist_all(n, actions)
    assert sent(actions) == [VoteResponse(3, 1, 2, granted)]


def test_candidate_leads_only_once_its_own_vote_is_durable() -> None:
    n = node(1, voters=(1,))
    actions = n.tick(5.0)
    assert n.role is Role.CANDIDATE and PersistHardState(1, 1) in actions
    actions = n.hard_state_durable(5.0, 1, 1)
    assert n.role is Role.LEADER
    assert AppendLog(0, (Entry(1, b"", control=True),)) in actions
    assert not any(isinstance(a, CommitAdvanced) for a in actions)  # the no-op is not durable yet
    assert n.log_durable(5.0, 1, 1) == [CommitAdvanced(1)]


def test_pre_vote_changes_no_term_and_respects_a_live_leader() -> None:
    n = node(1, pre_vote=True)
    actions = n.tick(5.0)
    assert n.role is Role.PRE_CANDIDATE and n.term == 0
    assert not any(isinstance(a, PersistHardState) for a in actions)
    assert {m.term for m in sent(actions)} == {1} and all(m.pre_vote for m in sent(actions))

    follower = node(2, pre_vote=True)
    follower.receive(5.0, AppendRequest(1, 3, 2, 0, 0, (), 0))
    persist_all(follower, [PersistHardState(1, None)])
    assert sent(follower.receive(5.5, VoteRequest(2, 1, 2, 0, 0, pre_vote=True))) == [
        VoteResponse(1, 2, 1, False, pre_vote=True)
    ]
    # once the leader has been silent for an election timeout, the pre-vote is granted
    assert sent(follower.receive(6.5, VoteRequest(2, 1, 2, 0, 0, pre_vote=True))) == [
        VoteResponse(2, 2, 1, True, pre_vote=True)
    ]
    assert follower.term == 1


def test_follower_truncates_the_divergent_suffix_only() -> None:
    n = node(2, term=1, entries=entries(1, 1, 1))
    actions = n.receive(0.0, AppendRequest(2, 1, 2, 1, 1, entries(2, 2), leader_commit=0))
    assert [a for a in actions if isinstance(a, TruncateLog | AppendLog)] == [
        TruncateLog(1),
        AppendLog(1, entries(2, 2)),
    ]
    assert [n.entry(i).epoch for i in range(n.log_end)] == [1, 2, 2]
    # a delayed, shorter copy of the same request truncates nothing
    actions = n.receive(0.0, AppendRequest(2, 1, 2, 1, 1, entries(2), leader_commit=0))
    assert not any(isinstance(a, TruncateLog | AppendLog) for a in actions)
    assert n.log_end == 3


def test_follower_rejects_a_gap_or_mismatch_with_a_hint() -> None:
    n = node(2, term=2, entries=entries(1, 1, 1, 1))
    (response,) = sent(n.receive(0.0, AppendRequest(2, 1, 2, 6, 2, (), 0)))
    assert response == AppendResponse(2, 2, 1, False, 4, 0)  # too short: try at our end
    (response,) = sent(n.receive(0.0, AppendRequest(2, 1, 2, 3, 2, (), 0)))
    assert not response.success and response.match_end == 0  # start of our epoch-1 run


def test_follower_commits_only_the_prefix_known_to_match() -> None:
    n = node(2, term=1, entries=entries(1, 1, 1, 1))
    actions = n.receive(0.0, AppendRequest(2, 1, 2, 0, 0, entries(1), leader_commit=4))
    assert CommitAdvanced(1) in actions  # offsets 1..3 may still be divergent
    actions = persist_all(n, actions)
    (ack,) = sent(actions)
    assert ack == AppendResponse(2, 2, 1, True, 1, 1)


def test_follower_acks_only_durable_entries() -> None:
    n = node(2, term=1)
    actions = n.receive(0.0, AppendRequest(1, 1, 2, 0, 0, entries(1, 1), leader_commit=0))
    assert sent(actions) == [AppendResponse(1, 2, 1, True, 2, 0)]
    assert n.log_durable(0.0, 1, 0) == []  # wrong epoch for offset 0: a stale report
    assert sent(n.log_durable(0.0, 2, 1)) == [AppendResponse(1, 2, 1, True, 2, 2)]


def test_leader_commits_by_counting_only_entries_of_its_own_term() -> None:
    """Raft section 5.4.2 (Figure 8): replicas of an older term's entry do not commit it."""
    leader = node(1, term=2, voted_for=None, entries=entries(1, 2))
    elect(leader)
    assert leader.term == 3 and leader.log_end == 3  # + the no-op of term 3
    leader.log_durable(10.0, 3, 3)
    # follower 2 has offsets 0..1 (epochs 1, 2) durable, not yet the no-op
    actions = leader.receive(10.0, AppendResponse(3, 2, 1, True, 3, 2))
    assert not any(isinstance(a, CommitAdvanced) for a in actions)
    assert leader.commit_end == 0
    actions = leader.receive(10.0, AppendResponse(3, 2, 1, True, 3, 3))
    assert CommitAdvanced(3) in actions


def test_leader_counts_only_its_own_durable_entries() -> None:
    leader = node(1)
    elect(leader)
    offset, _ = leader.propose(10.0, b"x")
    assert offset == 1
    # follower 2 has both entries durable, the leader has neither: one copy of three
    assert leader.receive(10.0, AppendResponse(1, 2, 1, True, 2, 2)) == []
    actions = leader.log_durable(10.0, 2, 1)
    assert actions[0] == CommitAdvanced(2)
    # ...and the followers hear of the new commit end at once, not at the next heartbeat
    tells = sent(actions[1:])
    assert {m.dst for m in tells} == {2, 3} and all(m.leader_commit == 2 and not m.entries for m in tells)


def test_leader_backs_up_on_rejection_and_resends() -> None:
    leader = node(1, term=1, entries=entries(1, 1, 1))
    elect(leader)
    (request,) = sent(leader.receive(10.0, AppendResponse(2, 2, 1, False, 1, 0)))
    assert isinstance(request, AppendRequest)
    assert (request.prev_end, request.prev_epoch, len(request.entries)) == (1, 1, 3)


def test_leader_without_a_quorum_steps_down() -> None:
    leader = node(1)
    elect(leader, now=10.0)
    leader.receive(10.5, AppendResponse(1, 2, 1, True, 1, 1))
    leader.tick(11.0)
    assert leader.role is Role.LEADER  # heard from 2 within the timeout
    leader.tick(12.0)
    assert leader.role is Role.FOLLOWER and leader.term == 1 and leader.leader_id is None


def test_proposal_to_a_follower_names_the_leader() -> None:
    n = node(2)
    persist_all(n, n.receive(0.0, AppendRequest(1, 3, 2, 0, 0, (), 0)))
    result, actions = n.propose(0.0, b"x")
    assert result == NotLeader(3) and actions == []


def test_higher_term_response_deposes_the_leader() -> None:
    leader = node(1)
    elect(leader)
    leader.receive(10.0, AppendResponse(7, 2, 1, False, 0, 0))
    assert leader.role is Role.FOLLOWER and leader.term == 7


def test_stale_durability_report_after_truncation_is_ignored() -> None:
    n = node(2, term=1, entries=entries(1, 1))
    n.receive(0.0, AppendRequest(2, 1, 2, 1, 1, entries(2), leader_commit=0))
    assert n.durable_end == 1
    n.log_durable(0.0, 2, 1)  # the old offset 1 (epoch 1) became durable: not what we hold now
    assert n.durable_end == 1


# ---------------------------------------------------------------- the leader's view of the quorum (DescribeQuorum)


def test_only_the_leader_describes_the_quorum_and_a_new_leader_knows_no_follower_yet() -> None:
    follower = node(2)
    persist_all(follower, follower.receive(0.0, AppendRequest(1, 3, 2, 0, 0, (), 0)))
    assert follower.quorum(1.0) == NotLeader(3)
    leader = node(1, term=4, entries=entries(1, 4))  # recovered from its disk: durable
    elect(leader)  # epoch 5; its no-op at offset 2 is not durable yet, nothing is committed yet
    assert leader.quorum(10.5) == QuorumView(1, 5, 0, (
        VoterProgress(1, 2, 10.5, 10.5), VoterProgress(2, None, None, None), VoterProgress(3, None, None, None)))


def test_quorum_view_tracks_each_followers_durable_end_and_when_it_fetched_and_caught_up() -> None:
    """Kafka's LeaderState rules: a successful answer is a fetch; caught up when the follower's
    durable end reaches the leader's own at that answer, or the leader's end as of its previous
    answer (then caught up as of that previous answer).  A rejection is no fetch."""
    leader = node(1)
    elect(leader)  # the no-op at offset 0
    leader.log_durable(10.0, 1, 1)
    assert leader.commit_end == 0  # one durable copy of three
    leader.receive(11.0, AppendResponse(1, 2, 1, True, 1, 1))  # caught up with the leader's end 1
    assert leader.commit_end == 1
    for offset in (1, 2):
        leader.propose(11.0, b"x%d" % offset)
    leader.log_durable(11.0, 3, 1)
    leader.receive(12.0, AppendResponse(1, 2, 1, True, 2, 2))  # behind the leader's 3: still caught up as of 11.0
    view = leader.quorum(12.5)
    assert isinstance(view, QuorumView) and (view.epoch, view.high_watermark) == (1, 2)
    assert view.voters[1] == VoterProgress(2, 2, 12.0, 11.0)
    leader.propose(12.5, b"x3")
    leader.log_durable(12.5, 4, 1)
    leader.receive(13.0, AppendResponse(1, 2, 1, True, 3, 3))  # reached 3, the leader's end at 12.0
    assert leader.quorum(13.0).voters[1] == VoterProgress(2, 3, 13.0, 12.0)  # type: ignore[union-attr]
    leader.receive(14.0, AppendResponse(1, 2, 1, False, 0, 0))  # a rejection is no fetch
    leader.receive(14.0, AppendResponse(1, 3, 1, True, 4, 4))
    view = leader.quorum(14.5)
    assert isinstance(view, QuorumView)
    assert view.voters == (VoterProgress(1, 4, 14.5, 14.5), VoterProgress(2, 3, 13.0, 12.0), VoterProgress(3, 4, 14.0, 14.0))
    assert view.high_watermark == 4


def test_the_quorum_view_starts_afresh_with_each_term() -> None:
    leader = node(1)
    elect(leader)
    leader.receive(10.0, AppendResponse(1, 2, 1, True, 1, 1))
    leader.receive(10.0, AppendResponse(2, 3, 1, False, 0, 0))  # deposed
    assert leader.quorum(10.0) == NotLeader(None)
    elect(leader, now=20.0)
    leader.log_durable(20.0, 2, 3)
    view = leader.quorum(20.0)
    assert isinstance(view, QuorumView) and view.epoch == 3
    assert [v.end for v in view.voters] == [2, None, None]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        RaftConfig(4, (1, 2, 3))
    with pytest.raises(ValueError):
        RaftConfig(1, (1, 1, 2))
    with pytest.raises(ValueError):
        RaftConfig(1, (1, 2, 3), election_timeout=0.1, heartbeat_interval=0.2)


def test_log_starting_after_a_snapshot() -> None:
    """A log that starts at offset 2, the entry at 1 (epoch 1) covered by a snapshot."""
    leader = node(1, term=1, log_start=2, start_epoch=1, entries=entries(1))
    assert leader.commit_end == 2  # what the snapshot covers is committed
    elect(leader)
    follower = node(2, term=1, log_start=2, start_epoch=1)
    (request,) = [m for m in sent(leader.tick(10.2)) if m.dst == 2]
    actions = follower.receive(10.2, request)
    actions += persist_all(follower, actions, 10.2)
    (reject,) = sent(actions)
    assert not reject.success and reject.match_end == 2
    (request,) = sent(leader.receive(10.2, reject))
    assert (request.prev_end, request.prev_epoch, [e.epoch for e in request.entries]) == (2, 1, [1, 2])
    follower.receive(10.2, request)
    assert follower.log_end == 4


def test_compact_forgets_only_committed_entries() -> None:
    n = node(1, voters=(1,))
    n.tick(5.0)
    n.hard_state_durable(5.0, 1, 1)
    n.propose(5.0, b"x")
    n.log_durable(5.0, 2, 1)
    with pytest.raises(ValueError):
        n.compact(Snapshot(3, 1, b"s3"))
    with pytest.raises(raft.ConsensusError):
        n.compact(Snapshot(2, 7, b"wrong epoch"))
    n.compact(Snapshot(2, 1, b"s2"))
    assert (n.log_start, n.log_end, n.commit_end, n.snapshot) == (2, 2, 2, Snapshot(2, 1, b"s2"))
    n.compact(Snapshot(1, 1, b"s1"))  # older than the log start: stale, ignored
    assert n.snapshot == Snapshot(2, 1, b"s2")
    assert n.propose(5.0, b"y")[0] == 2
    with pytest.raises(IndexError):
        n.entry(1)


# ---------------------------------------------------------------- snapshots (section 7)

SNAP = Snapshot(5, 1, bytes(range(200)))


def durable(n: RaftNode, actions: list[Action], now: float = 10.0) -> list[Action]:
    """Report hard-state writes and appends in ``actions`` durable on ``n``; what that released."""
    out = persist_all(n, actions, now)
    if any(isinstance(a, AppendLog | InstallSnapshot) for a in actions):
        out += n.log_durable(now, n.log_end, n.entry(n.log_end - 1).epoch if n.log_end > n.log_start else n.snapshot.epoch)  # type: ignore[union-attr]
    return out


def run(nodes: dict[int, RaftNode], actions: list[Action], now: float = 10.0, drop=lambda m: False) -> list[Action]:  # type: ignore[no-untyped-def]
    """Deliver messages and make every write durable at once, until nothing happens any more."""
    taken: list[Action] = []
    pending: list[tuple[int, Action]] = [(0, a) for a in actions]
    while pending:
        owner, action = pending.pop(0)
        taken.append(action)
        if isinstance(action, Send) and not drop(action.message):
            dst = action.message.dst
            more = nodes[dst].receive(now, action.message)
            more += durable(nodes[dst], more, now)
            pending += [(dst, a) for a in more]
    return taken


def lagging_cluster(follower_durable: dict | None = None, chunk: int = 64) -> tuple[RaftNode, RaftNode, list[Action]]:  # type: ignore[type-arg]
    """Leader 1 restarted from SNAP (offsets 0..4) plus two entries, elected in term 2; follower 2
    with ``follower_durable``.  Returns (leader, follower, the leader's first actions)."""
    leader = node(1, term=1, log_start=5, start_epoch=1, entries=entries(1, 1), snapshot=SNAP, chunk=chunk)
    assert leader.commit_end == 5 and leader.snapshot == SNAP
    actions = elect(leader)
    actions += leader.log_durable(10.0, leader.log_end, 2)
    follower = node(2, chunk=chunk, **(follower_durable or {}))
    return leader, follower, actions


def test_a_follower_behind_the_leaders_log_start_gets_the_snapshot_in_chunks() -> None:
    leader, follower, actions = lagging_cluster()
    nodes = {1: leader, 2: follower, 3: node(3)}
    taken = run(nodes, [a for a in actions if isinstance(a, Send)], drop=lambda m: 3 in (m.src, m.dst))
    chunks = [a.message for a in taken if isinstance(a, Send) and isinstance(a.message, SnapshotRequest) and a.message.dst == 2]
    assert [c.position for c in chunks] == [0, 64, 128, 192]  # one at a time, each at most 64 bytes
    assert all(len(c.chunk) <= 64 and (c.end, c.epoch, c.size) == (5, 1, 200) for c in chunks)
    (install,) = [a for a in taken if isinstance(a, InstallSnapshot)]
    assert install == InstallSnapshot(SNAP, discard_log=True)
    # ...then ordinary replication goes on from the snapshot's end, and commits
    assert (follower.log_start, follower.snapshot, follower.log_end) == (5, SNAP, 8)
    assert [follower.entry(i) for i in range(5, 8)] == [leader.entry(i) for i in range(5, 8)]
    assert leader.commit_end == 8 and follower.commit_end == 8


def test_install_sends_the_ack_after_the_install_and_survives_lost_chunks() -> None:
    leader, follower, actions = lagging_cluster()
    nodes = {1: leader, 2: follower, 3: node(3)}
    lost = []

    def drop(message) -> bool:  # type: ignore[no-untyped-def]
        if isinstance(message, SnapshotRequest) and message.position == 64 and not lost:
            lost.append(message)
            return True
        return False

    run(nodes, [a for a in actions if isinstance(a, Send) and a.message.dst == 2], drop=drop)
    assert lost and follower.snapshot is None  # stalled at the lost chunk
    # the next heartbeat re-sends the chunk the follower has not acknowledged
    taken = run(nodes, leader.tick(10.2), now=10.2)
    resent = [a.message for a in taken if isinstance(a, Send) and isinstance(a.message, SnapshotRequest)]
    assert resent[0].position == 64
    assert follower.snapshot == SNAP and follower.commit_end == 8
    # the follower's final answer comes after the install in its action list (the driver makes it durable first)
    order = [a for a in taken if isinstance(a, InstallSnapshot) or isinstance(a, Send) and a.message.src == 2]
    position = next(i for i, a in enumerate(order) if isinstance(a, InstallSnapshot))
    after = order[position + 1]
    assert isinstance(after, Send) and after.message == SnapshotResponse(2, 2, 1, 5, 200, True)


def test_a_transfer_keeps_its_snapshot_and_the_log_after_it_while_the_leader_compacts() -> None:
    """Otherwise a transfer slower than the leader's snapshot interval would start over forever."""
    leader, follower, actions = lagging_cluster()
    nodes = {1: leader, 2: follower, 3: node(3)}
    cut_off = lambda m: 2 in (m.src, m.dst)  # noqa: E731
    run(nodes, [a for a in actions if isinstance(a, Send)], drop=cut_off)  # 3 catches up (by snapshot too)
    offset, more = leader.propose(10.0, b"x")
    more += durable(leader, more)
    run(nodes, more, drop=cut_off)
    assert leader.commit_end == offset + 1 == 9
    # the first chunk of SNAP goes to follower 2 ...
    taken = run(nodes, leader.tick(10.2), now=10.2, drop=lambda m: isinstance(m, SnapshotResponse) or m.dst == 3)
    assert any(isinstance(a, Send) and isinstance(a.message, SnapshotRequest) and a.message.dst == 2 for a in taken)
    # ... and the leader snapshots at 9 meanwhile: it keeps the log after SNAP for the transfer
    newer = Snapshot(9, 2, b"newer")
    leader.compact(newer)
    assert (leader.snapshot, leader.log_start) == (newer, SNAP.end)
    taken = run(nodes, leader.tick(10.4), now=10.4)
    to_2 = [a.message for a in taken if isinstance(a, Send) and isinstance(a.message, SnapshotRequest) and a.message.dst == 2]
    assert to_2 and {m.end for m in to_2} == {SNAP.end} and follower.snapshot == SNAP  # not restarted with the newer
    assert follower.commit_end == leader.commit_end == 9 and follower.log_end == 9
    assert leader.log_start == 9  # transfer done: the log below the newest snapshot goes


def test_a_silent_follower_does_not_hold_back_compaction_for_ever() -> None:
    leader, follower, actions = lagging_cluster()
    nodes = {1: leader, 2: follower, 3: node(3)}
    run(nodes, [a for a in actions if isinstance(a, Send)], drop=lambda m: m.src == 2 or (m.dst == 2 and not isinstance(m, AppendRequest)))
    leader.receive(10.0, AppendResponse(2, 2, 1, False, 0, 0))  # 2 needs the snapshot; the chunk is lost
    offset, more = leader.propose(10.0, b"x")
    run(nodes, more + durable(leader, more), drop=lambda m: 2 in (m.src, m.dst))
    leader.compact(Snapshot(9, 2, b"newer"))
    assert leader.log_start == SNAP.end  # held for follower 2's transfer...
    for now in (10.5, 11.0, 11.6):
        run(nodes, leader.tick(now), now=now, drop=lambda m: 2 in (m.src, m.dst))
    assert leader.role is Role.LEADER and leader.log_start == 9  # ...until it was silent for an election timeout


def test_chunk_of_an_unknown_snapshot_asks_for_the_start_and_duplicates_are_harmless() -> None:
    follower = node(2, term=2)
    (answer,) = sent(follower.receive(0.0, SnapshotRequest(2, 1, 2, 5, 1, 200, 64, b"x" * 64)))
    assert answer == SnapshotResponse(2, 2, 1, 5, 0, False)
    first = SnapshotRequest(2, 1, 2, 5, 1, 200, 0, SNAP.data[:100])
    assert sent(follower.receive(0.0, first)) == [SnapshotResponse(2, 2, 1, 5, 100, False)]
    assert sent(follower.receive(0.0, first)) == [SnapshotResponse(2, 2, 1, 5, 100, False)]  # a duplicate
    actions = follower.receive(0.0, SnapshotRequest(2, 1, 2, 5, 1, 200, 100, SNAP.data[100:]))
    assert actions[0] == InstallSnapshot(SNAP, discard_log=True)
    assert sent(actions) == [SnapshotResponse(2, 2, 1, 5, 200, True)]
    # a delayed copy of an already installed snapshot: we have those offsets
    assert sent(follower.receive(0.0, first)) == [SnapshotResponse(2, 2, 1, 5, 200, True)]


def test_install_keeps_the_suffix_that_continues_the_snapshot() -> None:
    follower = node(2, term=2, entries=entries(1, 1, 1, 1, 1, 2, 2))  # offset 4 has the snapshot's epoch 1
    actions = follower.receive(0.0, SnapshotRequest(2, 1, 2, 5, 1, 200, 0, SNAP.data))
    assert actions[0] == InstallSnapshot(SNAP, discard_log=False)
    assert (follower.log_start, follower.log_end, follower.commit_end) == (5, 7, 5)
    assert [follower.entry(i).epoch for i in (5, 6)] == [2, 2]


def test_install_discards_a_log_that_diverges_at_the_snapshot() -> None:
    follower = node(2, term=3, entries=entries(1, 1, 1, 1, 2, 2, 2))  # offset 4 has epoch 2, the snapshot says 1
    actions = follower.receive(0.0, SnapshotRequest(3, 1, 2, 5, 1, 200, 0, SNAP.data))
    assert actions[0] == InstallSnapshot(SNAP, discard_log=True)
    assert (follower.log_start, follower.log_end, follower.commit_end, follower.durable_end) == (5, 5, 5, 5)
    assert follower.log_durable(0.0, 7, 2) == []  # a late report about the discarded log is ignored
    assert follower.durable_end == 5


def test_a_snapshot_below_the_commit_end_is_acknowledged_without_installing() -> None:
    follower = node(2, term=2, entries=entries(1, 1, 1, 1, 1, 1, 1))
    follower.receive(0.0, AppendRequest(2, 1, 2, 7, 1, (), leader_commit=7))
    actions = follower.receive(0.0, SnapshotRequest(2, 1, 2, 5, 1, 200, 0, SNAP.data[:64]))
    assert not any(isinstance(a, InstallSnapshot) for a in actions)
    assert sent(actions) == [SnapshotResponse(2, 2, 1, 5, 200, True)]
    assert follower.log_start == 0


def test_restart_from_a_snapshot_commits_from_its_end_and_keeps_safety() -> None:
    n = node(2, term=1, log_start=5, start_epoch=1, entries=entries(1, 2), snapshot=SNAP)
    assert (n.commit_end, n.durable_end, n.log_end) == (5, 7, 7)
    # a vote compares with the last entry (or the snapshot's epoch when the log is empty)
    empty = node(3, term=1, log_start=5, start_epoch=1, snapshot=SNAP)
    (vote,) = sent(persist_all(empty, empty.receive(0.0, VoteRequest(2, 1, 3, last_epoch=1, log_end=4))))
    assert not vote.granted
    # an append whose previous entry is the snapshot's last one is accepted
    actions = empty.receive(0.0, AppendRequest(2, 1, 3, 5, 1, entries(2), leader_commit=6))
    assert AppendLog(5, entries(2)) in actions and CommitAdvanced(6) in actions
    with pytest.raises(ValueError):
        DurableState(log_start=4, start_epoch=1, snapshot=SNAP)


def test_core_has_no_io_clock_or_randomness_of_its_own() -> None:
    for module in (raft, messages):
        tree = ast.parse(pathlib.Path(module.__file__).read_text())
        imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not {name.split(".")[0] for name in imported} & {"trio", "os", "time", "random", "socket"}
