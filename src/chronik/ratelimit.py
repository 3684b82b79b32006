"""Log lines that cannot flood the log: :class:`LogLimiter`.

One line per peer for a misconfigured client (or node) that retries twice a
second, one line per interval for a flood of refused connections, with the
number of lines held back in between.  Used by the Kafka listener
(:mod:`chronik.server.kafka`) and the replication port
(:mod:`chronik.cluster.transport`), so it sits below both: plain,
synchronous bookkeeping, no I/O, no trio, no chronik imports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LogLimiter"]


class LogLimiter:
    """At most one line per key per ``interval`` seconds; counts the lines held back.

    Keys whose interval has passed are dropped as new ones arrive, so the
    table holds only the keys seen in the last interval (bounded by
    ``max_keys``; beyond it new keys are held back and counted as one).
    """

    __slots__ = ("interval", "max_keys", "_clock", "_last", "_held")

    def __init__(self, interval: float, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.max_keys, self._clock = interval, max_keys, clock
        self._last: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def allow(self, key: object = None) -> int | None:
        """None: hold this line back.  Else log it now; the result is how many were held back since the last."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= self.max_keys:
            self._expire(now)
            if len(self._last) >= self.max_keys:
                self._held[None] = self._held.get(None, 0) + 1
                return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: object, message: str, *args: object) -> None:
        """``logger.log(level, message, *args)`` unless :meth:`allow` holds it back; the line says how
        many like it were held back since the last one."""
        held = self.allow(key)
        if held is not None:
            if held:
                message += " (%d more like it since the last line)"
                args = (*args, held)
            logger.log(level, message, *args)

    def _expire(self, now: float) -> None:
        for key in [k for k, t in self._last.items() if now - t >= self.interval]:
            del self._last[key]
            self._held.pop(key, None)
