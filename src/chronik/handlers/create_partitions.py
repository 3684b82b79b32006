"""CreatePartitions (key 37, v0-v3): grow a topic to ``count`` partitions.

The partition count only grows: ``count`` equal to or below the current
count is INVALID_PARTITIONS, and so is a count above ``max_partitions_per_topic``.
A request adding more than ``max_partitions_per_request`` in all is refused
whole (POLICY_VIOLATION, as Kafka refuses more than 10000), and so is an
entry that would take the cluster over ``max_partitions``.
The topic's replication factor must not exceed the registered brokers
(INVALID_REPLICATION_FACTOR).  Without ``assignments`` (null or empty) the new
partitions get that replication factor, spread round-robin over the
registered brokers (:func:`~chronik.metadata.placement.replica_assignment`).  With assignments
there must be one per new partition, each with the topic's replication factor
of distinct registered brokers, leader first (else
INVALID_REPLICA_ASSIGNMENT).  A missing topic is UNKNOWN_TOPIC_OR_PARTITION, a
topic named twice INVALID_REQUEST.
``validate_only`` checks everything and changes nothing; otherwise the new
partitions exist (and their logs are open) when the answer is sent.

:func:`answer_each_once` (refuse what a request names twice) is shared with
the config-altering APIs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from ..metadata import CommandRejected, CreatePartitions
from ..metadata.placement import PartitionLimits, TopicRequest, replica_assignment, topic_request_problem
from ..protocol import ErrorCode
from .create_topics import too_many_in_one_request
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles

_Item = TypeVar("_Item")


def topic_result(name: str, code: ErrorCode = ErrorCode.NONE, message: str | None = None) -> dict[str, Any]:
    return {"name": name, "error_code": int(code), "error_message": message}


async def create_partitions(ctx: RequestContext, wanted: Any, validate_only: bool) -> dict[str, Any]:
    broker = ctx.broker
    if not ctx.authorized(AclOperation.ALTER, ResourceType.TOPIC, wanted.name):
        return topic_result(wanted.name, ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"{ctx.principal} may not ALTER topic {wanted.name!r}")
    topic = broker.image.topics.get(wanted.name)
    if topic is None:
        return topic_result(wanted.name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {wanted.name!r} does not exist")
    current = len(topic.partitions)
    if wanted.count <= current:
        return topic_result(wanted.name, ErrorCode.INVALID_PARTITIONS,
                            f"topic {wanted.name!r} has {current} partition(s); the count can only grow, not become {wanted.count}")
    added = wanted.count - current
    replication_factor = len(topic.partitions[0].replicas)
    request_problem = topic_request_problem(broker.image, TopicRequest(wanted.name, wanted.count, replication_factor, {}),
                                            PartitionLimits.of(broker.config), added)
    if request_problem is not None:
        return topic_result(wanted.name, ErrorCode[request_problem[0]], request_problem[1])
    if wanted.assignments:
        new_replicas = [list(a.broker_ids) for a in wanted.assignments]
        if len(new_replicas) != added:
            return topic_result(wanted.name, ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                f"{added} partition(s) added but {len(new_replicas)} assignment(s) given")
        problem = broker.image.replica_assignment_problem(new_replicas, replication_factor)
        if problem is not None:
            return topic_result(wanted.name, ErrorCode.INVALID_REPLICA_ASSIGNMENT, problem)
    else:
        new_replicas = replica_assignment(broker.image, added, replication_factor, first_partition=current,
                                          this_node=broker.node_id)
    if validate_only:
        return topic_result(wanted.name)
    try:
        await broker.submit(CreatePartitions(name=wanted.name, new_replicas=new_replicas), ctx.origin)
    except CommandRejected as exc:
        return topic_result(wanted.name, ErrorCode[exc.error], exc.message)
    return topic_result(wanted.name)


async def answer_each_once(
    items: Sequence[_Item], key: Callable[[_Item], Hashable],
    refuse_repeated: Callable[[_Item], dict[str, Any]], answer: Callable[[_Item], Awaitable[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Answer each item in order; every item whose key occurs more than once is refused, not answered.

    Kafka's admin APIs refuse a topic or resource named twice in one request
    (INVALID_REQUEST) rather than pick one of the answers.
    """
    counts = Counter(key(item) for item in items)
    return [refuse_repeated(item) if counts[key(item)] > 1 else await answer(item) for item in items]


def partitions_added(ctx: RequestContext, wanted: Any) -> int:
    """Partitions a CreatePartitions entry would add (0 if it adds none or names no topic)."""
    topic = ctx.broker.image.topics.get(wanted.name)
    return max(0, wanted.count - len(topic.partitions)) if topic is not None else 0


@handles(37, 0, 3)
async def handle_create_partitions(ctx: RequestContext, request: Any) -> Any:
    problem = too_many_in_one_request(ctx, sum(partitions_added(ctx, t) for t in request.topics))
    if problem is not None:
        return ctx.respond(throttle_time=0, results=[topic_result(t.name, ErrorCode.POLICY_VIOLATION, problem)
                                                     for t in request.topics])
    results = await answer_each_once(
        request.topics, lambda t: t.name,
        lambda t: topic_result(t.name, ErrorCode.INVALID_REQUEST, "topic named more than once in the request"),
        lambda t: create_partitions(ctx, t, request.validate_only),
    )
    return ctx.respond(throttle_time=0, results=results)
