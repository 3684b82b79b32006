"""LogManager keeps partition logs in step with the metadata image."""

from __future__ import annotations

import uuid

from chronik.log import LogManager
from chronik.metadata import CreatePartitions, CreateTopic, DeleteTopic, MetadataImage
from chronik.storage import GroupCommitter

from .conftest import append, batch


def create(image: MetadataImage, name: str, partitions: int = 1) -> str:
    topic_id = uuid.uuid4().hex
    image.apply(image.applied_offset + 1, CreateTopic(name=name, topic_id=topic_id, replicas=[[1]] * partitions))
    return topic_id


async def test_opens_grows_deletes_and_recreates(committer: GroupCommitter) -> None:
    image = MetadataImage()
    manager = LogManager(committer, "/data", default_segment_bytes=1 << 20)
    first_id = create(image, "a", 2)
    await manager.sync_with(image)
    assert {(p.topic, p.partition) for p in manager} == {("a", 0), ("a", 1)}
    log = manager.get("a", 0)
    assert log is not None
    await append(log, batch([1, 2]))

    image.apply(image.applied_offset + 1, CreatePartitions(name="a", new_replicas=[[1]]))
    manager.request_sync()
    await manager.in_step_with(image)
    assert manager.get("a", 0) is log and manager.get("a", 2) is not None  # growth keeps the open logs

    image.apply(image.applied_offset + 1, DeleteTopic(name="a", topic_id=first_id))
    second_id = create(image, "a", 1)  # deleted and re-created before the logs caught up
    manager.request_sync()
    await manager.in_step_with(image)
    fresh = manager.get("a", 0)
    assert fresh is not None and fresh.topic_id == second_id and fresh.log_end_offset == 0
    assert manager.get("a", 1) is None
    assert sorted(committer.backend.list_dir("/data")) == ["a-0"]
    await manager.aclose()


async def test_startup_removes_orphans_and_creates_missing_partitions(committer: GroupCommitter) -> None:
    image = MetadataImage()
    create(image, "kept")
    gone_id = create(image, "gone")
    manager = LogManager(committer, "/data", default_segment_bytes=1 << 20)
    await manager.sync_with(image)
    await manager.aclose()
    # A crash after DeleteTopic was durable but before its files went, and a
    # topic whose files were never created:
    image.apply(image.applied_offset + 1, DeleteTopic(name="gone", topic_id=gone_id))
    create(image, "late")
    restarted = LogManager(committer, "/data", default_segment_bytes=1 << 20)
    await restarted.sync_with(image)
    assert sorted(committer.backend.list_dir("/data")) == ["kept-0", "late-0"]
    await restarted.aclose()


async def test_cluster_mode_opens_only_this_nodes_replicas_and_keeps_unknown_directories(committer: GroupCommitter) -> None:
    image = MetadataImage()
    create(image, "old")
    single = LogManager(committer, "/data", default_segment_bytes=1 << 20)
    await single.sync_with(image)
    await single.aclose()
    # Restart in cluster mode: the image is still empty (being rebuilt from the
    # replicated log), so nothing on disk may be taken for an orphan.
    manager = LogManager(committer, "/data", default_segment_bytes=1 << 20, replica_of=2)
    fresh = MetadataImage()
    fresh.apply(0, CreateTopic(name="spread", topic_id=uuid.uuid4().hex, replicas=[[1, 2], [2, 3], [3, 1]]))
    await manager.sync_with(fresh)
    assert {(p.topic, p.partition) for p in manager} == {("spread", 0), ("spread", 1)}
    assert sorted(committer.backend.list_dir("/data")) == ["old-0", "spread-0", "spread-1"]
    await manager.aclose()
