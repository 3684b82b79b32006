"""The set of partition logs this node holds, kept in step with the metadata image.

:meth:`LogManager.sync_with` makes the logs on disk match the image: opens
(creating) every partition the image has, deletes the logs of topics that are
gone (or were re-created under a new topic id).  It runs at start-up, after
the metadata log is replayed -- the first pass also removes directories left
behind by a crash between a DeleteTopic command and the deletion of its files.

After a metadata change the broker calls :meth:`request_sync` and answers its
client at once (as Kafka does: CreateTopics returns once the metadata is
committed; the logs follow).  The background task :meth:`run` then brings the
logs in step; a request that needs a partition calls :meth:`in_step_with`
first, which does the pending work itself if the background task has not yet.
A created topic is durable through its metadata command: after a crash the
start-up pass creates whatever partitions were still missing.

In cluster mode (``replica_of`` set) only the partitions that list this node
among their replicas are opened, and the start-up sweep of orphaned
directories is skipped: the image is still empty when the node starts (it
is rebuilt from the Raft log), so it cannot tell an orphan from a live log.

In cluster mode the manager also keeps the high-watermark checkpoint
(:mod:`chronik.log.checkpoint`): read before the first log opens (each
log's high watermark starts from it), written by :meth:`run` every few
seconds while a high watermark moved, and once more by :meth:`aclose`.

Partition directories are ``<data_dir>/<topic>-<partition>``; Kafka topic
names cannot contain ``/``, and the metadata log's own directory
(``__chronik_metadata-0``) is never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import trio

from ..metadata import MetadataImage
from ..metadata.log import METADATA_DIR
from ..storage import CorruptEntryError, GroupCommitter
from ..storage.files import run_blocking
from .checkpoint import CHECKPOINT_SECONDS, Checkpoint, read_checkpoint, write_checkpoint
from .local import read_partition_file
from .partition import PartitionLog, PartitionUnreadable

log = logging.getLogger(__name__)

OPEN_CHUNK = 16
"""Partitions opened (created) per worker-thread call; cancellation is seen between calls."""

OFFLINE_RETRY_SECONDS = 5.0
"""How often partitions whose logs could not be created or opened (ENOSPC) are tried again."""


class LogManager:
    """Partition logs by (topic, partition)."""

    def __init__(self, committer: GroupCommitter, data_dir: str, *, default_segment_bytes: int,
                 replica_of: int | None = None) -> None:
        self.committer = committer
        self.replica_of = replica_of
        self.data_dir = data_dir
        self.default_segment_bytes = default_segment_bytes
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._lock = trio.Lock()
        self._known: dict[str, tuple[str, int]] = {}  # topic -> (topic id hex, partitions) in step
        self._sweep_orphans = replica_of is None
        self._requested_syncs = 0  # request_sync() calls so far
        self._completed_syncs = 0  # of those, how many a finished pass covered
        self._sync_requested = trio.Event()
        self.on_open: Callable[[PartitionLog], None] | None = None
        """Called with every log opened, before any request can use it (cluster mode: its replication role)."""
        self.offline: dict[tuple[str, int], str] = {}
        """Partitions whose logs could not be read, and why (served as KAFKA_STORAGE_ERROR)."""
        self._retry: set[tuple[str, int]] = set()
        """Of those, the ones that failed with an OS error (a full disk): opened again every
        :data:`OFFLINE_RETRY_SECONDS` until they come up."""
        self._checkpoint: Checkpoint | None = None  # cluster mode: as read at start-up, then as last written

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def __iter__(self) -> Iterator[PartitionLog]:
        return iter(list(self._logs.values()))

    def __len__(self) -> int:
        return len(self._logs)

    def request_sync(self) -> None:
        """The image changed: bring the logs in step soon (never blocks)."""
        self._requested_syncs += 1
        self._sync_requested.set()

    async def in_step_with(self, image: MetadataImage) -> None:
        """Return once the logs match ``image`` (at once when nothing is pending).

        A pass already running is waited for (it may not have opened a
        partition yet), then any change it did not cover is synced.
        """
        if self._completed_syncs < self._requested_syncs:
            await self.sync_with(image)

    async def run(self, image_source: Callable[[], MetadataImage], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync the logs after every :meth:`request_sync`, until cancelled.

        Cancellation: a deletion in progress completes (see :meth:`sync_with`).
        """
        async with trio.open_nursery() as nursery:
            if self.replica_of is not None:
                nursery.start_soon(self._checkpoint_loop)
            task_status.started()
            while True:
                if self._retry:
                    with trio.move_on_after(OFFLINE_RETRY_SECONDS):
                        await self._sync_requested.wait()
                    if self._retry:
                        self.request_sync()  # try the partitions that could not be opened again
                await self._sync_requested.wait()
                self._sync_requested = trio.Event()
                await self.in_step_with(image_source())

    def high_watermarks(self) -> Checkpoint:
        """What a checkpoint written now would hold: every log's high watermark
        (and the last checkpointed one of partitions that are offline)."""
        entries = {key: hw for key, hw in (self._checkpoint or {}).items() if key in self.offline}
        entries.update(((p.topic, p.partition), p.high_watermark) for p in self._logs.values())
        return entries

    async def write_checkpoint(self) -> bool:
        """Write the high-watermark checkpoint if it changed (cluster mode, once a log
        opened); True if written.  The fsyncs run in a worker thread.

        Cancellation: the write in progress completes; the next one retries.
        """
        if self._checkpoint is None or self.committer.failure is not None:
            return False
        entries = self.high_watermarks()
        if entries == self._checkpoint:
            return False
        await run_blocking(self.committer.backend, write_checkpoint, self.committer.backend, self.data_dir, entries)
        self._checkpoint = entries
        return True

    async def _checkpoint_loop(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_SECONDS)
            try:
                await self.write_checkpoint()
            except OSError as exc:
                log.warning("could not write the high-watermark checkpoint: %s", exc)

    async def sync_with(self, image: MetadataImage) -> None:
        """Open the partitions ``image`` has, delete the logs it no longer has.

        Only topics that changed since the last pass are looked at, and
        partitions offline for lack of space are tried again.
        Cancellation: a deletion in progress completes (shielded), so a log
        is never left half-closed; new partitions are created
        :data:`OPEN_CHUNK` at a time, each chunk registered whatever happens,
        and a cancellation between chunks leaves the rest to the next pass
        (start-up, after a shutdown).
        """
        async with self._lock:
            covers = self._requested_syncs
            changed = {
                name: (topic.topic_id.hex, len(topic.partitions), int(topic.configs.get("segment.bytes", self.default_segment_bytes)))
                for name, topic in image.topics.items()
                if self._known.get(name, (None, -1))[1] != len(topic.partitions)
                or self._known[name][0] != topic.topic_id.hex
            }
            gone = [name for name in self._known if name not in image.topics]
            for name in gone + list(changed):
                known = self._known.pop(name, None)
                if known is None or (name in changed and changed[name][0] == known[0]):
                    continue  # new topic, or more partitions of the same one
                for index in range(known[1]):
                    self.offline.pop((name, index), None)
                    self._retry.discard((name, index))
                    partition_log = self._logs.pop((name, index), None)
                    if partition_log is not None:
                        with trio.CancelScope(shield=True):
                            await partition_log.delete()
                log.info("deleted the logs of topic %s", name)
            if self._sweep_orphans:
                self.committer.backend.make_dirs(self.data_dir)
                self._remove_orphans(image)
                self._sweep_orphans = False
            to_open = [
                ((name, index), topic_id, segment_bytes)
                for name, (topic_id, partitions, segment_bytes) in changed.items()
                for index in range(partitions)
                if (name, index) not in self._logs
                and (self.replica_of is None or self.replica_of in image.topics[name].partitions[index].replicas)
            ]
            for key in sorted(self._retry):
                topic = image.topics.get(key[0])
                if topic is None or key[1] >= len(topic.partitions):
                    self._retry.discard(key)
                    self.offline.pop(key, None)
                elif key not in self._logs and key[0] not in changed:
                    to_open.append((key, topic.topic_id.hex,
                                    int(topic.configs.get("segment.bytes", self.default_segment_bytes))))
            # Creating a partition costs a few fsyncs (~1 ms, far more on a busy
            # disk): done in a worker thread so the event loop keeps serving
            # meanwhile (inline in memory, see run_blocking), OPEN_CHUNK at a
            # time so that a shutdown need not wait for hundreds of new
            # partitions (start-up creates the rest).  A chunk is not abandoned
            # on cancellation: its logs are always registered.
            for start in range(0, len(to_open), OPEN_CHUNK):
                if start:
                    await trio.lowlevel.checkpoint_if_cancelled()
                chunk = to_open[start:start + OPEN_CHUNK]
                for key, partition_log in await run_blocking(self.committer.backend, self._open_all, chunk):
                    if self.on_open is not None:
                        self.on_open(partition_log)
                    self._logs[key] = partition_log
            for name, (topic_id, partitions, _) in changed.items():
                self._known[name] = (topic_id, partitions)
            self._completed_syncs = max(self._completed_syncs, covers)

    def _open_all(self, to_open: list[tuple[tuple[str, int], str, int]]) -> list[tuple[tuple[str, int], PartitionLog]]:
        """Open (create, recover) partitions, then make their directory entries durable.

        Runs in a worker thread; touches no shared state but the files of these partitions.
        """
        opened = []
        if self.replica_of is not None and self._checkpoint is None:
            self._checkpoint = read_checkpoint(self.committer.backend, self.data_dir)
        for (topic, partition), topic_id, segment_bytes in to_open:
            started = time.perf_counter()
            try:
                partition_log = PartitionLog.open(
                    self.committer,
                    f"{self.data_dir}/{topic}-{partition}",
                    topic=topic,
                    partition=partition,
                    topic_id=topic_id,
                    segment_bytes=segment_bytes,
                    # cluster mode: never above what the ISR had; 0 (raised to the
                    # log start) for a log the checkpoint does not know yet
                    high_watermark=None if self._checkpoint is None else self._checkpoint.get((topic, partition), 0),
                )
            except (PartitionUnreadable, CorruptEntryError, ValueError) as exc:
                # Damage inside the durable part of the log (not a torn tail,
                # which recovery cuts), a segment that is not one, or a directory
                # holding another topic id: keep serving everything else, keep the
                # files for the operator, answer this partition KAFKA_STORAGE_ERROR.
                log.error("partition %s-%d is offline: %s", topic, partition, exc)
                self.offline[(topic, partition)] = str(exc)
                continue
            except OSError as exc:
                # No room (ENOSPC) or an unusable directory: this partition stays
                # offline (KAFKA_STORAGE_ERROR) and is tried again later; every
                # other partition is served.
                if (topic, partition) not in self._retry:
                    log.error("partition %s-%d is offline: cannot open its log: %s (retrying every %.0f s)",
                              topic, partition, exc, OFFLINE_RETRY_SECONDS)
                self.offline[(topic, partition)] = f"cannot open the log: {exc}"
                self._retry.add((topic, partition))
                continue
            if self._retry:
                if (topic, partition) in self._retry:
                    log.info("partition %s-%d is online again", topic, partition)
                self._retry.discard((topic, partition))
            self.offline.pop((topic, partition), None)
            opened.append(((topic, partition), partition_log))
            recovery = partition_log.recovery
            if recovery is not None and recovery.batches:
                log.info(
                    "recovered %s-%d: %d batches, offsets %d..%d in %.1f ms",
                    topic, partition, recovery.batches, recovery.log_start_offset, recovery.log_end_offset,
                    (time.perf_counter() - started) * 1000,
                )
        try:
            self.committer.backend.sync_dir(self.data_dir)
        except OSError as exc:
            log.warning("could not sync %s after opening partitions: %s", self.data_dir, exc)
        return opened

    def _remove_orphans(self, image: MetadataImage) -> None:
        """Delete partition directories on disk that the image does not have."""
        backend = self.committer.backend
        for name in backend.list_dir(self.data_dir):
            if name == METADATA_DIR or "-" not in name:
                continue
            topic_name, _, number = name.rpartition("-")
            if not number.isdigit() or (topic_name, int(number)) in self._logs:
                continue
            directory = f"{self.data_dir}/{name}"
            try:
                meta = read_partition_file(backend, directory)
            except (ValueError, NotADirectoryError, FileNotFoundError):
                continue  # not ours, or unreadable: leave it for an operator
            if meta is None:
                continue
            topic = image.topics.get(topic_name)
            if topic is not None and int(number) < len(topic.partitions) and topic.topic_id.hex == meta.get("topic_id"):
                continue
            for entry in backend.list_dir(directory):
                backend.delete_file(f"{directory}/{entry}")
            backend.remove_dir(directory)
            log.info("removed the files of deleted partition %s", name)

    async def aclose(self) -> None:
        """Flush and close every log, then write the high-watermark checkpoint (cluster mode).

        Cancellation: closing is shielded.
        """
        with trio.CancelScope(shield=True):
            # Concurrently: each close may write its recovery point (fsyncs, in a
            # worker thread); one after the other, a shutdown took ~25 ms a partition.
            async with trio.open_nursery() as nursery:
                for partition_log in self._logs.values():
                    nursery.start_soon(partition_log.aclose)
            try:
                await self.write_checkpoint()
            except OSError as exc:
                log.warning("could not write the high-watermark checkpoint: %s", exc)
        self._logs.clear()
