"""Broker liveness: the controller fences brokers it no longer hears from, and unfences them.

Heartbeats are the Raft traffic itself: the controller sends every voter an
AppendEntries every ``heartbeat_interval`` (100 ms) and each live node
answers at once, so its answer is its heartbeat.  Each
:class:`~chronik.cluster.node.ConsensusNode` keeps, in memory only, when it
last heard from each peer (:attr:`ConsensusNode.last_heard`); nothing is
written to the metadata log per heartbeat.  Only replication counts (appends
and snapshots, and the answers to them), never votes: a node cut off from the
controller in one direction campaigns in vain, and counting its vote requests
made the controller unfence it at each one and fence it again a session
timeout later.  A stalled connection is redialled within
``controller.quorum.request.timeout.ms`` (:mod:`.transport`), so heartbeats do
not queue behind it for TCP's backed-off retransmissions once the network is back.

:class:`BrokerLiveness` runs on every node and acts only while this node is
the controller.  A registered broker silent for ``broker.session.timeout.ms``
is fenced with a :class:`~chronik.metadata.commands.FenceBroker` command,
whose application elects new leaders for its partitions (the rule is in
:mod:`chronik.metadata.image`); a fenced broker heard from again within the
session timeout is unfenced (:class:`~chronik.metadata.commands.UnfenceBroker`).
A broker that fenced itself with
:class:`~chronik.metadata.commands.ControlledShutdown` (SIGTERM) is left
alone until it registers again on restart.  One command at a time, oldest silence first.  A new controller inherits
the table its node kept as a follower (a follower hears the old controller
and, through forwarding and elections, the others), so a dead controller is
fenced about one session timeout after it died, once a successor exists.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import TYPE_CHECKING, AsyncIterator

import trio

from ..metadata.commands import FenceBroker, UnfenceBroker
from ..metadata.image import CommandRejected
from ..metadata.view import MetadataView, Submit
from .raft import Role

if TYPE_CHECKING:
    from .node import ConsensusNode

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.1
"""How often the controller compares the liveness table with the brokers' fenced state."""


def liveness_change(image_brokers: dict[int, bool], last_heard: dict[int, float], now: float, session_timeout: float,
                    controller: int) -> FenceBroker | UnfenceBroker | None:
    """The next fencing change the controller should commit, or None.

    ``image_brokers`` maps each registered broker to whether it is fenced;
    ``last_heard`` says when each peer was last heard from (the controller
    itself is always live).  Fencing comes before unfencing.
    """
    silent = sorted(
        (last_heard.get(node_id, float("-inf")), node_id)
        for node_id, fenced in image_brokers.items()
        if not fenced and node_id != controller and now - last_heard.get(node_id, float("-inf")) > session_timeout
    )
    if silent:
        return FenceBroker(node_id=silent[0][1])
    for node_id, fenced in sorted(image_brokers.items()):
        if fenced and (node_id == controller or now - last_heard.get(node_id, float("-inf")) <= session_timeout):
            return UnfenceBroker(node_id=node_id)
    return None


async def controller_ticks(consensus: "ConsensusNode", interval: float) -> AsyncIterator[float]:
    """Every ``interval`` seconds while this node is the controller, the current time; never ends.

    The shared shape of the controller's periodic duties (fencing here,
    preferred leaders in :mod:`.balance`).  It opens no cancel scope, so it
    is safe to iterate in the task that cancels it.
    """
    while True:
        await trio.sleep(interval)
        if consensus.role is Role.LEADER:
            yield trio.current_time()


class BrokerLiveness:
    """The controller's fencing loop for one node (see the module docstring).  Run with :meth:`run`.

    Given this node's Raft voter (its role and liveness table), the metadata
    (the registered brokers) and ``submit`` for the fencing commands.
    """

    def __init__(self, consensus: "ConsensusNode", metadata: MetadataView, submit: Submit, *,
                 session_timeout: float) -> None:
        self.consensus = consensus
        self.metadata = metadata
        self.submit = submit
        self.session_timeout = session_timeout

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fence and unfence brokers while this node is the controller, until cancelled.

        Cancellation: a command being submitted may still commit.
        """
        consensus = self.consensus
        task_status.started()
        async with aclosing(controller_ticks(consensus, CHECK_SECONDS)) as ticks:
            async for now in ticks:
                # a broker in controlled shutdown stays fenced until it registers again
                brokers = {node_id: b.fenced for node_id, b in self.metadata.image.brokers.items() if not b.shutting_down}
                command = liveness_change(brokers, consensus.last_heard, now, self.session_timeout, consensus.node_id)
                if command is None:
                    continue
                try:
                    with trio.move_on_after(max(self.session_timeout, 1.0)):
                        changed = await self.submit(command)
                        verb = "fenced" if isinstance(command, FenceBroker) else "unfenced"
                        log.info("%s broker %d; new leaders for %d partition(s)", verb, command.node_id,
                                 len(changed) if isinstance(changed, list) else 0)
                except CommandRejected as exc:
                    log.warning("cannot %s: %s (%s)", command, exc.message, exc.error)
                    await trio.sleep(CHECK_SECONDS)
