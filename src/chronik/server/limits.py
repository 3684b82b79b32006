"""Admission of client connections, and log lines that cannot flood the log.

:class:`ConnectionLimits` counts open connections, in all and per client IP
address (Kafka's ``max.connections`` and ``max.connections.per.ip``).  A
connection over either cap is refused: the listener closes it at once,
before reading a byte, so refused connections cost neither a task nor
memory.

:class:`LogLimiter` lets one log line through per key per interval: one line
per peer for a misconfigured client that retries twice a second, one line
per interval for a flood of refused connections, with the number of lines
held back in between.

Both are plain, synchronous bookkeeping (no I/O, no trio), driven by the
listener.  Invariant: ``total == sum(per_ip.values())`` and no IP is kept
with a count of zero, so memory follows the connections open now.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ConnectionLimits:
    """Open connections, in all and per IP; :meth:`admit` refuses those over a cap."""

    __slots__ = ("max_total", "max_per_ip", "total", "per_ip")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def admit(self, ip: str) -> str | None:
        """Count a new connection from ``ip`` and return None, or return why it is refused (not counted)."""
        if self.total >= self.max_total:
            return f"max.connections ({self.max_total}) reached"
        count = self.per_ip.get(ip, 0)
        if count >= self.max_per_ip:
            return f"max.connections.per.ip ({self.max_per_ip}) reached for {ip}"
        self.total += 1
        self.per_ip[ip] = count + 1
        return None

    def release(self, ip: str) -> None:
        """Forget one admitted connection from ``ip`` (it closed)."""
        self.total -= 1
        count = self.per_ip[ip] - 1
        if count:
            self.per_ip[ip] = count
        else:
            del self.per_ip[ip]


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

    def _expire(self, now: float) -> None:
        for key in [k for k, t in self._last.items() if now - t >= self.interval]:
            del self._last[key]
            self._held.pop(key, None)
