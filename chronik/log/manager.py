"""The set of partition logs this node holds, kept in step with the metadata image.

:meth:`LogManager.sync_with` makes the logs on disk match the image: opens
(creating) every partition the image has, deletes the logs of topics that are
gone (or were re-created under a new topic id).  It runs at start-up, after
the metadata log is replayed -- which also removes directories left behind by
a crash between a DeleteTopic command and the deletion of its files -- and
after every metadata change that adds or removes partitions.

Partition directories are ``<data_dir>/<topic>-<partition>``; Kafka topic
names cannot contain ``/``, and the metadata log's own directory
(``__chronik_metadata-0``) is never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import trio

from ..metadata import MetadataImage
from ..metadata.log import METADATA_DIR
from ..storage import GroupCommitter
from .partition import PartitionLog, _read_partition_file

log = logging.getLogger(__name__)


class LogManager:
    """Partition logs by (topic, partition)."""

    def __init__(self, committer: GroupCommitter, data_dir: str, *, default_segment_bytes: int) -> None:
        self.committer = committer
        self.data_dir = data_dir
        self.default_segment_bytes = default_segment_bytes
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._lock = trio.Lock()

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def __iter__(self) -> Iterator[PartitionLog]:
        return iter(list(self._logs.values()))

    def __len__(self) -> int:
        return len(self._logs)

    async def sync_with(self, image: MetadataImage) -> None:
        """Open the partitions ``image`` has, delete the logs it no longer has.

        Cancellation: a deletion in progress completes (shielded), so a log
        is never left half-closed.
        """
        async with self._lock:
            wanted: dict[tuple[str, int], tuple[str, int]] = {}
            for topic in image.topics.values():
                segment_bytes = int(topic.configs.get("segment.bytes", self.default_segment_bytes))
                for index in range(len(topic.partitions)):
                    wanted[(topic.name, index)] = (topic.topic_id.hex, segment_bytes)
            for key, partition_log in list(self._logs.items()):
                want = wanted.get(key)
                if want is None or want[0] != partition_log.topic_id:
                    del self._logs[key]
                    with trio.CancelScope(shield=True):
                        await partition_log.delete()
                    log.info("deleted partition %s-%d", *key)
            self._remove_orphans(wanted)
            for key, (topic_id, segment_bytes) in wanted.items():
                if key not in self._logs:
                    self._open(key, topic_id, segment_bytes)

    def _open(self, key: tuple[str, int], topic_id: str, segment_bytes: int) -> None:
        topic, partition = key
        started = time.perf_counter()
        partition_log = PartitionLog.open(
            self.committer,
            f"{self.data_dir}/{topic}-{partition}",
            topic=topic,
            partition=partition,
            topic_id=topic_id,
            segment_bytes=segment_bytes,
        )
        self._logs[key] = partition_log
        recovery = partition_log.recovery
        if recovery is not None and recovery.batches:
            log.info(
                "recovered %s-%d: %d batches, offsets %d..%d in %.1f ms",
                topic, partition, recovery.batches, recovery.log_start_offset, recovery.log_end_offset,
                (time.perf_counter() - started) * 1000,
            )

    def _remove_orphans(self, wanted: dict[tuple[str, int], tuple[str, int]]) -> None:
        """Delete partition directories on disk that the image does not have."""
        backend = self.committer.backend
        for name in backend.list_dir(self.data_dir):
            if name == METADATA_DIR or "-" not in name:
                continue
            topic, _, number = name.rpartition("-")
            if not number.isdigit() or (topic, int(number)) in self._logs:
                continue
            directory = f"{self.data_dir}/{name}"
            try:
                meta = _read_partition_file(backend, directory)
            except (ValueError, NotADirectoryError, FileNotFoundError):
                continue  # not ours, or unreadable: leave it for an operator
            if meta is None:
                continue
            want = wanted.get((topic, int(number)))
            if want is not None and want[0] == meta.get("topic_id"):
                continue
            for entry in backend.list_dir(directory):
                backend.delete_file(f"{directory}/{entry}")
            backend.remove_dir(directory)
            log.info("removed the files of deleted partition %s", name)

    async def aclose(self) -> None:
        """Flush and close every log.  Cancellation: closing is shielded."""
        with trio.CancelScope(shield=True):
            for partition_log in self._logs.values():
                await partition_log.aclose()
        self._logs.clear()
