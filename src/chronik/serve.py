"""``python -m chronik serve``: run one broker node until SIGINT/SIGTERM.

Lifecycle log lines (one per event): configuration loaded, recovered N
batches in T ms, listening on X, shutting down, stopped.  Configuration
errors, an unusable WAL backend or data directory, a data directory locked
by another process, a port already in use and a disk too full to start are
one clear line on stderr and exit status 2, not a traceback (see
:func:`startup_error`).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable

import trio

from .broker import open_broker
from .config import BrokerConfig, ConfigError, load_config
from .server.security import check_security_files
from .storage import TEST_BACKENDS, StorageError

log = logging.getLogger("chronik")


GC_THRESHOLDS = (50_000, 20, 100)
"""CPython's defaults (700, 10, 10) run a young-generation collection every
700 allocations; a request allocates dozens of short-lived objects, so the
collector ran every few requests (about half the produce path's CPU in a
profile).  A larger first threshold collects the same garbage in fewer,
larger passes."""


async def run_broker(config: BrokerConfig, on_started: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly (logs flushed and closed).

    ``on_started`` is called once the listeners are bound and clients can connect.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_broker(config) as broker:
            gc.freeze()  # what recovery built lives as long as the process: never rescan it
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.serve)
                if on_started is not None:
                    on_started()
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    await broker.controlled_shutdown()  # cluster mode: leadership moves first
                    nursery.cancel_scope.cancel()
                    break
    log.info("stopped")


def startup_error(exc: BaseException, data_dir: object = None) -> str | None:
    """The one line to print for an error that stopped start-up, or None if it is a bug.

    An unusable data directory or WAL backend, a port in use, a full disk:
    an operator's problem, told in one line.  trio wraps errors of tasks in
    exception groups (a port in use is raised inside the listener's
    nursery), so the leaves count: one line if every leaf is such an error.
    Anything else is a bug and keeps its traceback.
    """
    if isinstance(exc, BaseExceptionGroup):
        lines = [startup_error(leaf, data_dir) for leaf in exc.exceptions]
        if not lines or None in lines:
            return None
        return "; ".join(dict.fromkeys(line for line in lines if line is not None))
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, OSError):
        where = ""
        if exc.filename is None and exc.errno in _DISK_ERRNOS and data_dir is not None:
            where = f" (data directory {data_dir})"
        return f"cannot start: {exc}{where}"
    return None


_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def serve_main(args: object) -> int:
    # Logging first, at INFO, so that what reading the configuration warns
    # about (an unknown CHRONIK_* variable) is logged like everything else.
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args, os.environ)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"chronik: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        check_security_files(config)
    except ValueError as exc:
        print(f"chronik: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(config.log_level.upper())
    cluster = f", cluster of {len(config.peers)} voters" if len(config.peers) > 1 else ""
    if config.wal_backend in TEST_BACKENDS:
        log.warning("WAL backend %s keeps everything in memory: NOT DURABLE, for tests only "
                    "(the data directory %s is not used)", config.wal_backend, config.data_dir)
        log.info("starting node %d, data in memory, WAL backend %s (%s)%s", config.node_id,
                 config.wal_backend, config.wal_profile, cluster)
    else:
        log.info("starting node %d, data in %s, WAL backend %s (%s)%s", config.node_id, config.data_dir,
                 config.wal_backend, config.wal_profile, cluster)
    started: list[bool] = []
    try:
        trio.run(run_broker, config, lambda: started.append(True))
    except (Exception, BaseExceptionGroup) as exc:
        message = None if started else startup_error(exc, config.data_dir)
        if message is None:
            raise
        print(f"chronik: {message}", file=sys.stderr)
        return 2
    return 0
