"""The high-watermark checkpoint file and the log manager that keeps it (memory backend)."""

from __future__ import annotations

import uuid

import pytest

from chronik.log import LogManager
from chronik.log.checkpoint import CHECKPOINT_FILE, decode_checkpoint, encode_checkpoint, read_checkpoint
from chronik.metadata import CreateTopic, MetadataImage
from chronik.storage import GroupCommitter
from chronik.storage.files import replace_file_durably

from .conftest import append, batch


async def opened_manager(committer: GroupCommitter, image: MetadataImage, replica_of: int | None = 1) -> LogManager:
    """A log manager of ``/data`` (as node ``replica_of``; None: a single node), in step with ``image``."""
    manager = LogManager(committer, "/data", default_segment_bytes=1 << 20, replica_of=replica_of)
    await manager.sync_with(image)
    return manager


def test_the_format_round_trips_and_damage_is_refused() -> None:
    entries = {("a", 0): 5, ("a.b-c_d", 12): 0, ("z", 1): 1 << 40}
    data = encode_checkpoint(entries)
    assert data.splitlines()[:3] == [b"0", b"3", b"a 0 5"]
    assert decode_checkpoint(data) == entries
    assert decode_checkpoint(encode_checkpoint({})) == {}
    for bad in (b"", b"1\n0\n", b"0\n2\na 0 5\n", b"0\n1\na 0\n", b"0\n1\na 0 -1\n"):
        with pytest.raises(ValueError):
            decode_checkpoint(bad)


async def test_cluster_mode_checkpoints_high_watermarks_and_restarts_from_them(committer: GroupCommitter) -> None:
    image = MetadataImage()
    image.apply(0, CreateTopic(name="r", topic_id=uuid.uuid4().hex, replicas=[[1, 2], [2, 1]]))
    manager = await opened_manager(committer, image)
    led = manager.get("r", 0)
    followed = manager.get("r", 1)
    assert led is not None and followed is not None
    led.lead(frozenset({2}), leader_epoch=0)
    for _ in range(4):
        await append(led, batch([1]))
    led.record_follower_end(2, 3)
    followed.follow()
    assert await manager.write_checkpoint()
    assert not await manager.write_checkpoint()  # unchanged: not written again
    assert read_checkpoint(committer.backend, "/data") == {("r", 0): 3, ("r", 1): 0}
    led.record_follower_end(2, 4)
    await manager.aclose()  # the last high watermarks are written on the way out
    assert read_checkpoint(committer.backend, "/data") == {("r", 0): 4, ("r", 1): 0}

    restarted = await opened_manager(committer, image)
    reopened = restarted.get("r", 0)
    assert reopened is not None and (reopened.log_end_offset, reopened.high_watermark) == (4, 4)
    await restarted.aclose()


async def test_a_damaged_checkpoint_starts_every_high_watermark_at_the_log_start(committer: GroupCommitter) -> None:
    image = MetadataImage()
    image.apply(0, CreateTopic(name="r", topic_id=uuid.uuid4().hex, replicas=[[1, 2]]))
    manager = await opened_manager(committer, image)
    led = manager.get("r", 0)
    assert led is not None
    for _ in range(2):
        await append(led, batch([1]))
    await manager.aclose()
    replace_file_durably(committer.backend, "/data", CHECKPOINT_FILE, b"garbage")
    restarted = await opened_manager(committer, image)
    reopened = restarted.get("r", 0)
    assert reopened is not None and (reopened.log_end_offset, reopened.high_watermark) == (2, 0)
    await restarted.aclose()


async def test_a_single_node_keeps_no_checkpoint(committer: GroupCommitter) -> None:
    image = MetadataImage()
    image.apply(0, CreateTopic(name="s", topic_id=uuid.uuid4().hex, replicas=[[1]]))
    manager = await opened_manager(committer, image, replica_of=None)
    await manager.aclose()
    assert CHECKPOINT_FILE not in committer.backend.list_dir("/data")
