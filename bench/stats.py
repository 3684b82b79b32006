"""Helpers shared by the benchmark scripts (bench/ is not a package: scripts import this by name)."""

from __future__ import annotations


def percentile_ms(samples: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of durations in seconds, in milliseconds; None if empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000
