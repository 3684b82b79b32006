"""Messages the consensus core exchanges between voters (sans-I/O, plain data).

Every message carries the sender's ``term`` (the Kafka *epoch*) and the ids of
its sender ``src`` and addressee ``dst``.  Offsets are 0-based, dense metadata
offsets; an *end* is exclusive (the offset after the last entry), like Kafka's
log end offset and high watermark.  How these objects are framed on the
replication port is the transport's business, not this module's.

Replication is *push* (Raft AppendEntries): the leader sends entries and its
commit end to each follower, the follower answers with how far its log is
known to match the leader's and how much of that is durable.  Push keeps the
leader the only place that decides what to send and lets one message type be
heartbeat, probe and catch-up at once; check-quorum falls out of the
responses.  (KRaft pulls with Fetch; the safety rules are the same.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..metadata.view import QuorumReplica


@dataclass(frozen=True, slots=True)
class Entry:
    """One metadata log entry: the epoch of the leader that created it, and its bytes.

    ``control`` entries (the no-op a new leader appends so that it can commit
    its predecessors' entries, like KRaft's LeaderChange record) take an
    offset but carry no command; the state machine skips them.
    """

    epoch: int
    payload: bytes
    control: bool = False


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote.  With ``pre_vote`` it is a Pre-Vote: ``term`` is the term the
    sender *would* campaign in (its own term + 1) and nobody changes state."""

    term: int
    src: int
    dst: int
    last_epoch: int  # epoch of the sender's last log entry (or of its snapshot)
    log_end: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """``term`` is the voter's term, or for a granted pre-vote the requested term."""

    term: int
    src: int
    dst: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """AppendEntries: ``entries`` go at offsets ``prev_end``, ``prev_end + 1``, ...

    The follower accepts them only if its entry at ``prev_end - 1`` has epoch
    ``prev_epoch`` (0 when ``prev_end == 0``); an empty request is a heartbeat.
    """

    term: int
    src: int
    dst: int
    prev_end: int
    prev_epoch: int
    entries: tuple[Entry, ...]
    leader_commit: int  # the leader's commit end (high watermark)


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """The follower's answer to an AppendRequest, or an unsolicited durability ack.

    On success, ``match_end``: the follower's log matches the leader's below
    it; ``durable_end`` (<= ``match_end``): of that prefix, this much is
    durable, which is what the leader counts towards commit.  On rejection,
    ``match_end`` is a hint: an offset at or below the first divergence, where
    the leader should try again.
    """

    term: int
    src: int
    dst: int
    success: bool
    match_end: int
    durable_end: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine's state after applying every entry below ``end``.

    ``epoch`` is the epoch of the entry at ``end - 1`` (0 when ``end == 0``):
    a log that continues the snapshot starts at ``end`` and its previous
    entry is taken to have that epoch (Raft's lastIncludedIndex/Term).
    ``data`` is opaque to consensus (the metadata image, in the broker).
    """

    end: int
    epoch: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """InstallSnapshot (Raft section 7): one chunk of the leader's snapshot.

    Sent instead of an AppendRequest to a follower that needs entries the
    leader compacted away.  ``chunk`` holds bytes ``position`` ..
    ``position + len(chunk)`` of the snapshot's ``data`` (``size`` bytes in
    all) covering offsets below ``end``, the entry at ``end - 1`` of epoch
    ``epoch``.  Chunks go one at a time (each answered), so a frame is
    bounded by the chunk size whatever the size of the snapshot.
    """

    term: int
    src: int
    dst: int
    end: int
    epoch: int
    size: int
    position: int
    chunk: bytes


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """The follower's answer about the snapshot ending at ``end``: it holds its
    first ``received`` bytes (the leader sends on from there; 0: start again),
    or, with ``done``, it has installed it (or already had those offsets)."""

    term: int
    src: int
    dst: int
    end: int
    received: int
    done: bool


Message = Union[VoteRequest, VoteResponse, AppendRequest, AppendResponse, SnapshotRequest, SnapshotResponse]


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """A follower asks the leader to propose ``payload`` (a metadata write sent to a non-controller).

    Not a Raft message: it travels on its own short connection and is answered
    on it (see :mod:`.transport`).  ``term`` is the sender's term (informational).

    ``principal`` and ``client_host``: the client whose request the payload
    is (its authenticated principal and its address), for the leader to
    authorize it with (Kafka's Envelope, KIP-590).  An empty ``principal``: the
    sending node writes on its own behalf (registration, ISR changes, ...),
    trusted as it reached the replication port, which only nodes can (mutual TLS
    when security is on).
    """

    term: int
    src: int
    dst: int
    request_id: int
    payload: bytes
    principal: str = ""
    client_host: str = ""


@dataclass(frozen=True, slots=True)
class ForwardResponse:
    """The leader's answer: the committed ``offset`` of the payload, or -1 and the
    leader it knows of (-1: none) when it does not lead or the proposal was lost.

    ``error`` (a Kafka error code, 0: none) with ``error_message``: the leader
    refused to propose the payload (offset -1), e.g. TOPIC_AUTHORIZATION_FAILED
    when its image does not allow ``principal`` the change; final, not retried."""

    term: int
    src: int
    dst: int
    request_id: int
    offset: int
    leader_id: int
    error: int = 0
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaFetchRequest:
    """A follower asks a partition's leader for batches from its own log end (data replication).

    ``fetch_offset`` is the follower's log end, all of it durable there, so
    the request also reports the follower's position.  The leader answers at
    once when it has batches from there, else parks the request up to
    ``max_wait_ms`` for new ones.  Like forwarding it is not a Raft message:
    it travels on a connection of its own (one per followed partition) and
    is answered on it.  ``term`` is unused (0).

    ``last_fetched_epoch`` is the leader epoch of the follower's last batch
    (-1: none): the leader checks that its own log has that epoch ending at
    or after ``fetch_offset`` (Kafka's Fetch v12 divergence check) and
    answers with a diverging epoch otherwise.
    """

    term: int
    src: int
    dst: int
    topic: str
    topic_id: str  # 32 hex digits
    partition: int
    fetch_offset: int
    max_wait_ms: int
    max_bytes: int
    last_fetched_epoch: int = -1


@dataclass(frozen=True, slots=True)
class ReplicaFetchResponse:
    """The leader's answer: ``error`` (a Kafka error code, 0: none), its high
    watermark and log start, and whole record batches from the requested
    offset, back to back, exactly as the leader stores them.

    ``diverging_epoch``/``diverging_end`` (-1 when the logs agree): the
    follower's last epoch is not in the leader's log as the follower has it;
    the leader's largest epoch not above it is ``diverging_epoch`` and ends at
    ``diverging_end``.  The follower truncates there (or lower) and asks again;
    no records come with such an answer."""

    term: int
    src: int
    dst: int
    error: int
    high_watermark: int
    log_start_offset: int
    records: bytes
    diverging_epoch: int = -1
    diverging_end: int = -1
    log_end_offset: int = -1
    """The leader's durable log end (what it could send): the follower's lag is measured against it."""


@dataclass(frozen=True, slots=True)
class QuorumRequest:
    """A node asks the leader how it sees the metadata quorum (Kafka's DescribeQuorum, which a
    broker forwards to the active controller).  Like a forward request it travels on a
    connection of its own and is answered on it.  ``term`` is the sender's (informational)."""

    term: int
    src: int
    dst: int
    request_id: int


@dataclass(frozen=True, slots=True)
class QuorumResponse:
    """The answer to a :class:`QuorumRequest`: ``error`` 0, ``term`` the leader's epoch, its
    ``high_watermark`` (commit end) and its ``voters`` (times on the leader's wall clock); or
    ``error`` NOT_LEADER_OR_FOLLOWER (6) from a node that does not lead, ``leader_id`` the
    leader it knows of (-1: none) and no voters."""

    term: int
    src: int
    dst: int
    request_id: int
    error: int
    leader_id: int
    high_watermark: int
    voters: tuple[QuorumReplica, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """Transport level, never seen by Raft: the node that serves a connection carrying
    Raft messages has taken ``received`` of them from it so far (sent back on the same
    connection).  A sender whose frames stay unacknowledged for the request timeout
    knows the connection stalled, and redials (see :mod:`chronik.cluster.transport`)."""

    term: int
    src: int
    dst: int
    received: int


Frame = Union[Message, ForwardRequest, ForwardResponse, ReplicaFetchRequest, ReplicaFetchResponse, QuorumRequest,
              QuorumResponse, Ack]
