"""A cleaning pass in a child process, so its CPU work never competes for the broker's GIL.

The broker's worker thread starts ``python -m chronik.log.cleaner_process``,
writes the pass's parameters to its stdin (pickle) and reads the
:class:`~chronik.log.cleaner.PassStats` back from its stdout.  The child
reads the sealed segments by name and writes the durable swap files
(:func:`chronik.log.cleaner.clean_segments`); committing them and switching
reads over stays with the broker, which owns the log.

The child asks the kernel to kill it when its parent thread ends
(``PR_SET_PDEATHSIG``) and exits at once if its parent is already gone: a
cleaner outliving a killed broker must not leave a swap file behind the
restarted one (the next open would complete it over segments that changed
since).  It runs at a lower CPU priority (nice +10) than the broker.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from typing import Any

from .cleaner import PassStats, Span, clean_segments

NICE = 10


def run_in_process(directory: str, spans: list[Span], first_dirty: int, **params: Any) -> PassStats:
    """:func:`~chronik.log.cleaner.clean_segments` over ``directory``'s segment files, in a child
    process; the replacements are written, not committed.

    Blocking: call it from a worker thread, which must stay alive until it
    returns (the child dies with it).

    :raises RuntimeError: the child failed (its stderr tail is in the message).
    """
    request = pickle.dumps((os.getpid(), directory, spans, first_dirty, params))
    child = subprocess.Popen([sys.executable, "-m", "chronik.log.cleaner_process"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(request)
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"cleaner process exited with status {child.returncode}: {' / '.join(tail)}")
    stats: PassStats = pickle.loads(out)
    return stats


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent check below still applies
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _main() -> None:
    parent_pid, directory, spans, first_dirty, params = pickle.load(sys.stdin.buffer)
    _die_with_parent(parent_pid)
    try:
        os.nice(NICE)
    except OSError:
        pass
    from ..storage import create_backend
    from ..storage.wal import read_sealed_segment, write_replacement

    backend = create_backend("python")
    stats = clean_segments(
        lambda span: (payload for _, payload in read_sealed_segment(backend, directory, span.base)),
        lambda first, end, entries: write_replacement(backend, directory, first, end, entries),
        spans, first_dirty, pause=lambda: None, **params)
    if stats.error is not None:  # the exception's class may not unpickle in the parent: keep its words
        stats.error = RuntimeError(f"{type(stats.error).__name__}: {stats.error}")
    sys.stdout.buffer.write(pickle.dumps(stats))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _main()
