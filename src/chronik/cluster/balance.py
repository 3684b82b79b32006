"""Automatic preferred-leader balancing: the controller gives leadership back to the first replica.

Placement spreads leadership evenly by putting a different broker first in
each partition's replica list (the *preferred* replica).  Failover moves
leadership away from a broker that died and nothing moves it back, so after
a few restarts one broker can lead everything.  As Kafka's
``auto.leader.rebalance.enable``, :class:`PreferredLeaderBalancer` runs on
every node and acts only while this node is the controller: every
``leader.imbalance.check.interval.seconds`` it looks, per broker, at the
partitions that broker is the preferred replica of, and if more than
``LEADER_IMBALANCE_PER_BROKER_PERCENTAGE`` of them are led by someone else
it submits a preferred :class:`~chronik.metadata.commands.ElectLeaders`
for those whose preferred replica is in the ISR and unfenced (the image
checks that again when it applies the command, so a stale look is harmless).
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import TYPE_CHECKING

import trio

from ..metadata.commands import PREFERRED_ELECTION, ElectLeaders
from ..metadata.image import CommandRejected, MetadataImage
from ..metadata.view import MetadataView, Submit
from .liveness import controller_ticks

if TYPE_CHECKING:
    from .node import ConsensusNode

log = logging.getLogger(__name__)

LEADER_IMBALANCE_PER_BROKER_PERCENTAGE = 10
"""Kafka's ``leader.imbalance.per.broker.percentage`` default: a broker's partitions are
given back to it once more than this share of those it prefers are led elsewhere."""


def preferred_leader_moves(image: MetadataImage,
                           percentage: int = LEADER_IMBALANCE_PER_BROKER_PERCENTAGE) -> list[list[object]]:
    """``[topic, partition]`` of each partition a preferred election should move (see the module docstring)."""
    preferred: dict[int, list[tuple[str, int, bool]]] = {}  # broker -> (topic, partition, eligible) not led by it
    counts: dict[int, int] = {}
    for name, topic in sorted(image.topics.items()):
        for index, partition in enumerate(topic.partitions):
            first = partition.replicas[0]
            counts[first] = counts.get(first, 0) + 1
            if partition.leader == first:
                continue
            broker = image.brokers.get(first)
            eligible = broker is not None and not broker.fenced and first in partition.isr
            preferred.setdefault(first, []).append((name, index, eligible))
    moves: list[list[object]] = []
    for broker_id, elsewhere in sorted(preferred.items()):
        if len(elsewhere) * 100 > percentage * counts[broker_id]:
            moves.extend([name, index] for name, index, eligible in elsewhere if eligible)
    return moves


class PreferredLeaderBalancer:
    """The controller's preferred-leader loop for one node (see the module docstring).  Run with :meth:`run`."""

    def __init__(self, consensus: "ConsensusNode", metadata: MetadataView, submit: Submit, *, interval: float) -> None:
        self.consensus = consensus
        self.metadata = metadata
        self.submit = submit
        self.interval = interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Balance leadership every ``interval`` seconds while this node is the controller, until cancelled.

        Cancellation: an election being submitted may still commit.
        """
        consensus = self.consensus
        task_status.started()
        async with aclosing(controller_ticks(consensus, self.interval)) as ticks:
            async for _ in ticks:
                moves = preferred_leader_moves(self.metadata.image)
                if not moves:
                    continue
                try:
                    with trio.move_on_after(max(self.interval, 5.0)):
                        election = ElectLeaders(election_type=PREFERRED_ELECTION, partitions=moves)
                        results = await self.submit(election)
                        assert isinstance(results, list)
                        moved = [f"{t}-{p}" for t, p, error, _ in results if error is None]
                        if moved:
                            log.info("gave leadership back to the preferred replica of %d partition(s): %s", len(moved),
                                     ", ".join(moved[:10]) + (" ..." if len(moved) > 10 else ""))
                except CommandRejected as exc:
                    log.warning("preferred leader election refused: %s (%s)", exc.message, exc.error)
