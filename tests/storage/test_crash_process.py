"""kill -9 a process that appends with durability waits; reopen; nothing acked is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chronik.storage import WriteAheadLog, available_backends, create_backend, open_group_committer

from .crash_child import payload_for

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


def run_child_and_kill(directory: str, backend: str, seed: int, after: float) -> set[int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [sys.executable, str(CHILD), directory, backend, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # "recovered ..." once the log is open
    assert first.startswith(b"recovered"), first + child.stderr.read() if child.stderr else b""
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    # A line cut by the kill is not an acknowledgement.
    return {int(line) for line in out.split(b"\n")[:-1] if line}


@pytest.mark.parametrize("backend_name", [b for b in available_backends() if b in ("native", "python")])
async def test_kill_9_loses_no_acknowledged_entry(backend_name: str, tmp_path: Path) -> None:
    rng = random.Random(1234)
    directory = str(tmp_path / "wal")
    seed = 99
    acked: set[int] = set()
    for round_ in range(4):
        acked |= run_child_and_kill(directory, backend_name, seed, rng.uniform(0.2, 0.6))
        backend = create_backend(backend_name)
        async with open_group_committer(backend, directory) as committer:
            wal = WriteAheadLog.open(committer, directory, segment_bytes=256 << 10)
            entries = {e.index: bytes(e.payload) for s in wal.segments() for e in wal.iter_entries(s.base_index)}
            await wal.aclose()
        await backend.aclose()
        assert acked, "the child acknowledged nothing"
        missing = acked - entries.keys()
        assert not missing, f"round {round_}: acknowledged entries lost: {sorted(missing)[:10]}"
        assert sorted(entries) == list(range(len(entries))), "the log must be a prefix without holes"
        for index, payload in entries.items():
            assert payload == payload_for(seed, index), f"entry {index} damaged or invented"
