"""When a cluster node's metadata counts as stale (:meth:`chronik.broker.Broker.metadata_lag`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from chronik.broker import STALE_METADATA_SECONDS, Broker
from chronik.cluster.raft import Role
from chronik.protocol import ErrorCode


@dataclass
class FakeConsensus:
    role: Role = Role.FOLLOWER
    caught_up_once: bool = False
    behind_since: float | None = 0.0


class FakeBroker:
    """Just what metadata_lag reads."""

    def __init__(self, consensus: FakeConsensus | None, loading: bool = False) -> None:
        self.consensus = consensus
        self.loading = loading

    def coordinator_error(self) -> ErrorCode | None:
        return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if self.loading else None


def lag(broker: Any) -> str | None:
    return Broker.metadata_lag(broker)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_single_node_is_never_stale() -> None:
    assert lag(FakeBroker(None)) is None


async def test_a_follower_is_stale_until_level_with_a_leader_then_only_when_it_stays_behind(autojump_clock: Any) -> None:
    consensus = FakeConsensus()
    broker = FakeBroker(consensus)
    assert "not caught up" in (lag(broker) or "")
    consensus.caught_up_once, consensus.behind_since = True, None
    assert lag(broker) is None
    consensus.behind_since = trio.current_time()  # a leader announced a commit end it has not reached
    await trio.sleep(STALE_METADATA_SECONDS / 2)
    assert lag(broker) is None  # a moment behind is normal
    await trio.sleep(STALE_METADATA_SECONDS)
    assert "behind" in (lag(broker) or "")


async def test_a_leader_is_stale_only_while_applying_earlier_entries() -> None:
    consensus = FakeConsensus(role=Role.LEADER)
    assert lag(FakeBroker(consensus)) is None
    assert "applying" in (lag(FakeBroker(consensus, loading=True)) or "")
