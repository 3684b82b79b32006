"""Admission of client connections (and, re-exported, :class:`~chronik.ratelimit.LogLimiter`).

:class:`ConnectionLimits` counts open connections, in all and per client IP
address (Kafka's ``max.connections`` and ``max.connections.per.ip``).  A
connection over either cap is refused: the listener closes it at once,
before reading a byte, so refused connections cost neither a task nor
memory.

:class:`~chronik.ratelimit.LogLimiter` (one log line per key per interval)
lives in :mod:`chronik.ratelimit`, below every layer that logs about peers.

Both are plain, synchronous bookkeeping (no I/O, no trio), driven by the
listener.  Invariant: ``total == sum(per_ip.values())`` and no IP is kept
with a count of zero, so memory follows the connections open now.
"""

from __future__ import annotations

from ..ratelimit import LogLimiter

__all__ = ["ConnectionLimits", "LogLimiter"]


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
