"""Segments and the batch index of one partition (Kafka's LogSegment, OffsetIndex, TimeIndex).

A partition's record batches live in the segments of its write-ahead log
(:mod:`chronik.storage.wal`), one WAL entry per batch.  On disk::

    <base_offset:020d>.wal   one segment; its name is the base offset of its
                             first batch (or, for an empty log, the offset
                             the next batch gets).  Entry: CRC-32C, length,
                             index = the batch's base offset, payload = the
                             record batch exactly as served (offsets stamped)

The WAL checksums every entry (length, index and payload); the record
batch's own CRC covers its records.  Kafka keeps an offset index and a time
index file per segment; here :class:`BatchIndex` is one in-memory index over
all segments, rebuilt on open from the recovered batch headers (the WAL has
already cut a torn tail, so it covers CRC-checked entries only), and never
written to disk.

A future per-segment index (the aborted-transaction index of transactions,
Kafka's ``TransactionIndex``) belongs beside :class:`BatchIndex` here; a
segment rewrite and swap (compaction) replaces a segment's entries, after
which the index is rebuilt for the swapped range.
"""

from __future__ import annotations

import bisect
from array import array
from itertools import accumulate, islice
from typing import NamedTuple

from ..protocol import BatchHeader
from ..storage import EntryLocation
from ..storage.wal import ENTRY_HEADER


class BatchRows(NamedTuple):
    """Index rows of batches, column by column (``array('q')``, no object per batch):
    what a cleaning pass reports of the batches it kept (see :meth:`BatchIndex.replace_range`)."""

    bases: array  # type: ignore[type-arg]
    lasts: array  # type: ignore[type-arg]
    max_timestamps: array  # type: ignore[type-arg]

    @classmethod
    def empty(cls) -> "BatchRows":
        return cls(array("q"), array("q"), array("q"))

    def add(self, header: BatchHeader) -> None:
        self.bases.append(header.base_offset)
        self.lasts.append(header.last_offset)
        self.max_timestamps.append(header.max_timestamp)


class BatchIndex:
    """Offset and time index of a partition's stored batches, in offset order.

    One row per batch: base offset, last offset, max timestamp, the running
    maximum of max timestamps (for time lookups), and its WAL location
    (segment base, byte position, entry size on disk).

    Invariants
    ----------
    * Rows are in offset order and the offset ranges do not overlap: base
      offsets and last offsets both strictly increase.
    * The running max timestamp never decreases.  After a prefix is trimmed
      or a range compacted (:meth:`replace_range`) it may still count the
      timestamps of dropped rows: an upper bound, which only makes a time
      lookup start its scan earlier.
    * Every column has the same length; rows are added only at the end
      (:meth:`append`) and removed only by :meth:`keep`, which cuts every
      column at once (a suffix after a truncation, a prefix after segments
      are deleted, all of them on a restart), except that :meth:`replace_range`
      swaps the rows of a compacted range for fewer rows in the same range.

    The columns are ``array('q')``: plain machine integers, not objects --
    compact, and invisible to the garbage collector (a million indexed
    batches must not slow every full GC).
    """

    __slots__ = ("_bases", "_lasts", "_max_timestamps", "_running_max_timestamp", "_segments", "_positions",
                 "_sizes")

    def __init__(self) -> None:
        self._bases = array("q")
        self._lasts = array("q")
        self._max_timestamps = array("q")
        self._running_max_timestamp = array("q")
        self._segments = array("q")
        self._positions = array("q")
        self._sizes = array("q")

    def _columns(self) -> tuple[array, ...]:  # type: ignore[type-arg]
        return (self._bases, self._lasts, self._max_timestamps, self._running_max_timestamp, self._segments,
                self._positions, self._sizes)

    def __len__(self) -> int:
        return len(self._bases)

    def append(self, header: BatchHeader, location: EntryLocation) -> None:
        """Add the batch ``header`` stored at ``location``, after every indexed batch."""
        self._bases.append(header.base_offset)
        self._lasts.append(header.last_offset)
        self._max_timestamps.append(header.max_timestamp)
        previous = self._running_max_timestamp[-1] if self._running_max_timestamp else -1
        self._running_max_timestamp.append(max(previous, header.max_timestamp))
        self._segments.append(location.segment)
        self._positions.append(location.position)
        self._sizes.append(location.size)

    def replace_range(self, first: int, end: int, rows: BatchRows, segment: int,
                      positions: array, sizes: array) -> None:  # type: ignore[type-arg]
        """Replace the rows of the batches based in ``[first, end)`` with ``rows``, stored in
        WAL segment ``segment`` at ``positions`` with ``sizes``: a compacted
        segment swapped in.  ``rows`` must lie in the same offset range, in
        order, with max timestamps no higher than those of the rows they
        replace (a cleaned batch keeps a subset of its records), so the running
        max timestamps of the rows after the range stay upper bounds and are
        left alone: the work is slicing columns plus one pass over the new rows,
        however long the log is (this runs on the event loop)."""
        i, j = self.starting_at(first), self.starting_at(end)
        count = len(rows.bases)
        self._bases[i:j] = rows.bases
        self._lasts[i:j] = rows.lasts
        self._max_timestamps[i:j] = rows.max_timestamps
        self._segments[i:j] = array("q", (segment,)) * count
        self._positions[i:j] = positions
        self._sizes[i:j] = sizes
        running = self._running_max_timestamp[i - 1] if i else -1
        new = array("q", islice(accumulate(rows.max_timestamps, max, initial=running), 1, None))
        self._running_max_timestamp[i:j] = new
        after = i + count
        if new and after < len(self._running_max_timestamp) and self._running_max_timestamp[after] < new[-1]:
            # not a subset after all: recompute the rest, so the column stays sorted
            self._running_max_timestamp[after:] = array("q", islice(accumulate(
                self._max_timestamps[after:], max, initial=new[-1]), 1, None))

    def keep(self, start: int, end: int) -> None:
        """Keep rows ``[start, end)`` only, dropping the others from every column: the one trim."""
        for column in self._columns():
            del column[end:]
            del column[:start]

    # -- rows ----------------------------------------------------------------

    def base(self, i: int) -> int:
        return self._bases[i]

    def last(self, i: int) -> int:
        return self._lasts[i]

    def max_timestamp(self, i: int) -> int:
        return self._max_timestamps[i]

    def location(self, i: int) -> EntryLocation:
        return EntryLocation(self._segments[i], self._positions[i], self._sizes[i])

    @property
    def next_offset(self) -> int | None:
        """The offset after the newest batch (None: no batches)."""
        return self._lasts[-1] + 1 if self._lasts else None

    # -- lookups ---------------------------------------------------------------

    def containing(self, offset: int) -> int:
        """The row of the first batch whose last offset is at least ``offset`` (``len`` if none)."""
        return bisect.bisect_left(self._lasts, offset)

    def starting_at(self, offset: int) -> int:
        """The row of the first batch whose base offset is at least ``offset`` (``len`` if none)."""
        return bisect.bisect_left(self._bases, offset)

    def reaching_timestamp(self, timestamp: int) -> int:
        """The first row at or after which some batch has a max timestamp >= ``timestamp``."""
        return bisect.bisect_left(self._running_max_timestamp, timestamp)

    def payload_bytes(self, start: int, end: int) -> int:
        """Bytes of the batches in rows ``[start, end)``, without the WAL entry headers."""
        return sum(self._sizes[start:end]) - ENTRY_HEADER.size * (end - start)

    def max_timestamp_between(self, start: int, end: int) -> int:
        """The largest max timestamp of rows ``[start, end)`` (-1 if none)."""
        return max(self._max_timestamps[start:end], default=-1)


__all__ = ["BatchIndex"]
