"""Fixtures for tests against a real broker process with real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .brokerproc import BrokerProcess


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker (own data directory) for one test, stopped cleanly after it.

    The test fails if the broker logged a traceback (an unexpected handler error).
    """
    proc = BrokerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()
