"""The metadata log: commands appended durably, applied in order, snapshotted.

Directory ``<data_dir>/__chronik_metadata-0``::

    <base:020d>.wal                WAL segments; entry index = metadata offset
    snapshot-<offset:020d>.json    image as of <offset> (latest two are kept)

Write path of :meth:`MetadataLog.submit`: encode the command, append it to the
WAL (offset = next metadata offset), and when the WAL reports the entry durable
(the ``on_durable`` hook, called by the group committer before any waiter
wakes) apply every newly durable command *in log order* to the image, record
each one's result, then notify listeners; finally the submitter wakes and gets
its command's result.  So: append (durable) -> apply -> wake -> answer.
A command submitted with an :class:`~chronik.metadata.view.Origin` (a
client's request) is first authorized by :attr:`MetadataLog.authorize`
against this image, with no checkpoint before the append: a single node is
its own controller.

Restart: load the newest valid snapshot, then replay the WAL entries after
it.  A snapshot is taken when ``snapshot_every`` commands were applied since
the last one; the WAL is rolled first so whole segments below the snapshot
can be deleted.

Snapshot file format: ``{"format": 1, "crc32c": <crc of the canonical JSON of
"image">, "image": {...}}`` (:func:`encode_image`; cluster mode stores the
same document in its Raft snapshots); a snapshot failing its CRC is ignored
(an older one, or a full replay, is used instead).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import crc32c

from ..storage import Appended, GroupCommitter, WriteAheadLog
from ..storage.files import read_file, replace_file_durably
from .commands import Command, decode_command, encode_command
from .image import CommandRejected, MetadataImage
from .view import CommandCheck, Origin

log = logging.getLogger(__name__)

METADATA_TOPIC = "__chronik_metadata"
METADATA_DIR = f"{METADATA_TOPIC}-0"
SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOT_SUFFIX = ".json"
SNAPSHOTS_KEPT = 2

Listener = Callable[[int, Command, Any, "CommandRejected | None"], None]


class MetadataGap(Exception):
    """The metadata log cannot be replayed: entries between snapshot and WAL are missing."""


@dataclass(slots=True)
class _Pending:
    offset: int
    command: Command
    segment: int
    end: int  # (segment, end) reached => durable
    result: Any = None
    error: CommandRejected | None = None
    applied: bool = False


class PendingCommand:
    """A command appended to the metadata log, its result still to come (see :meth:`MetadataLog.outcome`)."""

    __slots__ = ("pending", "appended")

    def __init__(self, pending: _Pending, appended: Appended) -> None:
        self.pending = pending
        self.appended = appended


@dataclass(frozen=True, slots=True)
class MetadataRecovery:
    snapshot_offset: int | None
    replayed: int
    applied_offset: int
    seconds: float


class MetadataLog:
    """The single writer of the metadata image (see the module docstring)."""

    def __init__(self, wal: WriteAheadLog, image: MetadataImage, directory: str, snapshot_every: int) -> None:
        self.wal = wal
        self.image = image
        self.directory = directory
        self.snapshot_every = snapshot_every
        self._pending: deque[_Pending] = deque()
        self._listeners: list[Listener] = []
        self._last_snapshot = image.applied_offset
        self.recovery: MetadataRecovery | None = None
        self.authorize: CommandCheck | None = None
        """Authorizes a command submitted with an origin (None: every command is taken)."""

    @classmethod
    def open(cls, committer: GroupCommitter, data_dir: str, *, snapshot_every: int = 10_000) -> "MetadataLog":
        started = time.perf_counter()
        directory = f"{data_dir}/{METADATA_DIR}"
        backend = committer.backend
        backend.make_dirs(directory)
        image, snapshot_offset = _load_newest_snapshot(backend, directory)
        holder: list[MetadataLog] = []
        wal = WriteAheadLog.open(
            committer,
            directory,
            segment_bytes=64 << 20,
            preallocate_bytes=1 << 20,
            start_index=image.applied_offset + 1,
            on_durable=lambda segment, end: holder[0]._on_durable(segment, end),
        )
        metadata = cls(wal, image, directory, snapshot_every)
        holder.append(metadata)
        replayed = 0
        for info in wal.segments():
            if info.last_index is not None and info.last_index <= image.applied_offset:
                continue
            for entry in wal.iter_entries(info.base_index):
                if entry.index <= image.applied_offset:
                    continue
                if entry.index != image.applied_offset + 1:
                    raise MetadataGap(
                        f"metadata log in {directory} jumps from offset {image.applied_offset} to {entry.index}: "
                        "entries are missing (deleted segments or a damaged snapshot)"
                    )
                try:
                    image.apply(entry.index, decode_command(entry.payload))
                except CommandRejected:
                    pass  # rejected then, rejected now: the image is unchanged
                replayed += 1
        metadata._last_snapshot = snapshot_offset if snapshot_offset is not None else -1
        metadata.recovery = MetadataRecovery(snapshot_offset, replayed, image.applied_offset, time.perf_counter() - started)
        return metadata

    @property
    def next_offset(self) -> int:
        last = self.wal.last_index
        return self.image.applied_offset + 1 if last is None else max(last, self.image.applied_offset) + 1

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(offset, command, result, rejection)`` after each apply."""
        self._listeners.append(listener)

    def append(self, command: Command) -> "PendingCommand":
        """Queue ``command`` on the WAL at the next offset; never blocks.

        Commands are applied in append order, so a caller that appends before
        its first checkpoint keeps its commands in its own order.  Await the
        result with :meth:`outcome`.  Raises
        :class:`~chronik.storage.LogDirectoryFailed` if the directory failed.
        """
        offset = self.next_offset
        appended = self.wal.append(offset, encode_command(command))
        location = appended.location
        pending = _Pending(offset, command, location.segment, location.position + location.size)
        self._pending.append(pending)
        return PendingCommand(pending, appended)

    async def outcome(self, handle: "PendingCommand") -> Any:
        """Wait until the command is durable and applied; return its result.

        Raises :class:`CommandRejected` if applying rejected it, and
        :class:`~chronik.storage.LogDirectoryFailed` if the append failed.
        Cancellation: the command may still be appended and applied; only the
        wait for its result ends.
        """
        pending = handle.pending
        await self.wal.wait_durable(handle.appended)
        assert pending.applied, "durable metadata command was not applied"
        if self.image.applied_offset - self._last_snapshot >= self.snapshot_every:
            self.take_snapshot()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def submit(self, command: Command, origin: Origin | None = None) -> Any:
        """Append ``command`` durably, apply it, return its result (:meth:`append` + :meth:`outcome`).

        With ``origin`` (a client asked for it) :attr:`authorize` checks it first;
        a refusal raises :class:`CommandRejected` and nothing is appended.
        """
        if origin is not None and self.authorize is not None:
            self.authorize(command, origin)
        return await self.outcome(self.append(command))

    def _on_durable(self, segment: int, end: int) -> None:
        pending = self._pending
        while pending and (pending[0].segment, pending[0].end) <= (segment, end):
            item = pending.popleft()
            try:
                item.result = self.image.apply(item.offset, item.command)
            except CommandRejected as exc:
                item.error = exc
            item.applied = True
            for listener in self._listeners:
                listener(item.offset, item.command, item.result, item.error)

    def take_snapshot(self) -> int:
        """Write the image durably as a snapshot; drop WAL segments it covers."""
        offset = self.image.applied_offset
        data = encode_image(self.image)
        backend = self.wal.backend
        replace_file_durably(backend, self.directory, f"{SNAPSHOT_PREFIX}{offset:020d}{SNAPSHOT_SUFFIX}", data)
        self._last_snapshot = offset
        # Keep the newest snapshots, and the WAL from the oldest kept one on,
        # so a damaged newest snapshot can fall back to the previous one.
        offsets = _snapshot_offsets(backend, self.directory)
        for old in offsets[:-SNAPSHOTS_KEPT]:
            backend.delete_file(f"{self.directory}/{SNAPSHOT_PREFIX}{old:020d}{SNAPSHOT_SUFFIX}")
        oldest_kept = offsets[-SNAPSHOTS_KEPT:][0]
        self.wal.roll()
        segments = self.wal.segments()
        for current, following in zip(segments, segments[1:]):
            if following.base_index <= oldest_kept + 1:
                self.wal.delete_segment(current.base_index)
        log.info("metadata snapshot taken at offset %d (%d bytes)", offset, len(data))
        return offset

    async def aclose(self) -> None:
        await self.wal.aclose()


def _snapshot_offsets(backend: Any, directory: str) -> list[int]:
    offsets = []
    for name in backend.list_dir(directory):
        if name.startswith(SNAPSHOT_PREFIX) and name.endswith(SNAPSHOT_SUFFIX):
            digits = name[len(SNAPSHOT_PREFIX) : -len(SNAPSHOT_SUFFIX)]
            if digits.isdigit():
                offsets.append(int(digits))
    return sorted(offsets)


def encode_image(image: MetadataImage) -> bytes:
    """The snapshot document of ``image`` (format in the module docstring)."""
    data = image.to_snapshot()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({"format": 1, "crc32c": crc32c.crc32c(canonical), "image": data}).encode()


def decode_image(raw: bytes) -> MetadataImage:
    """The image of a snapshot document; ValueError (KeyError, TypeError) if it is damaged."""
    doc = json.loads(raw)
    canonical = json.dumps(doc["image"], sort_keys=True, separators=(",", ":")).encode()
    if doc.get("format") != 1 or crc32c.crc32c(canonical) != doc["crc32c"]:
        raise ValueError("checksum mismatch")
    return MetadataImage.from_snapshot(doc["image"])


def _load_newest_snapshot(backend: Any, directory: str) -> tuple[MetadataImage, int | None]:
    for offset in reversed(_snapshot_offsets(backend, directory)):
        path = f"{directory}/{SNAPSHOT_PREFIX}{offset:020d}{SNAPSHOT_SUFFIX}"
        raw = read_file(backend, path) or b""
        try:
            image = decode_image(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring metadata snapshot %s: %s", path, exc)
            continue
        log.info("metadata snapshot loaded at offset %d", offset)
        return image, offset
    return MetadataImage(), None
