"""Helpers shared by the benchmark scripts (bench/ is not a package: scripts import this by name)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Row:
    """One workload's line in a benchmark's table."""

    workload: str
    result: str
    target: str
    met: bool | None  # None: informational
    detail: dict[str, float]


def report(rows: list[Row], json_path: Path | None, *, workload_width: int, result_width: int) -> int:
    """Print the table (workload, result, target, met?), write the rows as JSON if asked;
    the exit status: 0 unless a target was missed."""
    print(f"{'workload':<{workload_width}} {'result':<{result_width}} {'target':<14} met")
    print("-" * (workload_width + result_width + 20))
    for row in rows:
        met = "-" if row.met is None else "yes" if row.met else "NO"
        print(f"{row.workload:<{workload_width}} {row.result:<{result_width}} {row.target:<14} {met}")
    if json_path:
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0 if all(r.met is not False for r in rows) else 1


def percentile_ms(samples: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of durations in seconds, in milliseconds; None if empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000
