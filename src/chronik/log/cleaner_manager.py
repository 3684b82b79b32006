"""The log cleaner service: which partition to compact when, with bounded concurrency.

Kafka's ``LogCleanerManager`` semantics:

* A partition is a candidate when its topic's ``cleanup.policy`` includes
  ``compact``.  Its *cleanable* section is its sealed segments from the log
  start, wholly below the last stable offset (so every transaction in it
  is decided; this is at most the high watermark), up to the first segment holding a
  record newer than ``min.compaction.lag.ms`` -- the active segment is never
  cleaned.  The *dirty* part is what lies at or above the first dirty offset
  (where the previous pass ended; the log start at first).
* Its dirty ratio is dirty bytes / cleanable bytes.  The cleaner picks the
  partition with the highest ratio among those at or above
  ``min.cleanable.dirty.ratio``, or whose oldest dirty record is older than
  ``max.compaction.lag.ms`` (then whatever its ratio).
* ``log.cleaner.threads`` passes run at once, each on its own partition, each
  with ``log.cleaner.dedupe.buffer.size / threads`` of offset map and
  ``log.cleaner.io.max.bytes.per.second / threads`` of I/O (bytes read plus
  written; Kafka's limit is for all threads together).  When nothing is
  cleanable a worker sleeps ``log.cleaner.backoff.ms``.
* The rewriting runs in a child process at a low CPU priority
  (:class:`chronik.log.cleaner_process.CleanerProcess`, one per pass at a
  time, kept for the next pass; waited for by a worker thread, which then
  commits the swaps), so its CPU work never holds the broker's GIL; on the
  in-memory backends it runs inline
  (:func:`chronik.log.cleaner.clean_partition`).  The result is installed on
  the event loop.  A pass that fails marks its partition *uncleanable* (logged
  with the reason, counted in the metrics) until the broker restarts.

Every second the service also rolls active segments older than ``segment.ms``
(for compacted topics, or older than ``max.compaction.lag.ms``), so an idle
partition's data becomes cleanable (and deletable by retention).

Cleaner checkpoint (``<data_dir>/cleaner-offset-checkpoint``, replaced
atomically): JSON ``{"format": 1, "offsets": [[topic, partition, topic_id,
first_dirty_offset], ...]}``.  Losing it only costs a pass over the whole
log (cleaning is idempotent).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import trio

from ..metadata.topic_configs import is_compacted
from ..storage import GroupCommitter, MemoryBackend, SegmentFile
from ..storage.files import close_files, read_file, replace_file_durably, run_blocking
from ..storage.wal import discard_replacements
from .cleaner import Pacer, PassStats, Span, clean_partition, commit
from .cleaner_process import CleanerProcess
from .partition import PartitionLog

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "cleaner-offset-checkpoint"
ROLL_CHECK_SECONDS = 1.0
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Candidate:
    log: PartitionLog
    spans: list[Span]
    first_dirty: int
    ratio: float
    overdue: bool


class LogCleaner:
    """Compacts the partition logs of a :class:`~chronik.log.manager.LogManager`.

    ``logs``: the partition logs (iterable, re-read every round);
    ``topic_config(topic)``: the topic's effective configs, None if gone.
    ``on_pass(log, stats)`` is called after each pass installed (metrics).
    """

    def __init__(self, committer: GroupCommitter, data_dir: str, logs: Iterable[PartitionLog],
                 topic_config: Callable[[str], Mapping[str, str] | None], *, enabled: bool = True,
                 threads: int = 1, backoff_ms: int = 15000, dedupe_buffer_bytes: int = 128 << 20,
                 io_max_bytes_per_second: float = sys.float_info.max) -> None:
        self.committer = committer
        self.data_dir = data_dir
        self.logs = logs
        self.topic_config = topic_config
        self.enabled = enabled
        self.threads = threads
        self.backoff = backoff_ms / 1000
        self.budget_bytes = max(1, dedupe_buffer_bytes // threads)
        unlimited = io_max_bytes_per_second >= sys.float_info.max
        self.io_bytes_per_second = io_max_bytes_per_second if unlimited else io_max_bytes_per_second / threads
        self._processes: list[CleanerProcess] = []  # idle cleaner processes, for the next passes
        self._running: set[CleanerProcess] = set()  # cleaner processes running a pass
        self._stopping = False  # run() was cancelled: passes in flight are being abandoned
        self.on_pass: Callable[[PartitionLog, PassStats], None] | None = None
        self.on_error: Callable[[PartitionLog], None] | None = None
        self.uncleanable: dict[tuple[str, int], str] = {}
        """Partitions a pass failed on, and why (not retried until restart)."""
        self.dirtiest_ratio = 0.0
        """The highest dirty ratio seen by the last scheduling round."""
        self._first_dirty: dict[tuple[str, int], tuple[str, int]] = {}  # -> (topic id, first dirty offset)
        self._busy: set[tuple[str, int]] = set()
        self._wake = trio.Event()

    # -- checkpoint ------------------------------------------------------------

    def _load_checkpoint(self) -> None:
        raw = read_file(self.committer.backend, f"{self.data_dir}/{CHECKPOINT_FILE}")
        if raw is None:
            return
        try:
            data = json.loads(raw)
            if data.get("format") != _FORMAT:
                raise ValueError("unknown format")
            for topic, partition, topic_id, offset in data["offsets"]:
                self._first_dirty[(str(topic), int(partition))] = (str(topic_id), int(offset))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring a damaged %s (%s): the next passes clean whole logs", CHECKPOINT_FILE, exc)
            self._first_dirty.clear()

    def _checkpoint_bytes(self) -> bytes:
        return json.dumps({"format": _FORMAT, "offsets": [
            [topic, partition, topic_id, offset] for (topic, partition), (topic_id, offset) in sorted(self._first_dirty.items())
        ]}).encode()

    def first_dirty_offset(self, partition_log: PartitionLog) -> int:
        """Where the dirty section of ``partition_log`` starts."""
        known = self._first_dirty.get((partition_log.topic, partition_log.partition))
        offset = known[1] if known is not None and known[0] == partition_log.topic_id else 0
        return max(offset, partition_log.log_start_offset)

    # -- scheduling ------------------------------------------------------------

    def candidates(self, now_ms: int) -> list[Candidate]:
        """Every partition that needs cleaning now, dirtiest first (also updates :attr:`dirtiest_ratio`)."""
        found = []
        dirtiest = 0.0
        for partition_log in list(self.logs):
            key = (partition_log.topic, partition_log.partition)
            if key in self._busy or key in self.uncleanable or partition_log.closed:
                continue
            configs = self.topic_config(partition_log.topic)
            if configs is None or not is_compacted(configs["cleanup.policy"]):
                continue
            min_lag = int(configs["min.compaction.lag.ms"])
            spans = []
            for span in partition_log.sealed_segments():
                if min_lag > 0 and span[4] > now_ms - min_lag:
                    break
                spans.append(Span(*span))
            if not spans:
                continue
            first_dirty = self.first_dirty_offset(partition_log)
            dirty = [s for s in spans if s.next_offset > first_dirty]
            if not dirty:
                continue
            dirty_bytes = sum(s.data_bytes for s in dirty)
            total = sum(s.data_bytes for s in spans)
            ratio = dirty_bytes / total if total else 0.0
            dirtiest = max(dirtiest, ratio)
            overdue = min(s.first_timestamp for s in dirty) < now_ms - int(configs["max.compaction.lag.ms"])
            if ratio >= float(configs["min.cleanable.dirty.ratio"]) or overdue:
                found.append(Candidate(partition_log, spans, first_dirty, ratio, overdue))
        self.dirtiest_ratio = dirtiest
        found.sort(key=lambda c: (not c.overdue, -c.ratio))
        return found

    def roll_due_segments(self, now_ms: int) -> int:
        """Roll active segments older than ``segment.ms`` (compacted topics: or
        ``max.compaction.lag.ms``); return how many rolled."""
        rolled = 0
        for partition_log in list(self.logs):
            configs = self.topic_config(partition_log.topic)
            if configs is None or partition_log.closed:
                continue
            age = int(configs["segment.ms"])
            if is_compacted(configs["cleanup.policy"]):
                age = min(age, int(configs["max.compaction.lag.ms"]))
            if partition_log.roll_if_older(now_ms, age):
                rolled += 1
        return rolled

    # -- running ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Roll due segments every second and (if enabled) clean, until cancelled.

        Cancellation: a pass still running in a cleaner process is abandoned
        (as Kafka's cleaner threads abort theirs on shutdown): the process is
        killed and the swap files it wrote are deleted, so the log stays as it
        was (a long pass at low priority on a busy machine would otherwise hold
        up the broker's shutdown).  A pass the process had finished is
        committed and installed as usual.  An inline pass (in-memory backends)
        runs to its end.  Then the service stops.
        """
        await run_blocking(self.committer.backend, self._load_checkpoint)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._roll_loop)
                if self.enabled:
                    nursery.start_soon(self._abort_passes_when_cancelled)
                    for _ in range(self.threads):
                        nursery.start_soon(self._worker)
                task_status.started()
        finally:
            self.close()

    async def _abort_passes_when_cancelled(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._stopping = True
            for process in list(self._running):
                process.abort()

    def close(self) -> None:
        """Stop the idle cleaner processes (each exits as its stdin closes, at once).
        Call it when no pass runs; :meth:`run` does on its way out."""
        while self._processes:
            self._processes.pop().close()

    def wake(self) -> None:
        """Look for work now rather than after the backoff (tests, config changes)."""
        self._wake.set()

    async def _roll_loop(self) -> None:
        while True:
            self.roll_due_segments(int(time.time() * 1000))
            await trio.sleep(ROLL_CHECK_SECONDS)

    async def _worker(self) -> None:
        while True:
            cleaned = False
            for candidate in self.candidates(int(time.time() * 1000)):
                key = (candidate.log.topic, candidate.log.partition)
                if key in self._busy:
                    continue
                cleaned = await self.clean(candidate)
                break
            if not cleaned:
                with trio.move_on_after(self.backoff):
                    await self._wake.wait()
                self._wake = trio.Event()
            else:
                await trio.sleep(0)

    async def clean(self, candidate: Candidate) -> bool:
        """One pass over one partition; False if it could not start (busy, closed).

        Cancellation: see :meth:`run`.
        """
        partition_log = candidate.log
        key = (partition_log.topic, partition_log.partition)
        configs = self.topic_config(partition_log.topic)
        if configs is None or key in self._busy or not partition_log.begin_cleaning():
            return False
        self._busy.add(key)
        params = dict(segment_bytes=int(configs["segment.bytes"]), budget_bytes=self.budget_bytes,
                      delete_retention_ms=int(configs["delete.retention.ms"]), now_ms=int(time.time() * 1000),
                      aborted=[tuple(txn) for txn in partition_log.producers.aborted],
                      keep=partition_log.producers.batches_to_keep())

        def in_process(process: CleanerProcess) -> PassStats:
            stats = process.run(partition_log.directory, candidate.spans, candidate.first_dirty,
                                io_max_bytes_per_second=self.io_bytes_per_second, **params)
            commit(partition_log.wal, stats)
            return stats

        try:
            if isinstance(self.committer.backend, MemoryBackend):
                stats = await run_blocking(self.committer.backend, lambda: clean_partition(
                    partition_log.wal, candidate.spans, candidate.first_dirty, pause=Pacer(self.io_bytes_per_second),
                    **params))
            else:
                process = self._processes.pop() if self._processes else CleanerProcess()
                self._running.add(process)
                try:
                    stats = await trio.to_thread.run_sync(in_process, process)
                except Exception:
                    # the pass failed or was abandoned in the process (commit() never raises): no commit
                    # is under way, so the swap files it may have left go, before deletions resume
                    with trio.CancelScope(shield=True):
                        left = await run_blocking(self.committer.backend, discard_replacements, self.committer.backend,
                                                  partition_log.directory)
                    if not self._stopping:
                        raise
                    log.info("log cleaner: abandoned the pass over %s-%d, the cleaner is stopping (%d unfinished "
                             "replacement file(s) deleted)", *key, len(left))
                    return True
                finally:
                    self._running.discard(process)
                    self._processes.append(process)
            if partition_log.closed:
                return True
            old_files: list[SegmentFile] = []
            try:
                for replacement, rows in stats.replacements:
                    old_files += partition_log.install_cleaned(replacement, rows)
            finally:  # off the event loop: closing a deleted segment frees it (see install_cleaned)
                with trio.CancelScope(shield=True):
                    await run_blocking(self.committer.backend, close_files, old_files)
            partition_log.producers.forget_aborted_markers(set(stats.markers_removed))
            if stats.error is not None:
                raise stats.error
            self._first_dirty[key] = (partition_log.topic_id, stats.end_offset)
            data = self._checkpoint_bytes()
            await run_blocking(self.committer.backend, replace_file_durably, self.committer.backend, self.data_dir,
                               CHECKPOINT_FILE, data)
        except Exception as exc:  # noqa: BLE001 -- any failure: leave this partition alone, keep the broker serving
            self.uncleanable[key] = f"{type(exc).__name__}: {exc}"
            log.error("log cleaner: %s-%d is uncleanable until restart: %s", *key, self.uncleanable[key])
            if self.on_error is not None:
                self.on_error(partition_log)
            return True
        finally:
            self._busy.discard(key)
            partition_log.end_cleaning()
        log.info(
            "log cleaner: cleaned %s-%d offsets %d..%d (dirty ratio %.2f%s): %d -> %d segment(s), "
            "%.1f -> %.1f MB (%.0f%%), %d of %d records kept, %d tombstone(s) removed, %d aborted record(s) "
            "and %d marker(s) removed, %d keys, in %.2f s",
            partition_log.topic, partition_log.partition, stats.first_offset, stats.end_offset, candidate.ratio,
            ", overdue by max.compaction.lag.ms" if candidate.overdue else "", stats.segments_before,
            stats.segments_after, stats.bytes_read / 1e6, stats.bytes_written / 1e6, 100 * stats.ratio,
            stats.records_kept, stats.records_read, stats.tombstones_removed, stats.aborted_removed,
            len(stats.markers_removed), stats.keys, stats.seconds)
        if self.on_pass is not None:
            self.on_pass(partition_log, stats)
        return True


__all__ = ["CHECKPOINT_FILE", "Candidate", "LogCleaner"]
