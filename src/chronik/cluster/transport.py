"""The replication port: Raft messages as length-prefixed binary frames over TCP.

Wire format (version 5, all integers big-endian)
------------------------------------------------
A connection carries frames, back to back, mostly in one direction (each node
dials every peer for what it sends and serves what peers dial in; what comes
back is an answer or an acknowledgement, below)::

    0  4  length   of the body, in bytes (at most ``max_frame_bytes``)
    4  .  body

Body::

    0  1  version  (1)
    1  1  type     1 VoteRequest, 2 VoteResponse, 3 AppendRequest, 4 AppendResponse,
                   5 ForwardRequest, 6 ForwardResponse, 7 ReplicaFetchRequest,
                   8 ReplicaFetchResponse, 9 SnapshotRequest, 10 SnapshotResponse, 11 Ack,
                   12 QuorumRequest, 13 QuorumResponse
    2  .  fields, in the order of the dataclass in :mod:`chronik.cluster.messages`:
          term u64, src i32, dst i32, then
          VoteRequest     last_epoch u64, log_end u64, pre_vote u8
          VoteResponse    granted u8, pre_vote u8
          AppendRequest   prev_end u64, prev_epoch u64, leader_commit u64, count u32,
                          then per entry: epoch u64, flags u8 (bit 0: control),
                          length u32, payload
          AppendResponse  success u8, match_end u64, durable_end u64
          ForwardRequest  request_id u64, principal str16, client_host str16,
                          length u32, payload
          ForwardResponse request_id u64, offset i64, leader_id i32, error i16,
                          error_message str16
                          (the header's term: the epoch of the entry at offset)
          ReplicaFetchRequest  topic_id 16 bytes, partition i32, fetch_offset u64,
                               max_wait_ms u32, max_bytes u32, last_fetched_epoch i32,
                               length u16, topic (UTF-8)
          ReplicaFetchResponse error i16, high_watermark i64, log_start_offset i64,
                               diverging_epoch i32, diverging_end i64, log_end_offset i64,
                               length u32, records
          SnapshotRequest  end u64, epoch u64, size u64, position u64,
                           length u32, chunk (at most RaftConfig.max_snapshot_chunk bytes)
          SnapshotResponse end u64, received u64, done u8
          Ack              received u64
          QuorumRequest    request_id u64
          QuorumResponse   request_id u64, error i16, leader_id i32, high_watermark i64,
                           count u32, then per voter: replica_id i32, log_end_offset i64,
                           last_fetch_timestamp i64, last_caught_up_timestamp i64
                           (the header's term: the leader's epoch)

    str16: length u16, then that many bytes of UTF-8

No checksum: TCP's is enough for messages that Raft re-checks anyway (a
corrupted entry would fail its CRC in the WAL only after it is durable, so
this is a trade-off worth revisiting if the network ever lies).  A frame
that does not decode -- bad version, unknown type, truncated, trailing bytes
-- or whose length exceeds ``max_frame_bytes`` closes that connection with
one warning line; the node keeps running and the peer reconnects.

Delivery is best effort, as Raft allows: each peer has one outgoing
connection fed by a bounded queue (``send_queue`` messages); when the queue
is full (the peer is slow or unreachable) new messages are *dropped* and
counted.  Raft retransmits by itself (heartbeats carry the commit end, a
rejected or missing append is re-sent from the leader's ``next`` offset), so
loss costs latency, never safety.  This is only acceptable for Raft messages:
nothing else may ride on this queue.  For the same reason a message that waited
in the queue longer than ``max_age`` (the node's election timeout) is dropped
when its turn comes: Raft has sent newer heartbeats, appends and vote requests
since, and a peer back from an outage should not first wade through the
stale ones.  A lost connection is redialled with
exponential backoff (50 ms doubling to 1 s, with jitter; a dial that timed out
after :data:`~chronik.cluster.network.CONNECT_TIMEOUT` is retried at once).

A connection can stall without breaking (packets dropped silently: TCP
retransmits, ever more slowly, and tells nobody), so the node serving a
connection of Raft messages acknowledges them: after each read that delivered
any, it sends back an ``Ack`` with the number of messages taken from that
connection so far.  A sender with a message unacknowledged for
``request_timeout`` seconds (``controller.quorum.request.timeout.ms``; the
time counts from the oldest unacknowledged send, or from the last
acknowledgement that made progress) closes the connection and redials, and
the messages in flight are lost as above.  Acks also prove the peer's event
loop is running: a hung (SIGSTOPped) peer is redialled the same way.  Wire
version 3 added the acknowledgements, version 4 the client's principal and
host in a forward request and the refusal in its answer: a node never talks
to one of another version (the first frame is refused with one warning line);
version 5 added the quorum request and its answer.

Forwarding (a metadata write sent to a follower) is request/response, so it
does not ride on those queues: :meth:`RaftTransport.forward` dials the leader
on a connection of its own, sends one ``ForwardRequest`` and reads the
``ForwardResponse`` from the same connection.  The listener tells the two
kinds of connection apart by their first frame; a forward request is
answered by the ``on_forward`` callback (the leader authorizes the payload
for the client named in the request, then proposes and waits for the commit
-- or, with ``metadata.commit = "leader"``, only for its own fsync) in a
task of its own.

A quorum request (Kafka's DescribeQuorum, asked of a follower) is
request/response the same way: :meth:`RaftTransport.describe_quorum` sends one
``QuorumRequest`` on a connection of its own and reads the ``QuorumResponse``,
which the ``on_describe_quorum`` callback (the leader's view, see
:meth:`~chronik.cluster.node.ConsensusNode.describe_quorum`) produces.

Data replication (:mod:`chronik.cluster.replication`) is request/response
too, and pulled by the follower: each followed partition has a connection
of its own to its leader, carrying one ``ReplicaFetchRequest`` at a time
and its ``ReplicaFetchResponse``, for as long as both live.  Nothing is
queued or dropped: a slow follower simply asks less often.  The listener
answers them through the ``on_replica_fetch`` callback.

Every connection is dialled through a :class:`~chronik.cluster.network.Network`
(real TCP unless a test passes an in-memory one) and the listener is any
``trio.abc.Listener``: nothing here depends on sockets -- or on TLS: with
``replication_security_protocol=SSL`` the network is a
:class:`~chronik.cluster.tls.TlsNetwork` (mutual TLS) over TCP.  A
connection refused for its credentials, either way
(:class:`~chronik.cluster.network.PeerRefused`: plaintext bytes on a TLS
port, a certificate not verified, a peer not admitted), is closed with one
warning line, at most one a minute per peer host and reason (for a dialled
peer: per peer); so is a TLS ClientHello on a
plaintext port (a first byte 0x16: a frame length over the limit).  The node
keeps running and serving every other peer.
"""

from __future__ import annotations

import logging
import random
import struct
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

import trio

from .messages import (
    Ack,
    AppendRequest,
    AppendResponse,
    Entry,
    ForwardRequest,
    ForwardResponse,
    Frame,
    QuorumRequest,
    QuorumResponse,
    ReplicaFetchRequest,
    ReplicaFetchResponse,
    Message,
    SnapshotRequest,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)
from ..metadata.view import QuorumReplica
from ..ratelimit import LogLimiter
from .network import TCP, Network, PeerRefused, dial, peer_name
from .network import listener_address, open_replication_listener, parse_address  # noqa: F401  (their old home)

log = logging.getLogger(__name__)

WIRE_VERSION = 5
DEFAULT_MAX_FRAME_BYTES = 64 << 20
DEFAULT_SEND_QUEUE = 1024
DEFAULT_REQUEST_TIMEOUT = 1.0
"""Seconds a Raft message may stay unacknowledged before its connection is redialled."""
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
REFUSAL_LOG_INTERVAL = 60.0
"""Seconds between two log lines about refusing the same peer host for the same reason (or being refused by a peer)."""
_TLS_RECORD = 0x16
"""The first byte of a TLS handshake record: on a plaintext port, a frame length of over 369 MB."""

_LENGTH = struct.Struct(">I")
_HEAD = struct.Struct(">BBQii")  # version, type, term, src, dst
_VOTE_REQUEST = struct.Struct(">QQB")
_VOTE_RESPONSE = struct.Struct(">BB")
_APPEND_REQUEST = struct.Struct(">QQQI")
_ENTRY = struct.Struct(">QBI")
_APPEND_RESPONSE = struct.Struct(">BQQ")
_FORWARD_REQUEST = struct.Struct(">Q")  # then principal str16, client_host str16, length u32, payload
_FORWARD_RESPONSE = struct.Struct(">Qqih")  # then error_message str16
_STR16 = struct.Struct(">H")
_PAYLOAD_LENGTH = struct.Struct(">I")
MAX_ERROR_MESSAGE_BYTES = 1024
"""A forward refusal's message is cut to this many bytes of UTF-8 (it only ends up in a client's error)."""
_REPLICA_FETCH_REQUEST = struct.Struct(">16siQIIiH")
_REPLICA_FETCH_RESPONSE = struct.Struct(">hqqiqqI")
_SNAPSHOT_REQUEST = struct.Struct(">QQQQI")
_SNAPSHOT_RESPONSE = struct.Struct(">QQB")
_ACK = struct.Struct(">Q")
_QUORUM_REQUEST = struct.Struct(">Q")
_QUORUM_RESPONSE = struct.Struct(">QhiqI")
_QUORUM_VOTER = struct.Struct(">iqqq")
_CONTROL = 1

_TYPES: dict[type, int] = {
    VoteRequest: 1, VoteResponse: 2, AppendRequest: 3, AppendResponse: 4, ForwardRequest: 5, ForwardResponse: 6,
    ReplicaFetchRequest: 7, ReplicaFetchResponse: 8, SnapshotRequest: 9, SnapshotResponse: 10, Ack: 11,
    QuorumRequest: 12, QuorumResponse: 13,
}


NOT_LEADER_OR_FOLLOWER = 6
"""The Kafka error code a ReplicaFetchResponse carries when this node does not lead the partition."""


class CodecError(ValueError):
    """Bytes that are not a valid replication frame."""


def encode_message(message: Frame) -> bytes:
    """The frame body of ``message`` (without the length prefix)."""
    head = _HEAD.pack(WIRE_VERSION, _TYPES[type(message)], message.term, message.src, message.dst)
    if isinstance(message, AppendRequest):
        parts = [head, _APPEND_REQUEST.pack(message.prev_end, message.prev_epoch, message.leader_commit, len(message.entries))]
        for entry in message.entries:
            parts.append(_ENTRY.pack(entry.epoch, _CONTROL if entry.control else 0, len(entry.payload)))
            parts.append(entry.payload)
        return b"".join(parts)
    if isinstance(message, AppendResponse):
        return head + _APPEND_RESPONSE.pack(message.success, message.match_end, message.durable_end)
    if isinstance(message, VoteRequest):
        return head + _VOTE_REQUEST.pack(message.last_epoch, message.log_end, message.pre_vote)
    if isinstance(message, ForwardRequest):
        return b"".join((head, _FORWARD_REQUEST.pack(message.request_id), _str16(message.principal, "principal"),
                         _str16(message.client_host, "client_host"), _PAYLOAD_LENGTH.pack(len(message.payload)),
                         message.payload))
    if isinstance(message, ForwardResponse):
        text = message.error_message.encode()[:MAX_ERROR_MESSAGE_BYTES].decode(errors="ignore")
        return (head + _FORWARD_RESPONSE.pack(message.request_id, message.offset, message.leader_id, message.error)
                + _str16(text, "error_message"))
    if isinstance(message, ReplicaFetchRequest):
        topic = message.topic.encode()
        return head + _REPLICA_FETCH_REQUEST.pack(
            bytes.fromhex(message.topic_id), message.partition, message.fetch_offset, message.max_wait_ms,
            message.max_bytes, message.last_fetched_epoch, len(topic)) + topic
    if isinstance(message, ReplicaFetchResponse):
        return head + _REPLICA_FETCH_RESPONSE.pack(
            message.error, message.high_watermark, message.log_start_offset, message.diverging_epoch,
            message.diverging_end, message.log_end_offset, len(message.records)) + message.records
    if isinstance(message, SnapshotRequest):
        return head + _SNAPSHOT_REQUEST.pack(
            message.end, message.epoch, message.size, message.position, len(message.chunk)) + message.chunk
    if isinstance(message, SnapshotResponse):
        return head + _SNAPSHOT_RESPONSE.pack(message.end, message.received, message.done)
    if isinstance(message, Ack):
        return head + _ACK.pack(message.received)
    if isinstance(message, QuorumRequest):
        return head + _QUORUM_REQUEST.pack(message.request_id)
    if isinstance(message, QuorumResponse):
        return b"".join([head, _QUORUM_RESPONSE.pack(message.request_id, message.error, message.leader_id,
                                                     message.high_watermark, len(message.voters))]
                        + [_QUORUM_VOTER.pack(v.replica_id, v.log_end_offset, v.last_fetch_timestamp,
                                              v.last_caught_up_timestamp) for v in message.voters])
    return head + _VOTE_RESPONSE.pack(message.granted, message.pre_vote)


def encode_frame(message: Frame) -> bytes:
    body = encode_message(message)
    return _LENGTH.pack(len(body)) + body


def _unpack(layout: struct.Struct, body: memoryview, pos: int, what: str) -> tuple:  # type: ignore[type-arg]
    if len(body) - pos < layout.size:
        raise CodecError(f"truncated {what}: {len(body) - pos} bytes left at {pos}, need {layout.size}")
    return layout.unpack_from(body, pos)


def _take(body: memoryview, pos: int, length: int, what: str, part: str) -> bytes:
    """The ``length`` bytes of ``what``'s ``part`` at ``pos``; :class:`CodecError` if the body is shorter."""
    if length > len(body) - pos:
        raise CodecError(f"truncated {what}: {part} of {length} bytes, {len(body) - pos} left")
    return bytes(body[pos : pos + length])


def _str16(text: str, part: str) -> bytes:
    """``text`` as a str16 (length u16, UTF-8); :class:`CodecError` if it is longer than that allows."""
    data = text.encode()
    if len(data) > 0xFFFF:
        raise CodecError(f"{part} of {len(data)} bytes does not fit a str16")
    return _STR16.pack(len(data)) + data


def _read_str16(body: memoryview, pos: int, what: str, part: str) -> tuple[str, int]:
    """The str16 ``part`` of ``what`` at ``pos``, and the position after it."""
    (length,) = _unpack(_STR16, body, pos, what)
    pos += _STR16.size
    try:
        return _take(body, pos, length, what, part).decode(), pos + length
    except UnicodeDecodeError as exc:
        raise CodecError(f"{what} {part} is not UTF-8: {exc}") from None


def decode_message(body: bytes | bytearray | memoryview) -> Frame:
    """Parse one frame body; raises :class:`CodecError` if it is not a valid message."""
    view = memoryview(body)
    if len(view) >= 1 and view[0] != WIRE_VERSION:
        raise CodecError(f"unsupported wire version {view[0]} (this node speaks {WIRE_VERSION})")
    version, kind, term, src, dst = _unpack(_HEAD, view, 0, "message header")
    pos = _HEAD.size
    message: Frame
    if kind == 1:
        last_epoch, log_end, pre_vote = _unpack(_VOTE_REQUEST, view, pos, "VoteRequest")
        message, pos = VoteRequest(term, src, dst, last_epoch, log_end, bool(pre_vote)), pos + _VOTE_REQUEST.size
    elif kind == 2:
        granted, pre_vote = _unpack(_VOTE_RESPONSE, view, pos, "VoteResponse")
        message, pos = VoteResponse(term, src, dst, bool(granted), bool(pre_vote)), pos + _VOTE_RESPONSE.size
    elif kind == 3:
        prev_end, prev_epoch, commit, count = _unpack(_APPEND_REQUEST, view, pos, "AppendRequest")
        pos += _APPEND_REQUEST.size
        entries = []
        for n in range(count):
            epoch, flags, length = _unpack(_ENTRY, view, pos, f"entry {n}")
            pos += _ENTRY.size
            entries.append(Entry(epoch, _take(view, pos, length, f"entry {n}", "payload"), bool(flags & _CONTROL)))
            pos += length
        message = AppendRequest(term, src, dst, prev_end, prev_epoch, tuple(entries), commit)
    elif kind == 4:
        success, match_end, durable_end = _unpack(_APPEND_RESPONSE, view, pos, "AppendResponse")
        message, pos = AppendResponse(term, src, dst, bool(success), match_end, durable_end), pos + _APPEND_RESPONSE.size
    elif kind == 5:
        (request_id,) = _unpack(_FORWARD_REQUEST, view, pos, "ForwardRequest")
        principal, pos = _read_str16(view, pos + _FORWARD_REQUEST.size, "ForwardRequest", "principal")
        client_host, pos = _read_str16(view, pos, "ForwardRequest", "client_host")
        (length,) = _unpack(_PAYLOAD_LENGTH, view, pos, "ForwardRequest")
        pos += _PAYLOAD_LENGTH.size
        payload = _take(view, pos, length, "ForwardRequest", "payload")
        message, pos = ForwardRequest(term, src, dst, request_id, payload, principal, client_host), pos + length
    elif kind == 6:
        request_id, offset, leader_id, error = _unpack(_FORWARD_RESPONSE, view, pos, "ForwardResponse")
        error_message, pos = _read_str16(view, pos + _FORWARD_RESPONSE.size, "ForwardResponse", "error_message")
        message = ForwardResponse(term, src, dst, request_id, offset, leader_id, error, error_message)
    elif kind == 7:
        topic_id, partition, fetch_offset, max_wait_ms, max_bytes, last_epoch, length = _unpack(
            _REPLICA_FETCH_REQUEST, view, pos, "ReplicaFetchRequest")
        pos += _REPLICA_FETCH_REQUEST.size
        try:
            topic = _take(view, pos, length, "ReplicaFetchRequest", "topic").decode()
        except UnicodeDecodeError as exc:
            raise CodecError(f"ReplicaFetchRequest topic is not UTF-8: {exc}") from None
        message = ReplicaFetchRequest(term, src, dst, topic, topic_id.hex(), partition, fetch_offset, max_wait_ms, max_bytes,
                                      last_epoch)
        pos += length
    elif kind == 8:
        error, high_watermark, log_start, diverging_epoch, diverging_end, log_end, length = _unpack(
            _REPLICA_FETCH_RESPONSE, view, pos, "ReplicaFetchResponse")
        pos += _REPLICA_FETCH_RESPONSE.size
        records = _take(view, pos, length, "ReplicaFetchResponse", "records")
        message = ReplicaFetchResponse(term, src, dst, error, high_watermark, log_start, records,
                                       diverging_epoch, diverging_end, log_end)
        pos += length
    elif kind == 9:
        end, epoch, size, position, length = _unpack(_SNAPSHOT_REQUEST, view, pos, "SnapshotRequest")
        pos += _SNAPSHOT_REQUEST.size
        message = SnapshotRequest(term, src, dst, end, epoch, size, position, _take(view, pos, length, "SnapshotRequest", "chunk"))
        pos += length
    elif kind == 10:
        end, received, done = _unpack(_SNAPSHOT_RESPONSE, view, pos, "SnapshotResponse")
        message, pos = SnapshotResponse(term, src, dst, end, received, bool(done)), pos + _SNAPSHOT_RESPONSE.size
    elif kind == 11:
        (received,) = _unpack(_ACK, view, pos, "Ack")
        message, pos = Ack(term, src, dst, received), pos + _ACK.size
    elif kind == 12:
        (request_id,) = _unpack(_QUORUM_REQUEST, view, pos, "QuorumRequest")
        message, pos = QuorumRequest(term, src, dst, request_id), pos + _QUORUM_REQUEST.size
    elif kind == 13:
        request_id, error, leader_id, high_watermark, count = _unpack(_QUORUM_RESPONSE, view, pos, "QuorumResponse")
        pos += _QUORUM_RESPONSE.size
        voters = []
        for n in range(count):  # each voter is unpacked from the body: a lying count runs out of bytes
            voters.append(QuorumReplica(*_unpack(_QUORUM_VOTER, view, pos, f"QuorumResponse voter {n}")))
            pos += _QUORUM_VOTER.size
        message = QuorumResponse(term, src, dst, request_id, error, leader_id, high_watermark, tuple(voters))
    else:
        raise CodecError(f"unknown message type {kind}")
    if pos != len(view):
        raise CodecError(f"{len(view) - pos} trailing bytes after {type(message).__name__}")
    return message


class FrameReader:
    """Splits a byte stream into frame bodies (sans-I/O; feed it any chunking)."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Messages completed by ``data``; raises :class:`CodecError` on a bad frame."""
        buf = self._buf
        buf += data
        out: list[Frame] = []
        pos = 0
        while len(buf) - pos >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if length > self.max_frame_bytes:
                raise CodecError(f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}")
            end = pos + _LENGTH.size + length
            if end > len(buf):
                break
            out.append(decode_message(memoryview(buf)[pos + _LENGTH.size : end]))
            pos = end
        del buf[:pos]
        return out


@dataclass(slots=True)
class TransportStats:
    sent: int = 0
    dropped: int = 0  # a full send queue
    expired: int = 0  # waited in the queue longer than max_age
    received: int = 0
    bad_frames: int = 0  # connections closed for a bad frame
    connects: int = 0
    stalls: int = 0  # connections redialled because their messages went unacknowledged
    forwarded: int = 0  # forward requests answered
    refused: int = 0  # connections refused for their credentials (PeerRefused), either way


def _address(peer: object) -> str:
    """``(host, port)`` as ``host:port`` for a log line; anything else as it is."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class ForwardFailed(Exception):
    """A forward request got no answer (the leader is unreachable or died while proposing).

    ``sent``: the request went out, so the payload may or may not have been
    committed; if not, it certainly was not.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


_Queued = tuple[float, bytes]
"""A queued message: when it was queued, and its frame."""

@dataclass(frozen=True, slots=True)
class ForwardAnswer:
    """What the leader answers a forward request with (see :class:`~.messages.ForwardResponse`):
    the payload's ``offset`` and ``epoch``; or offset -1 and the leader it knows of
    (``leader_id``, -1: none), with ``error`` (a Kafka error code) when it refused the payload."""

    offset: int
    leader_id: int
    epoch: int
    error: int = 0
    error_message: str = ""


ForwardHandler = Callable[[ForwardRequest], Awaitable[ForwardAnswer]]
"""A forward request -> the leader's answer to it."""

ReplicaFetchHandler = Callable[[ReplicaFetchRequest], Awaitable[ReplicaFetchResponse]]
"""A partition leader's answer to a follower's fetch (see :mod:`chronik.cluster.replication`)."""

QuorumHandler = Callable[[QuorumRequest], QuorumResponse]
"""This node's answer to a quorum request: its view as the leader, or NOT_LEADER_OR_FOLLOWER."""


class RaftTransport:
    """One node's side of the replication port: a listener and one sender per peer.

    ``deliver`` is called (synchronously, from a connection task) with every
    message that decodes.  Run it with :meth:`run` in the node's nursery.
    """

    def __init__(
        self,
        node_id: int,
        listener: trio.abc.Listener[trio.abc.Stream],
        peers: Mapping[int, str],
        deliver: Callable[[Message], None],
        rng: random.Random,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        send_queue: int = DEFAULT_SEND_QUEUE,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_age: float = float("inf"),
        network: Network = TCP,
    ) -> None:
        self.node_id = node_id
        self.request_timeout = request_timeout
        self.max_age = max_age
        self.listener = listener
        self.network = network
        self.peers = dict(peers)
        self._deliver = deliver
        self._rng = rng
        self.max_frame_bytes = max_frame_bytes
        self.stats = TransportStats()
        self.on_forward: ForwardHandler | None = None
        self.on_replica_fetch: ReplicaFetchHandler | None = None
        self.on_describe_quorum: QuorumHandler | None = None
        self._refusals = LogLimiter(REFUSAL_LOG_INTERVAL)
        self._request_ids = 0
        self._queues: dict[int, tuple[trio.MemorySendChannel[_Queued], trio.MemoryReceiveChannel[_Queued]]] = {
            peer: trio.open_memory_channel[_Queued](send_queue) for peer in self.peers
        }

    @property
    def address(self) -> str:
        return listener_address(self.listener)

    def send(self, message: Message) -> None:
        """Queue ``message`` for its addressee; never blocks; drops it if the queue is full."""
        queue = self._queues.get(message.dst)
        if queue is None:
            return
        try:
            queue[0].send_nowait((trio.current_time(), encode_frame(message)))
        except trio.WouldBlock:
            self.stats.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve incoming connections and feed outgoing ones until cancelled.

        Cancellation: every connection is closed; queued messages are lost.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve_connection, [self.listener])
            for peer in self.peers:
                nursery.start_soon(self._feed_peer, peer)
            task_status.started()

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        reader = FrameReader(self.max_frame_bytes)
        peer = peer_name(stream)
        received = 0  # Raft messages taken from this connection (what an Ack counts)
        first = True
        async with stream:
            try:
                while True:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        return
                    if first and data[0] == _TLS_RECORD and _TLS_RECORD << 24 > self.max_frame_bytes:
                        raise PeerRefused("TLS client on the PLAINTEXT replication port (set replication_security_protocol "
                                          "the same on every node)")
                    first = False
                    sender = None
                    for message in reader.feed(data):
                        if isinstance(message, ForwardRequest):
                            await self._answer_forward(stream, message)
                            return
                        if isinstance(message, ReplicaFetchRequest):
                            await self._answer_replica_fetch(stream, message)
                            continue
                        if isinstance(message, QuorumRequest):
                            await self._answer_quorum(stream, message)
                            return
                        if isinstance(message, (ForwardResponse, ReplicaFetchResponse, QuorumResponse, Ack)):
                            raise CodecError(f"unexpected {type(message).__name__}")
                        self.stats.received += 1
                        received += 1
                        sender = message.src
                        self._deliver(message)
                    if sender is not None:
                        await stream.send_all(encode_frame(Ack(0, self.node_id, sender, received)))
            except CodecError as exc:
                self.stats.bad_frames += 1
                log.warning("node %d: closing replication connection from %s: %s", self.node_id, peer, exc)
            except PeerRefused as exc:
                self.stats.refused += 1
                host = peer[0] if isinstance(peer, tuple) and peer else peer
                self._log_refusal(("from", host, str(exc)), "node %d: refused replication connection from %s: %s",
                                  self.node_id, _address(peer), exc)
            except (trio.BrokenResourceError, OSError):
                return

    def _log_refusal(self, key: object, message: str, *args: object) -> None:
        """A warning about a refused peer, at most one per ``key`` per :data:`REFUSAL_LOG_INTERVAL`."""
        self._refusals.log(log, logging.WARNING, key, message, *args)

    async def _answer_forward(self, stream: trio.abc.Stream, request: ForwardRequest) -> None:
        answer = ForwardAnswer(-1, -1, 0)
        if self.on_forward is not None:
            answer = await self.on_forward(request)
        self.stats.forwarded += 1
        await stream.send_all(encode_frame(ForwardResponse(
            answer.epoch, self.node_id, request.src, request.request_id, answer.offset, answer.leader_id, answer.error,
            answer.error_message)))

    async def _answer_replica_fetch(self, stream: trio.abc.Stream, request: ReplicaFetchRequest) -> None:
        handler = self.on_replica_fetch
        if handler is None:
            answer = ReplicaFetchResponse(0, self.node_id, request.src, NOT_LEADER_OR_FOLLOWER, -1, -1, b"")
        else:
            answer = await handler(request)
        await stream.send_all(encode_frame(answer))

    async def _answer_quorum(self, stream: trio.abc.Stream, request: QuorumRequest) -> None:
        if self.on_describe_quorum is None:
            answer = QuorumResponse(0, self.node_id, request.src, request.request_id, NOT_LEADER_OR_FOLLOWER, -1, -1, ())
        else:
            answer = self.on_describe_quorum(request)
        await stream.send_all(encode_frame(answer))

    async def forward(self, peer: int, payload: bytes, timeout: float, *, principal: str = "",
                      client_host: str = "") -> ForwardResponse:
        """Ask ``peer`` (the leader) to propose ``payload`` for the client ``principal`` at
        ``client_host`` (empty: for this node itself); its answer.

        :raises ForwardFailed: no connection, or no answer within ``timeout``
            seconds (the payload may have been committed all the same).

        Cancellation: the connection is closed; the peer may still commit the payload.
        """
        self._request_ids += 1
        request = ForwardRequest(0, self.node_id, peer, self._request_ids, payload, principal, client_host)
        answer = await self._ask(peer, request, timeout, "forward request")
        assert isinstance(answer, ForwardResponse)
        return answer

    async def describe_quorum(self, peer: int, timeout: float) -> QuorumResponse:
        """Ask ``peer`` (the leader) how it sees the metadata quorum; its answer.

        :raises ForwardFailed: no connection, or no answer within ``timeout`` seconds.

        Cancellation: the connection is closed; nothing changes anywhere.
        """
        self._request_ids += 1
        answer = await self._ask(peer, QuorumRequest(0, self.node_id, peer, self._request_ids), timeout, "quorum request")
        assert isinstance(answer, QuorumResponse)
        return answer

    async def _ask(self, peer: int, request: ForwardRequest | QuorumRequest, timeout: float, what: str) -> Frame:
        """Send ``request`` to ``peer`` on a connection of its own and return the answer with its
        request id (a ForwardResponse to a ForwardRequest, a QuorumResponse to a QuorumRequest).

        :raises ForwardFailed: no connection (``sent`` false), or no answer within ``timeout``
            seconds, a broken connection or a frame that is not the answer (``sent`` true).
        """
        answer_type = ForwardResponse if isinstance(request, ForwardRequest) else QuorumResponse
        address = self.peers[peer]
        reader = FrameReader(self.max_frame_bytes)
        with trio.move_on_after(timeout):
            try:
                stream = await dial(self.network, address)
            except OSError as exc:
                raise ForwardFailed(f"cannot reach node {peer} at {address}: {exc}", sent=False) from exc
            async with stream:
                try:
                    await stream.send_all(encode_frame(request))
                    while True:
                        data = await stream.receive_some(1 << 16)
                        if not data:
                            break
                        for message in reader.feed(data):
                            if isinstance(message, answer_type) and message.request_id == request.request_id:
                                return message
                            raise CodecError(f"unexpected {type(message).__name__} in answer to a {what}")
                except (trio.BrokenResourceError, OSError, CodecError) as exc:
                    raise ForwardFailed(f"{what} to node {peer} failed: {exc}", sent=True) from exc
            raise ForwardFailed(f"node {peer} closed the connection without answering the {what}", sent=True)
        raise ForwardFailed(f"node {peer} did not answer the {what} within {timeout:g} s", sent=True)

    async def _feed_peer(self, peer: int) -> None:
        """Keep a connection to ``peer`` and send it the queued messages, for ever."""
        address = self.peers[peer]
        backoff = BACKOFF_MIN
        reported = False  # an outage is logged once, at its start
        while True:
            try:
                stream = await dial(self.network, address)
            except OSError as exc:
                if isinstance(exc, PeerRefused):
                    self.stats.refused += 1
                    self._log_refusal(("to", peer), "node %d: replication connection to peer %d at %s refused: %s",
                                      self.node_id, peer, address, exc)
                else:
                    log.debug("node %d: cannot reach peer %d at %s: %s", self.node_id, peer, address, exc)
                if not isinstance(exc, TimeoutError):  # a dial that timed out has waited long enough
                    await trio.sleep(backoff * (0.5 + self._rng.random()))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.stats.connects += 1
            link = _Link()
            async with stream:
                reason = await self._run_link(peer, stream, link)
            if link.acked:
                backoff, reported = BACKOFF_MIN, False
            if not reported:
                reported = True
                log.info("node %d: replication connection to peer %d lost (%s); reconnecting", self.node_id, peer, reason)
            else:
                log.debug("node %d: replication connection to peer %d lost again (%s)", self.node_id, peer, reason)
            if not link.acked:  # a peer that accepts but never acknowledges: do not spin on it
                await trio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _run_link(self, peer: int, stream: trio.abc.Stream, link: "_Link") -> str:
        """Send ``peer``'s queued messages on ``stream`` and read its acknowledgements until the
        connection breaks or stalls (a message unacknowledged for :attr:`request_timeout`
        seconds); why it ended.  Messages taken from the queue but not acknowledged are lost."""
        reason = ""

        def end(why: str) -> None:
            nonlocal reason
            reason = reason or why
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_queued, peer, stream, link, end)
            nursery.start_soon(self._read_acks, stream, link, end)
            tick = min(0.1, self.request_timeout / 4)
            while True:
                await trio.sleep(tick)
                since = link.waiting_since
                if since is not None and trio.current_time() - since > self.request_timeout:
                    self.stats.stalls += 1
                    end(f"stalled: no acknowledgement for {self.request_timeout:g} s")
        return reason

    async def _send_queued(self, peer: int, stream: trio.abc.Stream, link: "_Link", end: Callable[[str], None]) -> None:
        receive = self._queues[peer][1]
        pending: list[_Queued] = []
        try:
            while True:
                if not pending:
                    pending.append(await receive.receive())
                while len(pending) < 256:
                    try:
                        pending.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                now = trio.current_time()
                frames = [frame for queued_at, frame in pending if now - queued_at <= self.max_age]
                self.stats.expired += len(pending) - len(frames)
                pending.clear()
                if not frames:
                    continue
                if link.waiting_since is None:
                    link.waiting_since = now
                link.sent += len(frames)
                await stream.send_all(b"".join(frames))
                self.stats.sent += len(frames)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            end(str(exc) or type(exc).__name__)  # what was half-sent is lost: Raft copes

    async def _read_acks(self, stream: trio.abc.Stream, link: "_Link", end: Callable[[str], None]) -> None:
        reader = FrameReader(self.max_frame_bytes)
        try:
            while True:
                data = await stream.receive_some(1 << 16)
                if not data:
                    end("closed by the peer")
                    return
                for message in reader.feed(data):
                    if not isinstance(message, Ack) or message.received > link.sent:
                        raise CodecError(f"unexpected {message!r} on a connection carrying Raft messages")
                    if message.received > link.acked:
                        link.acked = message.received
                        link.waiting_since = None if link.acked == link.sent else trio.current_time()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, CodecError) as exc:
            end(str(exc) or type(exc).__name__)


@dataclass(slots=True)
class _Link:
    """One outgoing connection's count of messages sent and acknowledged."""

    sent: int = 0
    acked: int = 0
    waiting_since: float | None = None
    """Since when a message has waited for its acknowledgement (None: all acknowledged)."""
