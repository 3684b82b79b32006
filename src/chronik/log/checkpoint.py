"""The high-watermark checkpoint: each partition's high watermark, kept across restarts.

In cluster mode a replicated partition's high watermark is not its log end:
the leader only moves it once every in-sync follower has a record, and a
follower learns it from the leader.  After a restart the log alone cannot
tell where it was, so -- as Kafka's ``replication-offset-checkpoint`` --
:class:`~chronik.log.manager.LogManager` writes every open partition's high
watermark to one small file in the data directory, every
``CHECKPOINT_SECONDS`` while it changed and once more when the logs close,
and a partition opened later starts its high watermark at
``min(checkpoint, log end)`` (raised to its log start) instead of at its log
end.  So a restarted leader never exposes a record the ISR may not have
(the high watermark is checkpointed only after it was reached), and after a
clean stop it exposes at once everything it had exposed (after a crash, up
to ``CHECKPOINT_SECONDS`` less, until its in-sync followers fetch again --
as in Kafka); the high watermark then only moves forward again.

File ``<data_dir>/replication-offset-checkpoint`` (Kafka's layout), text::

    0                        format version
    <N>                      number of entries
    <topic> <partition> <high watermark>     N lines, one per partition

Topic names cannot contain spaces.  The file is replaced atomically and
durably (:func:`~chronik.storage.files.replace_file_durably`): after a crash
it is the previous or the new version, never a mix.  A damaged or unknown
file is ignored with a warning (every high watermark then starts at its
log start, the safe side: it moves up again as the ISR reports).
"""

from __future__ import annotations

import logging

from ..storage import StorageBackend
from ..storage.files import read_file, replace_file_durably

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "replication-offset-checkpoint"
CHECKPOINT_SECONDS = 5.0
"""How often changed high watermarks are written (Kafka's replica.high.watermark.checkpoint.interval.ms)."""
_VERSION = 0

Checkpoint = dict[tuple[str, int], int]


def encode_checkpoint(entries: Checkpoint) -> bytes:
    lines = [str(_VERSION), str(len(entries))]
    lines += [f"{topic} {partition} {hw}" for (topic, partition), hw in sorted(entries.items())]
    return ("\n".join(lines) + "\n").encode()


def decode_checkpoint(data: bytes) -> Checkpoint:
    """The entries of a checkpoint file.  :raises ValueError: damaged or of an unknown version."""
    lines = data.decode().splitlines()
    if len(lines) < 2 or lines[0].strip() != str(_VERSION):
        raise ValueError(f"unknown checkpoint version {lines[0] if lines else ''!r}")
    count = int(lines[1])
    if count != len(lines) - 2:
        raise ValueError(f"checkpoint says {count} entries but holds {len(lines) - 2}")
    entries: Checkpoint = {}
    for line in lines[2:]:
        topic, partition, hw = line.split(" ")
        if int(hw) < 0 or int(partition) < 0:
            raise ValueError(f"bad checkpoint entry {line!r}")
        entries[(topic, int(partition))] = int(hw)
    return entries


def read_checkpoint(backend: StorageBackend, data_dir: str) -> Checkpoint:
    """The checkpointed high watermarks of ``data_dir`` (empty if none or unreadable)."""
    try:
        raw = read_file(backend, f"{data_dir}/{CHECKPOINT_FILE}")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    if raw is None:
        return {}
    try:
        return decode_checkpoint(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring %s/%s: %s", data_dir, CHECKPOINT_FILE, exc)
        return {}


def write_checkpoint(backend: StorageBackend, data_dir: str, entries: Checkpoint) -> None:
    """Replace the checkpoint of ``data_dir`` with ``entries``, durably (blocks: fsyncs)."""
    replace_file_durably(backend, data_dir, CHECKPOINT_FILE, encode_checkpoint(entries))
