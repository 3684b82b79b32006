"""A voter's durable state: hard-state file recovery and the replicated log on the WAL."""

from __future__ import annotations

import os

import pytest

from chronik.cluster.messages import Entry
from chronik.cluster.storage import HARD_STATE_FILE, HardStateCorrupt, RaftStorage, encode_hard_state
from chronik.storage import MemoryBackend, create_backend, open_group_committer


async def test_hard_state_survives_reopen_on_real_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = create_backend("python")
    directory = str(tmp_path)
    try:
        async with open_group_committer(backend, directory) as committer:
            storage = await RaftStorage.open(committer, directory)
            assert (storage.recovered.term, storage.recovered.voted_for) == (0, None)  # missing file: fresh
            await storage.write_hard_state(3, None)
            await storage.write_hard_state(3, 2)
            await storage.aclose()
        (tmp_path / (HARD_STATE_FILE + ".tmp")).write_bytes(b"half a write")  # a crash mid-replace
        async with open_group_committer(backend, directory) as committer:
            storage = await RaftStorage.open(committer, directory)
            assert (storage.recovered.term, storage.recovered.voted_for) == (3, 2)
            assert not os.path.exists(tmp_path / (HARD_STATE_FILE + ".tmp"))
            await storage.aclose()
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[:-1], "bytes, expected"),
        (lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:], "CRC-32C mismatch"),
        (lambda data: b"", "0 bytes"),
    ],
    ids=["torn", "bit-flip", "empty"],
)
async def test_untrustworthy_hard_state_refuses_to_start(damage, message) -> None:  # type: ignore[no-untyped-def]
    """Forgetting a vote could make two leaders in one term: refuse, loudly."""
    backend = MemoryBackend()
    backend.make_dirs("/n")
    file = backend.open_file(f"/n/{HARD_STATE_FILE}", create=True)
    file.write_durably(0, damage(encode_hard_state(5, 1)))
    file.close()
    async with open_group_committer(backend, "/n") as committer:
        with pytest.raises(HardStateCorrupt, match=message):
            await RaftStorage.open(committer, "/n")


async def test_log_appends_report_durability_truncate_and_recover() -> None:
    backend = MemoryBackend()
    reports: list[tuple[int, int]] = []
    entries = (Entry(1, b"", control=True), Entry(1, b"a"), Entry(2, b"b"), Entry(2, b"c"))
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        storage.on_log_durable = lambda end, epoch: reports.append((end, epoch))
        storage.append(0, entries[:2])
        appended = storage.append(2, entries[2:])
        await storage.wal.wait_durable(appended)
        assert reports[-1] == (4, 2)
        await storage.truncate(2)
        storage.append(2, (Entry(3, b"x"),))
        await storage.aclose()
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert storage.recovered.entries == (*entries[:2], Entry(3, b"x"))
        assert storage.log_end == 3
        await storage.aclose()
