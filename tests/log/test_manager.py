"""LogManager keeps partition logs in step with the metadata image."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

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


async def test_partitions_that_cannot_get_space_are_offline_and_come_up_when_space_returns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the faulty backend with little room: preallocation (8 MiB a partition) shrinks to what fits,
    a partition that gets no room at all is offline, the others are served, and once room returns
    the background task opens the offline ones (tried again every OFFLINE_RETRY_SECONDS)."""
    import trio

    from chronik.log import manager as manager_module
    from chronik.storage import FaultyBackend, open_group_committer

    backend = FaultyBackend(capacity_bytes=20 << 20)  # two partitions' preallocation, and a bit
    async with open_group_committer(backend, "/data") as committer:
        image = MetadataImage()
        create(image, "t", 8)
        manager = LogManager(committer, "/data", default_segment_bytes=1 << 30)
        await manager.sync_with(image)
        assert len(manager) == 8 and not manager.offline  # the later ones unpreallocated, all up
        for index in range(8):
            partition_log = manager.get("t", index)
            assert partition_log is not None
            await append(partition_log, batch([index]))

        backend.capacity_bytes = backend._stored_bytes()  # now the disk is full
        create(image, "late", 2)
        manager.request_sync()
        await manager.in_step_with(image)
        assert set(manager.offline) == {("late", 0), ("late", 1)} and manager.get("late", 0) is None
        assert manager.get("t", 0) is not None

        backend.capacity_bytes = None
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                monkeypatch.setattr(manager_module, "OFFLINE_RETRY_SECONDS", 0.01)
                await nursery.start(manager.run, lambda: image)
                while manager.offline:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert manager.get("late", 0) is not None and manager.get("late", 1) is not None
        await manager.aclose()


async def test_a_cancelled_sync_does_not_wait_for_every_new_partition(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of new partitions take seconds to create on a busy disk; a shutdown (cancellation)
    waits for one chunk of them at most, not for all (it took 5-9 s with 320 partitions)."""
    import time

    import trio

    from chronik.log import PartitionLog
    from chronik.log import manager as manager_module
    from chronik.storage import create_backend, open_group_committer

    real_open = PartitionLog.open.__func__  # type: ignore[attr-defined]
    opened: list[int] = []

    def slow_open(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.01)  # a slow disk, in the worker thread
        opened.append(1)
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(PartitionLog, "open", classmethod(slow_open))
    backend = create_backend("python")
    try:
        async with open_group_committer(backend, str(tmp_path)) as committer:
            image = MetadataImage()
            create(image, "many", 100)
            manager = LogManager(committer, str(tmp_path), default_segment_bytes=1 << 20)
            with trio.move_on_after(0.05):
                await manager.sync_with(image)
            assert len(opened) <= 2 * manager_module.OPEN_CHUNK
            assert len(manager) == len(opened)  # what was opened is registered (and closed below)
            await manager.aclose()
            again = LogManager(committer, str(tmp_path), default_segment_bytes=1 << 20)
            await again.sync_with(image)  # the rest is created by the next pass (start-up)
            assert len(again) == 100
            await again.aclose()
    finally:
        await backend.aclose()


async def test_a_partition_whose_files_are_not_a_log_is_offline_and_the_rest_is_served(committer: GroupCommitter) -> None:
    """A segment with a bad header used to stop the broker with a traceback at start-up; now only
    that partition is offline (KAFKA_STORAGE_ERROR), its files kept for the operator."""
    image = MetadataImage()
    create(image, "t", 2)
    manager = LogManager(committer, "/data", default_segment_bytes=1 << 20)
    await manager.sync_with(image)
    await manager.aclose()
    backend = committer.backend
    segment = next(n for n in backend.list_dir("/data/t-1") if n.endswith(".wal"))
    backend.overwrite(f"/data/t-1/{segment}", 0, b"NOTAWAL!")  # type: ignore[attr-defined]
    restarted = LogManager(committer, "/data", default_segment_bytes=1 << 20)
    await restarted.sync_with(image)
    assert list(restarted.offline) == [("t", 1)]
    assert "not a Chronik WAL segment" in restarted.offline[("t", 1)]
    assert restarted.get("t", 0) is not None and segment in backend.list_dir("/data/t-1")
    await restarted.aclose()
