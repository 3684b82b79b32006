"""IncrementalAlterConfigs (key 44, v0-v1): edit a topic's explicit configs key by key.

Operations per config: SET (0) gives the topic its own value; DELETE (1)
removes it, so the broker default applies again; APPEND (2) and SUBTRACT (3)
add items to / remove items from a LIST config (its effective value, items
comma-separated; an item already there is not added twice), and are
INVALID_CONFIG for other types, as in Kafka.  Any other operation is
INVALID_REQUEST.  Unknown keys and bad resulting values are INVALID_CONFIG.
All of a resource's edits are one ``AlterTopicConfigs`` command: they apply
together or not at all.  Resource lookup, broker resources, duplicates and
``validate_only`` behave as in AlterConfigs (:mod:`.alter_configs`).
"""

from __future__ import annotations

from typing import Any

from ..metadata import AlterTopicConfigs, TopicImage
from ..metadata.topic_configs import TOPIC_CONFIGS, unknown_config_message
from ..protocol import ErrorCode
from .alter_configs import alter_resources, checked_value
from .describe_configs import ResourceRefused
from .registry import RequestContext, handles

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _list_items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _edited_list(current: str, op: int, name: str, value: str | None) -> str:
    if value is None:
        raise ResourceRefused(ErrorCode.INVALID_REQUEST, f"null value not supported for config {name!r}")
    items, given = _list_items(current), _list_items(value)
    if op == APPEND:
        return ",".join(items + [item for item in dict.fromkeys(given) if item not in items])
    return ",".join(item for item in items if item not in given)


def incremental_plan(ctx: RequestContext, topic: TopicImage, configs: Any) -> AlterTopicConfigs:
    effective = ctx.broker.topic_config(topic)
    set_values: dict[str, str] = {}
    delete: list[str] = []
    for config in configs:
        name, op = config.name, config.config_operation
        definition = TOPIC_CONFIGS.get(name)
        if op not in (SET, DELETE, APPEND, SUBTRACT):
            raise ResourceRefused(ErrorCode.INVALID_REQUEST, f"unknown config operation {op} for {name!r}")
        if definition is None:
            raise ResourceRefused(ErrorCode.INVALID_CONFIG, unknown_config_message(name))
        if op == SET:
            set_values[name] = checked_value(name, config.value)
        elif op == DELETE:
            delete.append(name)
        elif definition.kind != "LIST":
            raise ResourceRefused(ErrorCode.INVALID_CONFIG, f"{name} is a {definition.kind} config: APPEND and SUBTRACT need a LIST")
        else:
            set_values[name] = checked_value(name, _edited_list(effective[name], op, name, config.value))
    return AlterTopicConfigs(name=topic.name, set=set_values, delete=delete)


@handles(44, 0, 1)
async def handle_incremental_alter_configs(ctx: RequestContext, request: Any) -> Any:
    return await alter_resources(ctx, request, incremental_plan)
