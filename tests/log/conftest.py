"""Partition logs on the memory backend, and record batches to append to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from chronik.log import PartitionLog
from chronik.protocol import Record, encode_batch, validate_batch
from chronik.storage import GroupCommitter, MemoryBackend, open_group_committer

TOPIC_ID = "0123456789abcdef0123456789abcdef"
LOG_DIR = "/data/t-0"


def batch(timestamps: Sequence[int], *, values: Sequence[bytes] | None = None, producer_id: int = -1,
          producer_epoch: int = -1, base_sequence: int = -1) -> bytearray:
    """A CreateTime batch with one record per timestamp (values default to b"v<i>")."""
    values = values if values is not None else [b"v%d" % i for i in range(len(timestamps))]
    records = [Record(i, ts, None, value) for i, (ts, value) in enumerate(zip(timestamps, values, strict=True))]
    return encode_batch(records, producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence)


async def append(log: PartitionLog, data: bytearray, *, log_append_time: int | None = None):  # type: ignore[no-untyped-def]
    """Append one batch and wait until it is durable; returns the AppendInfo."""
    info = log.append_batch(data, validate_batch(data), log_append_time=log_append_time)
    await log.wait_durable(info)
    return info


OpenLog = Callable[..., PartitionLog]


@pytest.fixture
async def committer() -> AsyncIterator[GroupCommitter]:
    async with open_group_committer(MemoryBackend(), "/data") as committer:
        yield committer


@pytest.fixture
def open_log(committer: GroupCommitter) -> OpenLog:
    """Open (or reopen) the test partition on the shared memory backend."""

    def opener(segment_bytes: int = 1 << 20) -> PartitionLog:
        return PartitionLog.open(committer, LOG_DIR, topic="t", partition=0, topic_id=TOPIC_ID, segment_bytes=segment_bytes)

    return opener
