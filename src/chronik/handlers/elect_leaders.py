"""ElectLeaders (key 43, v0-v2): preferred (0) or unclean (1) leader elections.

The election is one :class:`~chronik.metadata.commands.ElectLeaders` metadata
command, applied by the controller's rule on every node (forwarded to the
controller from any other node, like every metadata write); the answer is
sent once it is applied, so the new leaders are in this node's metadata.
Per partition: none (elected), ELECTION_NOT_NEEDED (the partition already
has the leader the election would give), PREFERRED_LEADER_NOT_AVAILABLE
(the first replica is not in the ISR, or fenced), ELIGIBLE_LEADERS_NOT_AVAILABLE
(unclean: no live replica), UNKNOWN_TOPIC_OR_PARTITION.  v0 has no election
type (preferred).  Null ``topic_partitions`` means every partition, and then
the partitions that needed no election are left out of the answer (as Kafka
does).  An unknown election type is INVALID_REQUEST; a command the metadata
log could not take (no controller, timeout) gives its error to every
partition (and, v1+, as the top-level error).
"""

from __future__ import annotations

from typing import Any

from ..metadata import CommandRejected, ElectLeaders
from ..metadata.commands import PREFERRED_ELECTION, UNCLEAN_ELECTION
from ..protocol import ErrorCode
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


def _results(entries: list[tuple[str, int, int, str | None]]) -> list[dict[str, Any]]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for topic, partition, code, message in entries:
        by_topic.setdefault(topic, []).append({"partition_id": partition, "error_code": code, "error_message": message})
    return [{"topic": topic, "partition_result": results} for topic, results in by_topic.items()]


@handles(43, 0, 2)
async def handle_elect_leaders(ctx: RequestContext, request: Any) -> Any:
    election_type = int(getattr(request, "election_type", PREFERRED_ELECTION))
    wanted: list[list[Any]] | None = None
    if request.topic_partitions is not None:
        seen: dict[tuple[str, int], None] = {}
        for topic in request.topic_partitions:
            for partition in topic.partitions:
                seen.setdefault((str(topic.topic), int(partition)))
        wanted = [[topic, partition] for topic, partition in seen]

    def everyone(code: ErrorCode, message: str) -> Any:
        entries = [(t, p, int(code), message) for t, p in (wanted or [])]
        return ctx.respond(throttle_time=0, error_code=int(code), replica_election_results=_results(entries))

    if not ctx.authorized(AclOperation.ALTER, ResourceType.CLUSTER):
        return everyone(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, f"{ctx.principal} may not ALTER the cluster")
    if election_type not in (PREFERRED_ELECTION, UNCLEAN_ELECTION):
        return everyone(ErrorCode.INVALID_REQUEST, f"unknown election type {election_type}")
    try:
        results = await ctx.broker.submit(ElectLeaders(election_type=election_type, partitions=wanted), ctx.origin)
    except CommandRejected as exc:
        return everyone(ErrorCode[exc.error], exc.message)
    assert isinstance(results, list)
    entries = [(t, p, 0 if error is None else int(ErrorCode[error]), message) for t, p, error, message in results]
    return ctx.respond(throttle_time=0, error_code=0, replica_election_results=_results(entries))
