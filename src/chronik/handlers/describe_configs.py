"""DescribeConfigs (key 32, v1-v4): topic and broker configs with their sources.

TOPIC resources list every topic config Chronik knows (sorted by name) with
its effective value: ``DYNAMIC_TOPIC_CONFIG`` when set on the topic, else
``STATIC_BROKER_CONFIG`` when the broker setting of the same meaning was
configured explicitly, else ``DEFAULT_CONFIG``; never read-only or sensitive.
A missing topic is UNKNOWN_TOPIC_OR_PARTITION, an illegal name
INVALID_TOPIC_EXCEPTION.

BROKER resources named with this node's id list the broker's Kafka-named
settings, read-only (they change only by restarting with a new
configuration), ``STATIC_BROKER_CONFIG`` or ``DEFAULT_CONFIG``.  The empty name
means the cluster-wide *dynamic* broker defaults, as in Kafka: Chronik has
none, so the list is empty.  Another node's id is INVALID_REQUEST, as is any
other resource type.

In cluster mode topic configs come from this node's replicated metadata; a
node whose metadata is stale (:meth:`Broker.metadata_lag`) answers TOPIC
resources REQUEST_TIMED_OUT (retriable) with the reason, rather than
possibly outdated values.

``configuration_keys`` null or empty means every key; otherwise only the named
ones (unknown names are left out).  ``include_synonyms`` adds, per config, the
values it would take from each level in precedence order (the topic's own, the
explicit broker setting, the default), the winning one first; without it the
synonym list is empty.  ``include_documentation`` (v3+) adds each config's
description.  ``config_type`` (v3+) is Kafka's type id.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..config import KAFKA_SETTING_DOCS, KAFKA_SETTINGS, BrokerConfig
from ..metadata import TopicImage, topic_name_problem
from ..metadata.acls import AclOperation, ResourceType
from ..metadata.topic_configs import TOPIC_CONFIGS
from ..protocol import ErrorCode
from .registry import RequestContext, handles

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4

# Kafka's ConfigDef.Type ids, as DescribeConfigs v3+ reports them.
CONFIG_TYPES = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7, "CLASS": 8, "PASSWORD": 9}

# Kafka's DescribeConfigs config sources.
CONFIG_SOURCE_TOPIC = 1
CONFIG_SOURCE_STATIC_BROKER = 4
CONFIG_SOURCE_DEFAULT = 5


class ResourceRefused(Exception):
    """A config resource this request cannot touch: the Kafka error and why."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def resolve_resource(ctx: RequestContext, resource_type: int, resource_name: str,
                     operation: AclOperation) -> TopicImage | None:
    """The topic a TOPIC resource names, or None for this broker's BROKER resource.

    Raises :class:`ResourceRefused` for a resource the principal may not
    ``operation`` (DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic:
    TOPIC_AUTHORIZATION_FAILED; on the cluster, for a broker:
    CLUSTER_AUTHORIZATION_FAILED -- checked first, as Kafka), a missing or
    illegal topic, another node's (or a non-numeric) broker name, and every
    other resource type.
    """
    if resource_type == RESOURCE_TOPIC and not ctx.authorized(operation, ResourceType.TOPIC, resource_name):
        raise ResourceRefused(ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                              f"{ctx.principal} may not {operation.name} topic {resource_name!r}")
    if resource_type == RESOURCE_BROKER and not ctx.authorized(operation, ResourceType.CLUSTER):
        raise ResourceRefused(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, f"{ctx.principal} may not {operation.name} the cluster")
    if resource_type == RESOURCE_TOPIC:
        problem = topic_name_problem(resource_name)
        if problem is not None:
            raise ResourceRefused(ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
        topic = ctx.broker.image.topics.get(resource_name)
        if topic is None:
            raise ResourceRefused(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {resource_name!r} does not exist")
        return topic
    if resource_type == RESOURCE_BROKER:
        if resource_name not in ("", str(ctx.broker.node_id)):
            raise ResourceRefused(
                ErrorCode.INVALID_REQUEST,
                f"unexpected broker id {resource_name!r}: expected {ctx.broker.node_id} or the empty string",
            )
        return None
    raise ResourceRefused(ErrorCode.INVALID_REQUEST, f"unsupported config resource type {resource_type}")


def resource_result(resource: Any, code: ErrorCode = ErrorCode.NONE, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """One resource's entry of a (Describe|Alter|IncrementalAlter)Configs response."""
    return {"error_code": int(code), "error_message": message, "resource_type": resource.resource_type,
            "resource_name": resource.resource_name, **extra}


@dataclass(frozen=True, slots=True)
class Synonym:
    name: str
    value: str
    source: int


@functools.cache
def _default_broker_configs() -> dict[str, str]:
    return BrokerConfig().kafka_configs()


def broker_synonyms(config: BrokerConfig, key: str) -> list[Synonym]:
    """Where the broker setting ``key`` gets its value: the explicit setting (if any), then the default."""
    chain = []
    if config.sources.get(KAFKA_SETTINGS[key], "default") != "default":
        chain.append(Synonym(key, config.kafka_configs()[key], CONFIG_SOURCE_STATIC_BROKER))
    chain.append(Synonym(key, _default_broker_configs()[key], CONFIG_SOURCE_DEFAULT))
    return chain


def topic_synonyms(config: BrokerConfig, topic: TopicImage, name: str) -> list[Synonym]:
    """Where topic config ``name`` gets its value, highest precedence first."""
    definition = TOPIC_CONFIGS[name]
    chain = []
    if name in topic.configs:
        chain.append(Synonym(name, topic.configs[name], CONFIG_SOURCE_TOPIC))
    if definition.broker_key is not None:
        chain.extend(broker_synonyms(config, definition.broker_key))
    else:
        chain.append(Synonym(name, definition.default, CONFIG_SOURCE_DEFAULT))
    return chain


def config_entry(name: str, chain: list[Synonym], *, read_only: bool, kind: str, doc: str | None,
                 synonyms: bool, documentation: bool) -> dict[str, Any]:
    return {
        "name": name, "value": chain[0].value, "read_only": read_only, "config_source": chain[0].source,
        "is_sensitive": False, "config_type": CONFIG_TYPES.get(kind, 0),
        "synonyms": [{"name": s.name, "value": s.value, "source": s.source} for s in chain] if synonyms else [],
        "documentation": doc if documentation else None,
    }


def _broker_config_kind(key: str, value: str) -> str:
    for definition in TOPIC_CONFIGS.values():
        if definition.broker_key == key:
            return definition.kind
    if value in ("true", "false"):
        return "BOOLEAN"
    return "INT" if value.lstrip("-").isdigit() else "STRING"


def describe_resource(ctx: RequestContext, resource: Any, synonyms: bool, documentation: bool) -> dict[str, Any]:
    try:
        topic = resolve_resource(ctx, resource.resource_type, resource.resource_name, AclOperation.DESCRIBE_CONFIGS)
    except ResourceRefused as exc:
        return resource_result(resource, exc.code, exc.message, configs=[])
    if topic is not None and (stale := ctx.broker.metadata_lag()) is not None:
        return resource_result(resource, ErrorCode.REQUEST_TIMED_OUT, stale, configs=[])
    wanted = set(resource.configuration_keys or ())
    config = ctx.broker.config
    entries = []
    if topic is not None:
        for name in sorted(TOPIC_CONFIGS):
            if not wanted or name in wanted:
                definition = TOPIC_CONFIGS[name]
                entries.append(config_entry(name, topic_synonyms(config, topic, name), read_only=False,
                                            kind=definition.kind, doc=definition.doc,
                                            synonyms=synonyms, documentation=documentation))
    elif resource.resource_name != "":
        for key, value in sorted(config.kafka_configs().items()):
            if not wanted or key in wanted:
                entries.append(config_entry(key, broker_synonyms(config, key), read_only=True,
                                            kind=_broker_config_kind(key, value), doc=KAFKA_SETTING_DOCS.get(key),
                                            synonyms=synonyms, documentation=documentation))
    return resource_result(resource, configs=entries)


@handles(32, 1, 4)
async def handle_describe_configs(ctx: RequestContext, request: Any) -> Any:
    synonyms = request.include_synonyms
    documentation = getattr(request, "include_documentation", False)
    return ctx.respond(throttle_time=0, results=[
        describe_resource(ctx, resource, synonyms, documentation) for resource in request.resources
    ])
