"""Connection caps and rate-limited log lines (plain bookkeeping, no I/O)."""

from __future__ import annotations

import logging

import pytest

from chronik.server.limits import ConnectionLimits, LogLimiter


def test_connections_are_refused_over_either_cap_and_admitted_again_after_a_release() -> None:
    limits = ConnectionLimits(max_total=3, max_per_ip=2)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert limits.admit("a") == "max.connections.per.ip (2) reached for a"
    assert limits.admit("b") is None
    assert limits.admit("c") == "max.connections (3) reached"
    limits.release("a")
    assert limits.admit("c") is None
    for ip in ("a", "b", "c"):
        limits.release(ip)
    assert limits.total == 0 and limits.per_ip == {}  # nothing kept for addresses that left


def test_one_line_per_key_per_interval_with_the_count_held_back() -> None:
    now = [0.0]
    limiter = LogLimiter(60, clock=lambda: now[0])
    assert limiter.allow("peer") == 0
    assert [limiter.allow("peer") for _ in range(5)] == [None] * 5
    assert limiter.allow("other") == 0
    now[0] = 61
    assert limiter.allow("peer") == 5


def test_the_table_of_keys_stays_bounded() -> None:
    now = [0.0]
    limiter = LogLimiter(60, max_keys=2, clock=lambda: now[0])
    assert limiter.allow(1) == 0 and limiter.allow(2) == 0
    assert limiter.allow(3) is None  # full: held back
    now[0] = 61
    assert limiter.allow(3) == 0  # old keys expired, room again


def test_log_writes_the_line_with_the_count_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = LogLimiter(60, clock=lambda: now[0])
    logger = logging.getLogger("test.limits")
    caplog.set_level(logging.INFO, "test.limits")
    for _ in range(3):
        limiter.log(logger, logging.WARNING, "peer", "refused %s", "peer")
    now[0] = 61
    limiter.log(logger, logging.WARNING, "peer", "refused %s", "peer")
    assert [r.getMessage() for r in caplog.records] == ["refused peer", "refused peer (2 more like it since the last line)"]
