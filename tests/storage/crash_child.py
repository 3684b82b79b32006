"""Child process of the kill -9 crash test: append forever, print what is acked.

Usage: python crash_child.py DIR BACKEND SEED

Every line on stdout is ``<index>`` of an entry whose ``wait_durable``
returned; the payload of entry ``i`` is :func:`payload_for` ``(seed, i)``.
"""

from __future__ import annotations

import hashlib
import os
import sys

import trio

from chronik.storage import WriteAheadLog, create_backend, open_group_committer


def payload_for(seed: int, index: int) -> bytes:
    digest = hashlib.sha256(b"%d:%d" % (seed, index)).digest()
    return digest * (1 + digest[0] % 40)


async def main(directory: str, backend_name: str, seed: int) -> None:
    backend = create_backend(backend_name)
    out = sys.stdout
    async with open_group_committer(backend, directory) as committer:
        wal = WriteAheadLog.open(committer, directory, segment_bytes=256 << 10, preallocate_bytes=64 << 10)
        out.write(f"recovered {wal.recovery.last_index}\n")
        out.flush()

        async def appender() -> None:
            while True:
                index = 0 if wal.last_index is None else wal.last_index + 1
                appended = wal.append(index, payload_for(seed, index))
                await wal.wait_durable(appended)
                os.write(1, b"%d\n" % index)

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(appender)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
