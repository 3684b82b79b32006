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


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the tests of a module that ask for :func:`shared_module_broker`; stopped cleanly after
    the last, failing it if the broker logged a traceback."""
    with running_broker(tmp_path_factory.mktemp("shared") / "data") as proc:
        yield proc


@pytest.fixture
def shared_module_broker(module_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    """The module's broker, for tests that cannot interfere (each its own topics, no restart): a test
    still fails if the broker logged a traceback during it or is no longer running after it, and
    :meth:`~.brokerproc.BrokerProcess.wait_for_log` sees only the lines logged since it began."""
    module_broker.log_mark = len(module_broker.log_lines)
    yield module_broker
    assert module_broker.proc is not None and module_broker.proc.poll() is None, module_broker.output()
    logged = module_broker.log_lines[module_broker.log_mark:]
    assert not any("Traceback" in line for line in logged), "\n".join(logged)
