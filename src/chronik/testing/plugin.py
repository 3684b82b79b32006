"""pytest fixtures for a real Chronik broker, registered by installing chronik (entry point ``pytest11``).

Disable with ``-p no:chronik``.  Nothing starts until a test asks for a fixture:

* ``chronik_broker`` (session): an :class:`~chronik.testing.EmbeddedBroker`
  on 127.0.0.1, a free port, data in a temporary folder removed at the end of
  the session.  ``.bootstrap_servers``, ``.data_dir``, ``.restart()``,
  ``.kill()`` / ``.start()``, ``.create_topic(name, partitions=1, config=None)``.
  Under pytest-xdist each worker has its own.
* ``chronik_topic`` (function): a new, uniquely named topic on
  ``chronik_broker``; ``@pytest.mark.chronik_topic(partitions=3,
  config={"retention.ms": "60000"})`` shapes it.  If an earlier test
  killed the session broker and did not start it again, this starts it.
* ``chronik_cluster`` (function, opt-in): a :class:`~chronik.testing.Cluster`
  of three nodes with ``.kill(node_id)`` and ``.restart(node_id)``;
  ``@pytest.mark.chronik_cluster(nodes=3, **settings)``.
* ``chronik_broker_config`` (session): the settings the brokers start with,
  from the ini options below; override this fixture in a conftest.py to
  compute them.

ini options (pytest.ini, ``[tool.pytest.ini_options]``, ...):

* ``chronik_broker_config``: a JSON object of broker settings, Kafka names
  or :class:`~chronik.config.BrokerConfig` fields, e.g.
  ``{"num.partitions": 3, "auto.create.topics.enable": false}``.
* ``chronik_wal_backend``: ``durable`` (the default: every acknowledged
  record fsynced, as in production), or ``memory`` -- faster, and **not
  durable**: ``restart()`` and ``kill()`` lose every record and topic.
* ``chronik_group_initial_rebalance_delay_ms``: 0 unless set, so a consumer
  group forms at once (Kafka's default is 3000).

The brokers run on threads of their own with their own trio loops, so tests
may be synchronous, asyncio (pytest-asyncio, anyio) or trio (pytest-trio).
This module imports nothing heavy: a suite that never asks for a fixture
pays nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chronik.testing import Cluster, EmbeddedBroker

MEMORY_NOTE = "memory (NOT durable: restart() and kill() lose every record and topic)"


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    _rewrite_only_the_plugin(pluginmanager)
    parser.addini("chronik_broker_config", default="{}",
                  help="chronik: JSON object of broker settings (Kafka names or BrokerConfig fields) "
                       'for chronik_broker and chronik_cluster, e.g. {"num.partitions": 3}')
    parser.addini("chronik_wal_backend", default="durable",
                  help=f"chronik: WAL backend of the test brokers: durable (default; fsynced) or {MEMORY_NOTE}")
    parser.addini("chronik_group_initial_rebalance_delay_ms", default="0",
                  help="chronik: group.initial.rebalance.delay.ms of the test brokers (default 0: groups form at once)")


def _rewrite_only_the_plugin(pluginmanager: pytest.PytestPluginManager) -> None:
    """Have pytest rewrite the asserts of :mod:`chronik.testing` only, not of the whole broker.

    pytest marks for assertion rewriting every top-level package of a
    distribution that has a ``pytest11`` entry point, so without this every
    chronik module a fixture imports (the broker, the protocol layer: ~100
    modules) goes through pytest's import hook: parsed, rewritten and compiled
    by pytest instead of loaded from its ``.pyc`` -- every time where pytest
    cannot cache the result (``PYTHONDONTWRITEBYTECODE``, a read-only
    install), and on first use otherwise: ~0.5 s added to the first broker of
    a session.  The broker's asserts are internal invariants, not checks a
    user's test wants introspected.  Runs when the plugin is registered,
    before any conftest imports chronik.  pytest keeps the marks in a private
    set; should that change, this does nothing (imports are slower, nothing
    else differs).
    """
    hook = getattr(pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)
    if hook is None or not isinstance(marked, set) or "chronik" not in marked:
        return
    marked.discard("chronik")
    hook.mark_rewrite("chronik.testing")  # the plugin and its helpers, as pytest means to; clears its cache


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chronik_topic(partitions=1, config=None): how chronik_topic creates "
                                       "the test's topic (partition count, topic configs)")
    config.addinivalue_line("markers", "chronik_cluster(nodes=3, **settings): the size and broker settings "
                                       "of the test's chronik_cluster")


def _settings_from_ini(config: pytest.Config) -> dict[str, Any]:
    text = str(config.getini("chronik_broker_config") or "{}")
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        raise pytest.UsageError(f"chronik_broker_config is not a JSON object: {exc}: {text!r}") from None
    if not isinstance(settings, dict):
        raise pytest.UsageError(f"chronik_broker_config must be a JSON object, not {text!r}")
    backend = str(config.getini("chronik_wal_backend")).strip() or "durable"
    if backend not in ("durable", "memory", "native", "python"):
        raise pytest.UsageError(f"chronik_wal_backend must be durable or {MEMORY_NOTE}, not {backend!r}")
    settings.setdefault("wal_backend", backend)
    delay = str(config.getini("chronik_group_initial_rebalance_delay_ms")).strip()
    try:
        settings.setdefault("group.initial.rebalance.delay.ms", int(delay))
    except ValueError:
        raise pytest.UsageError(f"chronik_group_initial_rebalance_delay_ms must be an integer, not {delay!r}") from None
    return settings


@pytest.fixture(scope="session")
def chronik_broker_config(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The broker settings of ``chronik_broker`` and ``chronik_cluster`` (override to compute them)."""
    return _settings_from_ini(pytestconfig)


@pytest.fixture(scope="session")
def chronik_broker(chronik_broker_config: dict[str, Any]) -> Iterator["EmbeddedBroker"]:
    """One broker for the session (per xdist worker); stopped and its folder removed at the end."""
    from chronik.testing import run_broker

    with run_broker(**_checked(chronik_broker_config)) as broker:
        yield broker


def _checked(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings``, or the test fails at set-up with one line (no traceback) naming the bad one."""
    from chronik.config import ConfigError
    from chronik.testing import broker_config

    try:
        broker_config(".", **settings)
        problem = None
    except ConfigError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"chronik: {problem}", pytrace=False)
    return dict(settings)

_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]+")


def unique_topic_name(test_name: str) -> str:
    """A legal Kafka topic name (``[a-zA-Z0-9._-]``, at most 249) from the test's name, unique per call."""
    stem = _UNSAFE.sub("-", test_name).strip("-")[:200] or "test"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def chronik_topic(request: pytest.FixtureRequest, chronik_broker: "EmbeddedBroker") -> str:
    """A new topic on ``chronik_broker`` for this test (shaped by ``@pytest.mark.chronik_topic``).

    It is not deleted afterwards: deleting costs the broker as much as
    closing the partition at the end of the session (a durable recovery
    point), and a test's topic is small (test brokers preallocate 1 MiB
    segments).
    """
    marker = request.node.get_closest_marker("chronik_topic")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    if marker is not None and marker.args:
        options.setdefault("partitions", marker.args[0])
    if not chronik_broker.running:  # an earlier test killed it
        chronik_broker.start()
    return chronik_broker.create_topic(unique_topic_name(request.node.name), **options)


@pytest.fixture
def chronik_cluster(request: pytest.FixtureRequest, chronik_broker_config: dict[str, Any]) -> Iterator["Cluster"]:
    """A cluster for this test (three nodes unless ``@pytest.mark.chronik_cluster(nodes=N)``), ready to use."""
    from chronik.testing import run_cluster

    marker = request.node.get_closest_marker("chronik_cluster")
    settings = {**chronik_broker_config, **(marker.kwargs if marker is not None else {})}
    nodes = int(settings.pop("nodes", 3))
    with run_cluster(nodes, **_checked(settings)) as cluster:
        yield cluster
