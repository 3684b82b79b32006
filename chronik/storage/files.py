"""Small files replaced atomically and durably (metadata next to the logs).

``replace_file_durably`` writes ``<name>.tmp``, fsyncs it, renames it over
``<name>`` and fsyncs the directory: after a crash the file holds either the
old or the new content, never a mix, and a stale ``.tmp`` is simply
overwritten next time.
"""

from __future__ import annotations

from .interface import StorageBackend


def replace_file_durably(
    backend: StorageBackend, directory: str, name: str, data: bytes, *, preallocate: int = 0
) -> None:
    """Atomically replace ``directory/name`` with ``data``, durably (see the module docstring).

    ``preallocate``: the file is first made that long (zero-filled, allocated,
    see :meth:`~chronik.storage.interface.SegmentFile.preallocate`), so
    ``data`` is followed by zeros up to that size.
    """
    tmp = f"{directory}/{name}.tmp"
    try:
        backend.delete_file(tmp)
    except FileNotFoundError:
        pass
    file = backend.open_file(tmp, create=True)
    try:
        if preallocate:
            file.preallocate(preallocate)
        file.write_durably(0, data)
    finally:
        file.close()
    backend.rename_file(tmp, f"{directory}/{name}")
    backend.sync_dir(directory)


def read_file(backend: StorageBackend, path: str) -> bytes | None:
    """The whole content of ``path``, or None if it does not exist."""
    try:
        file = backend.open_file(path)
    except FileNotFoundError:
        return None
    try:
        return file.pread(0, file.size())
    finally:
        file.close()
