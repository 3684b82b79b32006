"""The metadata log in cluster mode: metadata commands are the entries of the Raft log.

:class:`ReplicatedMetadataLog` offers what the broker and the group
coordinator use of :class:`~chronik.metadata.MetadataLog` (``image``,
``submit``, ``append``/``outcome``, ``add_listener``), with the Raft log
(:mod:`chronik.cluster.node`) in place of the local metadata WAL:

* write: the command is encoded and committed through the controller (the
  Raft leader) -- proposed there, or forwarded to it from a follower --
  which returns once a majority has it durable (``metadata.commit =
  "quorum"``);
* apply: every node hands each committed entry, in offset order, to
  :meth:`ReplicatedMetadataLog.apply_committed` (the consensus node's
  ``on_commit``), which applies it to the image with the same code as a
  single node, records its result and notifies listeners; a submitter gets
  the result its own node computed when applying its offset (the image is
  deterministic, so every node computes the same one).

Metadata offsets are Raft offsets; a new leader's control entry takes an
offset too, so the image's ``applied_offset`` may skip numbers.

Restart: the image starts empty and the Raft log is replayed as the node
learns the commit point from the leader (entries already applied are
skipped).  There are no metadata snapshots in cluster mode yet, and a node
that cannot reach a majority serves an empty (or stale) image meanwhile.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..metadata.commands import Command, decode_command, encode_command
from ..metadata.image import CommandRejected, MetadataImage
from ..metadata.log import Listener
from .node import CommitUncertain, CommittedEntry, NotLeaderError

if TYPE_CHECKING:
    from .node import ConsensusNode

log = logging.getLogger(__name__)

RESULTS_KEPT = 4096
"""Results of recently applied offsets kept for their submitters (a submitter
asks right after its offset is applied; older ones are never asked for)."""


class ReplicatedMetadataLog:
    """The metadata image fed by the Raft log (see the module docstring)."""

    def __init__(self, submit_timeout: float = 10.0) -> None:
        self.image = MetadataImage()
        self.node: ConsensusNode | None = None
        self.submit_timeout = submit_timeout
        self._listeners: list[Listener] = []
        self._results: OrderedDict[int, tuple[Any, CommandRejected | None]] = OrderedDict()
        self._announce = True

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(offset, command, result, rejection)`` after each apply."""
        self._listeners.append(listener)

    def apply_committed(self, entry: CommittedEntry) -> None:
        """Apply one committed entry (in offset order); replayed offsets are skipped."""
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
        log.log(logging.INFO if self._announce else logging.DEBUG,
                "committed metadata offset %d, applied %d (%s)", entry.offset, entry.offset, command.type_name)
        self._announce = False
        for listener in self._listeners:
            listener(entry.offset, command, result, error)

    async def submit(self, command: Command) -> Any:
        """Commit ``command`` through the controller, apply it here, return its result.

        Raises :class:`CommandRejected` if applying rejected it, with
        ``NOT_CONTROLLER`` if no controller took it in time, and
        ``REQUEST_TIMED_OUT`` if the controller took it but did not answer
        (it may have been applied).  Cancellation: the command may still be
        committed and applied; only the wait for its result ends.
        """
        assert self.node is not None, "the consensus node is not running"
        try:
            offset = await self.node.submit(encode_command(command), timeout=self.submit_timeout)
        except NotLeaderError:
            raise CommandRejected("NOT_CONTROLLER", "no controller is available (no majority of voters reachable)") from None
        except CommitUncertain as exc:
            raise CommandRejected("REQUEST_TIMED_OUT", str(exc)) from None
        result, error = self._results.pop(offset)
        if error is not None:
            raise error
        return result

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
