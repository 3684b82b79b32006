"""CreateTopics (key 19): validated, written through the metadata log.

Errors per topic: TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION,
INVALID_PARTITIONS (also over ``max_partitions_per_topic``),
INVALID_REPLICATION_FACTOR, INVALID_CONFIG, INVALID_REQUEST (duplicate names
in one request), POLICY_VIOLATION (over ``max_partitions`` in all).  A
request asking for more than ``max_partitions_per_request`` partitions in all
is refused whole with POLICY_VIOLATION before anything is created (Kafka
refuses more than 10000 the same way).  ``num_partitions`` and
``replication_factor`` of -1 (v4+) take the broker defaults; manual replica
assignments are accepted when they name registered brokers.  v5+ returns the
topic's effective configs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..metadata import CommandRejected, topic_name_problem
from ..metadata.placement import PartitionLimits, TopicRequest, topic_request_problem
from ..metadata.topic_configs import TOPIC_CONFIGS, InvalidConfig, validate_topic_config
from ..protocol import ErrorCode
from .describe_configs import topic_synonyms
from ..metadata.acls import AclOperation, ResourceType
from .registry import RequestContext, handles


def topic_result(name: str, code: ErrorCode, message: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "error_code": int(code), "error_message": message, "num_partitions": -1,
            "replication_factor": -1, "configs": [], "topic_id": None, **extra}


async def create_one(ctx: RequestContext, creatable: Any, validate_only: bool) -> dict[str, Any]:
    broker = ctx.broker
    name = creatable.name
    if not ctx.may_create_topic(name):
        return topic_result(name, ErrorCode.TOPIC_AUTHORIZATION_FAILED, f"{ctx.principal} may not CREATE topic {name!r}")
    problem = topic_name_problem(name)
    if problem is not None:
        return topic_result(name, ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
    if name in broker.image.topics:
        return topic_result(name, ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
    configs: dict[str, str] = {}
    for config in creatable.configs:
        try:
            value = validate_topic_config(config.name, config.value)
        except InvalidConfig as exc:
            return topic_result(name, ErrorCode.INVALID_CONFIG, str(exc))
        if value is not None:
            configs[config.name] = value
    num_partitions = creatable.num_partitions
    replication_factor = creatable.replication_factor
    replicas: list[list[int]] | None = None
    if creatable.assignments:
        if num_partitions != -1 or replication_factor != -1:
            return topic_result(name, ErrorCode.INVALID_REQUEST,
                                "give either replica assignments or partition count and replication factor")
        ordered = sorted(creatable.assignments, key=lambda a: a.partition_index)
        if [a.partition_index for a in ordered] != list(range(len(ordered))):
            return topic_result(name, ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                "assigned partitions must be numbered consecutively from 0")
        replicas = [list(a.broker_ids) for a in ordered]
        num_partitions, replication_factor = len(replicas), len(replicas[0])
        assignment_problem = broker.image.replica_assignment_problem(replicas, replication_factor)
        if assignment_problem is not None:
            return topic_result(name, ErrorCode.INVALID_REPLICA_ASSIGNMENT, assignment_problem)
    if num_partitions == -1:
        num_partitions = broker.config.num_partitions
    if replication_factor == -1:
        replication_factor = broker.config.default_replication_factor
    request = TopicRequest(name, num_partitions, replication_factor, configs, replicas)
    problem2 = topic_request_problem(broker.image, request, PartitionLimits.of(broker.config))
    if problem2 is not None:
        return topic_result(name, ErrorCode[problem2[0]], problem2[1])
    if validate_only:
        return topic_result(name, ErrorCode.NONE, num_partitions=num_partitions, replication_factor=replication_factor)
    try:
        topic = await broker.create_topic(request, ctx.origin)
    except CommandRejected as exc:
        return topic_result(name, ErrorCode[exc.error], exc.message)
    return topic_result(
        name, ErrorCode.NONE, topic_id=topic.topic_id, num_partitions=len(topic.partitions),
        replication_factor=len(topic.partitions[0].replicas),
        configs=[
            {"name": key, "value": chain[0].value, "read_only": False, "is_sensitive": False,
             "config_source": chain[0].source}
            for key in sorted(TOPIC_CONFIGS)
            for chain in [topic_synonyms(broker.config, topic, key)]
        ],
    )


def too_many_in_one_request(ctx: RequestContext, partitions: int) -> str | None:
    """The message refusing a request that adds ``partitions`` in all, if over ``max_partitions_per_request``."""
    limit = ctx.broker.config.max_partitions_per_request
    if partitions <= limit:
        return None
    return (f"Excessively large number of partitions per request: {partitions} requested, "
            f"at most {limit} (max_partitions_per_request)")


@handles(19, 2, 7)
async def handle_create_topics(ctx: RequestContext, request: Any) -> Any:
    # Counted before anything else, as Kafka does: a request over the limit is refused whole.
    default = ctx.broker.config.num_partitions
    asked = sum(len(t.assignments) if t.assignments else (default if t.num_partitions == -1 else max(t.num_partitions, 0))
                for t in request.topics)
    problem = too_many_in_one_request(ctx, asked)
    if problem is not None:
        return ctx.respond(throttle_time=0, topics=[topic_result(t.name, ErrorCode.POLICY_VIOLATION, problem)
                                                    for t in request.topics])
    counts = Counter(t.name for t in request.topics)
    results = []
    for creatable in request.topics:
        if counts[creatable.name] > 1:
            results.append(topic_result(creatable.name, ErrorCode.INVALID_REQUEST, "topic named more than once in the request"))
            continue
        results.append(await create_one(ctx, creatable, request.validate_only))
    return ctx.respond(throttle_time=0, topics=results)
