"""A real Chronik broker inside a test suite: started in a fraction of a second, gone without a trace.

* :func:`run_broker` -- a context manager for synchronous code (unittest,
  Django, pytest, asyncio tests: anything but a trio loop of your own): the
  broker runs on its own thread with its own trio loop, and the ``with``
  block is entered once it listens.
* :func:`open_broker` -- an async context manager for trio code: the broker
  runs in the caller's trio loop.
* :func:`run_cluster` -- three (or more) nodes, each on its own thread, with
  :meth:`Cluster.kill` and :meth:`Cluster.restart` for failover tests.
* :mod:`chronik.testing.plugin` -- the pytest fixtures (``chronik_broker``,
  ``chronik_topic``, ``chronik_cluster``), registered by installing chronik.

Settings are :class:`~chronik.config.BrokerConfig` fields (``num_partitions=3``)
or their Kafka names (``**{"num.partitions": 3}``).  Defaults differ from
``python -m chronik serve`` where tests want them to: the broker listens on
127.0.0.1 on a free port, keeps its data in a new temporary folder (removed
on exit) unless ``data_dir`` is given, ``group.initial.rebalance.delay.ms``
is 0, so a consumer group forms at once, and ``log.segment.bytes`` is 1 MiB
(every partition's log preallocates its first segment, up to 32 MiB: with one
topic per test that adds up, on disk or, with ``memory``, in RAM).  The WAL backend is the durable
default (``native``, else ``python``): every acknowledged record is fsynced,
as in production.  ``wal_backend="memory"`` keeps everything in RAM -- faster
to write, **not durable**: a restart or kill loses every record and topic.

Shutdown, on leaving the block (also when its body raised): client
connections are closed, the logs flushed and closed, every thread joined,
and the temporary folder removed.

What "kill" means here: :meth:`EmbeddedBroker.kill` stops the broker at once
-- no controlled shutdown (in a cluster, leadership is not handed over: the
other nodes find out through missed heartbeats, a real failover), client
connections are dropped, requests in flight get no answer.  Nothing that was
acknowledged is lost, because an acknowledged record is fsynced before the
client hears back.  It is not a process crash: the broker lives in the test
process, so its files are still closed in order on the way out.  Crash
recovery of the disk layer (SIGKILL mid-write) is tested by Chronik's own
suite; run ``python -m chronik serve`` in a child process and SIGKILL it if
your test is about that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "BrokerRequestError",
    "Cluster",
    "EmbeddedBroker",
    "TrioBroker",
    "broker_config",
    "open_broker",
    "run_broker",
    "run_cluster",
]

if TYPE_CHECKING:
    from ._embedded import Cluster, EmbeddedBroker, TrioBroker, broker_config, open_broker, run_broker, run_cluster
    from ._wire import BrokerRequestError


def __getattr__(name: str) -> Any:
    """The names above, imported on first use: the pytest plugin lives in this package and
    pytest loads it in every suite, so importing the package must cost nothing
    (:mod:`chronik.protocol` takes a second to import, and imports hypothesis)."""
    if name == "BrokerRequestError":
        from ._wire import BrokerRequestError

        return BrokerRequestError
    if name in __all__:
        from . import _embedded

        return getattr(_embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
