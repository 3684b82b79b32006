"""AlterConfigs (key 33, v0-v2): replace a topic's whole explicit config.

For a TOPIC resource the configs given become the topic's explicit configs;
every config not given falls back to its broker default (Kafka's legacy
AlterConfigs semantics, written as one ``AlterTopicConfigs(replace=True)``
command).  Unknown keys and bad values are INVALID_CONFIG; a null value or a
key given twice is INVALID_REQUEST; a resource named twice in one request is
INVALID_REQUEST; a missing topic UNKNOWN_TOPIC_OR_PARTITION.  Nothing changes
for a refused resource, and with ``validate_only`` nothing changes at all.

BROKER resources: Chronik has no dynamic broker configs, so any change is
INVALID_REQUEST (set it in the broker's configuration and restart); an empty
change is accepted.  Other resource types are INVALID_REQUEST.

:func:`alter_resources` is shared with IncrementalAlterConfigs, which differs
only in how a resource's configs become a command.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ..metadata import AlterTopicConfigs, CommandRejected, TopicImage
from ..metadata.acls import AclOperation
from ..metadata.topic_configs import InvalidConfig, validate_topic_config
from ..protocol import ErrorCode
from .create_partitions import answer_each_once
from .describe_configs import ResourceRefused, resolve_resource, resource_result
from .registry import RequestContext, handles

# How one resource's requested configs become the command that applies them.
Plan = Callable[[RequestContext, TopicImage, Any], AlterTopicConfigs]


def checked_value(name: str, value: str | None) -> str:
    """The normalised value of topic config ``name``; raises ResourceRefused."""
    if value is None:
        raise ResourceRefused(ErrorCode.INVALID_REQUEST, f"null value not supported for config {name!r}")
    try:
        checked = validate_topic_config(name, value)
    except InvalidConfig as exc:
        raise ResourceRefused(ErrorCode.INVALID_CONFIG, f"{name}: {exc}") from None
    assert checked is not None
    return checked


def distinct_config_names(configs: Any) -> None:
    """Raise ResourceRefused (INVALID_REQUEST) when a config is named twice."""
    duplicates = sorted(name for name, n in Counter(c.name for c in configs).items() if n > 1)
    if duplicates:
        raise ResourceRefused(ErrorCode.INVALID_REQUEST, f"config(s) given more than once: {', '.join(duplicates)}")


async def alter_one(ctx: RequestContext, resource: Any, plan: Plan, validate_only: bool) -> dict[str, Any]:
    try:
        topic = resolve_resource(ctx, resource.resource_type, resource.resource_name, AclOperation.ALTER_CONFIGS)
        distinct_config_names(resource.configs)
        if topic is None:
            if resource.configs:
                names = ", ".join(sorted(c.name for c in resource.configs))
                raise ResourceRefused(
                    ErrorCode.INVALID_REQUEST,
                    f"cannot update broker configs dynamically ({names}): set them in the broker's configuration and restart",
                )
            return resource_result(resource)
        command = plan(ctx, topic, resource.configs)
        if not validate_only:
            await ctx.broker.submit(command, ctx.origin)
    except ResourceRefused as exc:
        return resource_result(resource, exc.code, exc.message)
    except CommandRejected as exc:
        return resource_result(resource, ErrorCode[exc.error], exc.message)
    return resource_result(resource)


async def alter_resources(ctx: RequestContext, request: Any, plan: Plan) -> Any:
    """The response to an (Incremental)AlterConfigs request, resource by resource."""
    responses = await answer_each_once(
        request.resources, lambda r: (r.resource_type, r.resource_name),
        lambda r: resource_result(r, ErrorCode.INVALID_REQUEST, "resource named more than once in the request"),
        lambda r: alter_one(ctx, r, plan, request.validate_only),
    )
    return ctx.respond(throttle_time=0, responses=responses)


def replace_plan(ctx: RequestContext, topic: TopicImage, configs: Any) -> AlterTopicConfigs:
    return AlterTopicConfigs(name=topic.name, set={c.name: checked_value(c.name, c.value) for c in configs}, replace=True)


@handles(33, 0, 2)
async def handle_alter_configs(ctx: RequestContext, request: Any) -> Any:
    return await alter_resources(ctx, request, replace_plan)
