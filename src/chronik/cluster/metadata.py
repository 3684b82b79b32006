"""The metadata log in cluster mode: metadata commands are the entries of the Raft log.

:class:`ReplicatedMetadataLog` offers what the broker and the group
coordinator use of :class:`~chronik.metadata.MetadataLog` (``image``,
``submit``, ``append``/``outcome``, ``add_listener``), with the Raft log
(:mod:`chronik.cluster.node`) in place of the local metadata WAL:

* write: the command is encoded and committed through the controller (the
  Raft leader) -- proposed there, or forwarded to it from a follower --
  which returns once a majority has it durable (``metadata.commit =
  "quorum"``), or once it is durable in the controller's own log and has
  reached this node's log (``metadata.commit = "leader"``, see below);
* apply: every node hands each committed entry, in offset order, to
  :meth:`ReplicatedMetadataLog.apply_committed` (the consensus node's
  ``on_commit``), which applies it to the image with the same code as a
  single node, records its result and notifies listeners; a submitter gets
  the result its own node computed when applying its offset (the image is
  deterministic, so every node computes the same one).

Leader mode (``metadata.commit = "leader"``): the answer does not wait for
the commit, but the image is still only ever changed by *committed*
entries, so no node's image (nor the logs and groups that follow it) can
run ahead of the committed log and have to be rolled back when a new
controller truncates an uncommitted suffix.  The answer carries a
*predicted* result instead: a second image (``_spec``, copied from the
image once and then kept up to date) has every entry of this node's log
applied, committed or not, and the submitter gets what applying its
offset to it gave -- the same result the commit will give, as commands
are deterministic and validated when applied.  The prediction image is
checked against the log before use (by log matching, the epoch of the
last entry it applied tells whether that suffix was truncated) and
rebuilt from the committed image if it was.  The cost: a CreateTopics
answered in leader mode may become visible in Metadata a moment later
(at the commit), and the change is *lost* if the controller dies or is
partitioned before a majority has it durable (at most the entries of the
last replication round trip, ~1 ms on a LAN).

Authorization (Kafka's forwarding with an Envelope, KIP-590): a command
submitted with an :class:`~chronik.metadata.view.Origin` -- a client's
request, whichever node it reached -- travels to the controller with the
client's principal and host, and the controller runs :attr:`authorize` on it
against *its own* committed image right before proposing it
(:attr:`ConsensusNode.admit <chronik.cluster.node.ConsensusNode.admit>`).
So a write that a follower allowed on a stale image (an ACL just removed
that it has not applied yet) is still refused, with the Kafka error the
controller's check gives (TOPIC_AUTHORIZATION_FAILED, ...), raised here as
:class:`CommandRejected`.  Commands without an origin are this node's own
(registration, ISR changes, fencing, group and transaction state) and are
not checked: only nodes reach the replication port (mutual TLS, whose peer
check already asks for ClusterAction, when security is on).

Metadata offsets are Raft offsets; a new leader's control entry takes an
offset too, so the image's ``applied_offset`` may skip numbers.

Snapshots: every ``snapshot_every`` applied commands the image is encoded
(the single-node snapshot document, :func:`chronik.metadata.log.encode_image`)
and handed to the consensus node (:meth:`ConsensusNode.save_snapshot`),
which makes it durable and compacts the Raft log below it.  The node hands
snapshots back through ``on_commit`` too: the newest one on disk at start,
and the leader's when this node was too far behind to catch up from the log;
:meth:`ReplicatedMetadataLog.apply_committed` then replaces the image by it
(listeners are called with ``command`` None: the image changed wholesale).

Restart: the image starts from the newest snapshot (or empty) and only the
Raft log after it is replayed, as the node learns the commit point from the
leader.  A node that cannot reach a majority serves that (possibly stale)
image meanwhile.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..metadata.commands import Command, UnknownCommand, decode_command, encode_command
from ..metadata.image import CommandRejected, MetadataImage
from ..metadata.log import Listener, decode_image, encode_image
from ..metadata.view import CommandCheck, Origin
from ..protocol import ErrorCode
from .node import CommitUncertain, CommittedEntry, NotLeaderError, ProposalRefused, Snapshot

if TYPE_CHECKING:
    from .node import ConsensusNode

log = logging.getLogger(__name__)

RESULTS_KEPT = 4096
"""Results of recently applied offsets kept for their submitters (a submitter
asks right after its offset is applied; older ones are never asked for)."""

SNAPSHOT_EVERY = 10_000
"""Applied commands between two snapshots of the image (as on a single node)."""


class ReplicatedMetadataLog:
    """The metadata image fed by the Raft log (see the module docstring)."""

    def __init__(self, submit_timeout: float = 10.0, commit_mode: str = "quorum",
                 snapshot_every: int = SNAPSHOT_EVERY) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        self.image = MetadataImage()
        self.snapshot_every = snapshot_every
        self._since_snapshot = 0  # commands applied since the last snapshot (taken or loaded)
        self._node: ConsensusNode | None = None
        self.authorize: CommandCheck | None = None
        """The controller's check of a command submitted with an origin (None: every command is
        taken).  Set it before the node serves: a forward admitted without it is not checked."""
        self.submit_timeout = submit_timeout
        self.commit_mode = commit_mode
        self._spec: MetadataImage | None = None  # leader mode: the image with the uncommitted log applied too
        self._spec_end = 0  # the next log offset to apply to it
        self._spec_last: tuple[int, int] | None = None  # (offset, epoch) of the last log entry applied to it
        self._predicted: OrderedDict[int, tuple[int, Any, CommandRejected | None]] = OrderedDict()
        self._listeners: list[Listener] = []
        self._results: OrderedDict[int, tuple[Any, CommandRejected | None]] = OrderedDict()
        self._announce = True

    @property
    def node(self) -> ConsensusNode | None:
        """The consensus node feeding this image; attaching it makes :meth:`_admit` its admission check."""
        return self._node

    @node.setter
    def node(self, node: ConsensusNode | None) -> None:
        self._node = node
        if node is not None:
            node.admit = self._admit

    def _admit(self, payload: bytes, origin: Origin) -> None:
        """On the controller: :attr:`authorize` the command ``payload`` for ``origin`` against this image."""
        if self.authorize is None:
            return
        try:
            command = decode_command(payload)
        except UnknownCommand as exc:
            raise ProposalRefused(int(ErrorCode.INVALID_REQUEST), str(exc)) from None
        try:
            self.authorize(command, origin)
        except CommandRejected as exc:
            raise ProposalRefused(int(ErrorCode[exc.error]), exc.message) from None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(offset, command, result, rejection)`` after each apply."""
        self._listeners.append(listener)

    def apply_committed(self, entry: CommittedEntry | Snapshot) -> None:
        """Apply one committed entry (in offset order; replayed offsets are skipped),
        or replace the image by a snapshot."""
        if isinstance(entry, Snapshot):
            self._load_snapshot(entry)
            return
        if entry.offset <= self.image.applied_offset:
            return
        command = decode_command(entry.payload)
        result: Any = None
        error: CommandRejected | None = None
        try:
            result = self.image.apply(entry.offset, command)
        except CommandRejected as exc:
            error = exc
        self._results[entry.offset] = (result, error)
        if len(self._results) > RESULTS_KEPT:
            self._results.popitem(last=False)
        if self._spec is not None and self._spec_end <= entry.offset:
            self._advance_spec(entry.offset + 1)
        log.log(logging.INFO if self._announce else logging.DEBUG,
                "committed metadata offset %d, applied %d (%s)", entry.offset, entry.offset, command.type_name)
        self._announce = False
        for listener in self._listeners:
            listener(entry.offset, command, result, error)
        self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every and self.node is not None:
            self._since_snapshot = 0
            self.node.save_snapshot(Snapshot(entry.offset + 1, entry.epoch, encode_image(self.image)))

    def _load_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the image by ``snapshot`` (everything below ``snapshot.end`` applied)."""
        try:
            image = decode_image(snapshot.data)
        except (ValueError, KeyError, TypeError) as exc:  # the Raft snapshot passed its CRC: a bug
            raise ValueError(f"metadata snapshot ending at {snapshot.end} does not decode: {exc}") from exc
        self.image = image
        self._spec, self._spec_last = None, None  # rebuilt from the new image when next needed
        self._predicted.clear()
        self._since_snapshot = 0
        log.info("metadata image loaded from a snapshot at offset %d (applied offset %d)", snapshot.end - 1,
                 image.applied_offset)
        for listener in self._listeners:
            listener(snapshot.end - 1, None, None, None)  # type: ignore[arg-type]

    async def submit(self, command: Command, origin: Origin | None = None) -> Any:
        """Commit ``command`` through the controller, apply it here, return its result.

        With ``origin`` (a client asked for it) the controller authorizes it
        first (see the module docstring).  Raises :class:`CommandRejected` if
        the controller refused it (nothing committed) or applying rejected it,
        with ``NOT_CONTROLLER`` if no controller took it in time, and
        ``REQUEST_TIMED_OUT`` if the controller took it but did not answer
        (it may have been applied).  Cancellation: the command may still be
        committed and applied; only the wait for its result ends.
        """
        node = self.node
        assert node is not None, "the consensus node is not running"
        try:
            if self.commit_mode == "leader":
                offset, epoch = await node.submit_durable(encode_command(command), timeout=self.submit_timeout,
                                                          origin=origin)
                result, error = self._predict(offset, epoch)
            else:
                offset = await node.submit(encode_command(command), timeout=self.submit_timeout, origin=origin)
                if offset not in self._results:  # reached this node inside a snapshot: applied, result unknown here
                    raise CommitUncertain(f"metadata offset {offset} was committed, but its result is not known here")
                result, error = self._results.pop(offset)
        except NotLeaderError:
            raise CommandRejected("NOT_CONTROLLER", "no controller is available (no majority of voters reachable)") from None
        except CommitUncertain as exc:
            raise CommandRejected("REQUEST_TIMED_OUT", str(exc)) from None
        except ProposalRefused as exc:
            try:
                name = ErrorCode(exc.code).name
            except ValueError:  # a code this version does not know (a newer controller)
                name = ErrorCode.UNKNOWN_SERVER_ERROR.name
            raise CommandRejected(name, exc.message) from None
        if error is not None:
            raise error
        return result

    def _predict(self, offset: int, epoch: int) -> tuple[Any, CommandRejected | None]:
        """The result of the entry at ``offset`` (of ``epoch``, in this node's log) once it commits."""
        self._advance_spec(offset + 1)
        predicted = self._predicted.get(offset)
        node = self.node
        assert node is not None
        if predicted is None and offset < node.commit_end and node.epoch_at(offset) == epoch and offset in self._results:
            return self._results[offset]  # committed (and applied) before there was a prediction image
        if predicted is None or predicted[0] != epoch:
            raise CommitUncertain(f"no prediction for metadata offset {offset} (epoch {epoch})")
        return predicted[1], predicted[2]

    def _advance_spec(self, end: int) -> None:
        """Apply this node's log below ``end`` to the prediction image (see the module docstring)."""
        node = self.node
        assert node is not None
        if self._spec is not None and self._spec_last is not None:
            offset, epoch = self._spec_last
            if offset >= node.commit_end and node.epoch_at(offset) != epoch:
                self._spec = None  # that suffix was truncated (or replaced by a snapshot): start again
        if self._spec is not None and self._spec_end < node.log_start:
            self._spec = None  # an installed snapshot overtook it
        if self._spec is None:
            if node.commit_end < node.log_start:
                return  # an installed snapshot is not applied yet: nothing to predict from
            self._spec = self.image.copy()
            self._spec_end, self._spec_last = node.commit_end, None
        spec = self._spec
        while self._spec_end < min(end, node.log_end):
            offset = self._spec_end
            entry = node.entry(offset)
            if not entry.control:
                result: Any = None
                error: CommandRejected | None = None
                try:
                    result = spec.apply(offset, decode_command(entry.payload))
                except CommandRejected as exc:
                    error = exc
                self._predicted[offset] = (entry.epoch, result, error)
                if len(self._predicted) > RESULTS_KEPT:
                    self._predicted.popitem(last=False)
            self._spec_last, self._spec_end = (offset, entry.epoch), offset + 1

    def append(self, command: Command) -> Command:
        """The handle :meth:`outcome` takes.  Unlike the single-node log nothing
        happens before :meth:`outcome` is awaited, so concurrent callers' commands
        are not ordered by their calls to ``append``."""
        return command

    async def outcome(self, handle: Command) -> Any:
        """:meth:`submit` of an :meth:`append` handle."""
        return await self.submit(handle)

    async def aclose(self) -> None:
        """Nothing to close: the Raft log belongs to the consensus node."""
