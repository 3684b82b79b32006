"""Metadata (key 3): brokers, controller, topics and partitions, with topic ids.

Topics the client names that do not exist are auto-created (when the broker
allows it and the request does too, v4+); the reply then carries the new
topic.  v0 with an empty list and v1+ with a null list mean "all topics".
In cluster mode fenced brokers are left out of the broker list (and shown
as offline replicas); a partition with no leader has LEADER_NOT_AVAILABLE.
A node whose metadata is stale (:meth:`Broker.metadata_lag`: not caught up
with the controller since it started, or unable to keep up) answers every
topic LEADER_NOT_AVAILABLE, without partitions and without auto-creating:
clients keep what they knew and ask again (another node, or later).
"""

from __future__ import annotations

from typing import Any

from ..metadata import CommandRejected, TopicImage, topic_name_problem
from ..metadata.acls import AclOperation, ResourceType
from ..metadata.log import METADATA_TOPIC
from ..protocol import ErrorCode
from ..protocol.build import is_zero_uuid
from .registry import NOT_REQUESTED, RequestContext, handles


def describe_topic(ctx: RequestContext, topic: TopicImage, with_operations: bool = False) -> dict[str, Any]:
    brokers = ctx.broker.image.brokers
    return {
        "error_code": 0,
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": topic.name == METADATA_TOPIC,
        "partitions": [
            {
                # no leader (cluster mode, every eligible replica fenced): clients wait and ask again
                "error_code": 0 if p.leader >= 0 else int(ErrorCode.LEADER_NOT_AVAILABLE),
                "partition_index": index,
                "leader_id": p.leader,
                "leader_epoch": p.leader_epoch,
                "replica_nodes": list(p.replicas),
                "isr_nodes": list(p.isr),
                "offline_replicas": [r for r in p.replicas if r in brokers and brokers[r].fenced],
            }
            for index, p in enumerate(topic.partitions)
        ],
        "topic_authorized_operations": ctx.authorized_operations(ResourceType.TOPIC, topic.name) if with_operations
        else NOT_REQUESTED,
    }


def topic_error(name: str | None, code: ErrorCode, topic_id: Any = None) -> dict[str, Any]:
    return {"error_code": int(code), "name": name, "topic_id": topic_id, "is_internal": False, "partitions": []}


def brokers_of(ctx: RequestContext) -> list[dict[str, Any]]:
    broker = ctx.broker
    out = {}
    for b in broker.image.brokers.values():
        endpoint = None if b.fenced else b.endpoint(ctx.listener)
        if endpoint is not None:  # a node without the client's listener is left out, as Kafka does
            out[b.node_id] = {"node_id": b.node_id, "host": endpoint[0], "port": endpoint[1], "rack": b.rack}
    here = ctx.advertised_address
    out[broker.node_id] = {
        "node_id": broker.node_id, "host": here.host, "port": here.port, "rack": broker.config.rack,
    }
    return [out[k] for k in sorted(out)]


@handles(3, 0, 12)
async def handle_metadata(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    topics: list[dict[str, Any]] = []
    wanted = request.topics
    with_operations = getattr(request, "include_topic_authorized_operations", False)
    if broker.metadata_lag() is not None:
        known = broker.image.topics
        if wanted is None or (ctx.api_version == 0 and not wanted):
            topics = [topic_error(t.name, ErrorCode.LEADER_NOT_AVAILABLE, t.topic_id)
                      for t in sorted(known.values(), key=lambda t: t.name)
                      if ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, t.name, log_denial=False)]
        else:
            topics = [topic_error(r.name, ErrorCode.LEADER_NOT_AVAILABLE, getattr(r, "topic_id", None)) for r in wanted]
    elif wanted is None or (ctx.api_version == 0 and not wanted):
        # every topic the principal may describe; the others are left out, silently (as Kafka)
        topics = [describe_topic(ctx, t, with_operations) for t in sorted(broker.image.topics.values(), key=lambda t: t.name)
                  if ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, t.name, log_denial=False)]
    else:
        may_create = getattr(request, "allow_auto_topic_creation", True)
        for requested in wanted:
            name = requested.name
            topic_id = getattr(requested, "topic_id", None)
            if name is None and not is_zero_uuid(topic_id):
                found = broker.image.topics_by_id.get(topic_id)
                if found is not None and not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, found.name):
                    found = None  # as Kafka: an id the principal may not describe is not known to it
                topics.append(describe_topic(ctx, found, with_operations) if found else topic_error(None, ErrorCode.UNKNOWN_TOPIC_ID, topic_id))
                continue
            if not ctx.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, name):
                topics.append(topic_error(name, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            topic = broker.image.topics.get(name)
            if topic is None and topic_name_problem(name) is not None:
                topics.append(topic_error(name, ErrorCode.INVALID_TOPIC_EXCEPTION))
                continue
            if topic is None and may_create and broker.config.auto_create_topics_enable and not ctx.may_create_topic(name):
                topics.append(topic_error(name, ErrorCode.TOPIC_AUTHORIZATION_FAILED))
                continue
            if topic is None and may_create:
                try:
                    topic = await broker.auto_create_topic(name, ctx.origin)
                except CommandRejected as exc:
                    topics.append(topic_error(name, ErrorCode[exc.error]))
                    continue
            topics.append(describe_topic(ctx, topic, with_operations) if topic else topic_error(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
    return ctx.respond(
        throttle_time=0,
        brokers=brokers_of(ctx),
        cluster_id=broker.cluster_id,
        controller_id=broker.controller_id,
        topics=topics,
        cluster_authorized_operations=ctx.authorized_operations(ResourceType.CLUSTER)
        if getattr(request, "include_cluster_authorized_operations", False) else NOT_REQUESTED,
    )
