"""Fixtures for tests against a real broker process with real clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .brokerproc import BrokerProcess, running_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker (own data directory) for one test, stopped cleanly after it.

    The test fails if the broker logged a traceback (an unexpected handler error).
    """
    with running_broker(tmp_path / "data") as proc:
        yield proc
