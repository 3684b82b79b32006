"""Topic-level configuration keys Chronik understands, with Kafka's names and types.

A topic config is either set explicitly on the topic (stored in the metadata
image) or inherited from the broker default of the same meaning.  Only keys
listed here can be set; DescribeConfigs reports all of them with their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class InvalidConfig(ValueError):
    """A config value that does not parse or is out of range (INVALID_CONFIG)."""


def _int(low: int, high: int = 2**63 - 1) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            number = int(value)
        except ValueError:
            raise InvalidConfig(f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise InvalidConfig(f"{number} is outside [{low}, {high}]")
        return str(number)

    return check


def _choice(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise InvalidConfig(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _bool(value: str) -> str:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise InvalidConfig(f"{value!r} is not true or false")
    return lowered


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    name: str
    kind: str  # Kafka's config type name: INT, LONG, STRING, BOOLEAN, LIST
    default: str  # used when no broker default applies
    broker_key: str | None  # the broker setting that supplies the default
    check: Callable[[str], str]
    doc: str


TOPIC_CONFIGS: dict[str, TopicConfigDef] = {
    d.name: d
    for d in (
        TopicConfigDef("cleanup.policy", "LIST", "delete", None, _choice("delete"), "Only delete (retention) is supported; compaction is not."),
        TopicConfigDef("retention.ms", "LONG", "604800000", "log.retention.ms", _int(-1), "Delete segments older than this; -1 keeps forever."),
        TopicConfigDef("retention.bytes", "LONG", "-1", "log.retention.bytes", _int(-1), "Delete old segments while the partition is larger; -1 = no limit."),
        TopicConfigDef("segment.bytes", "INT", "1073741824", "log.segment.bytes", _int(1024, 2**31 - 1), "Roll to a new segment at this size."),
        TopicConfigDef("segment.ms", "LONG", "604800000", None, _int(1), "Roll to a new segment after this time."),
        TopicConfigDef("max.message.bytes", "INT", "1048588", "message.max.bytes", _int(0, 2**31 - 1), "Largest record batch accepted."),
        TopicConfigDef("message.timestamp.type", "STRING", "CreateTime", None, _choice("CreateTime", "LogAppendTime"), "Keep the producer's timestamps or stamp batches on append."),
        TopicConfigDef("min.insync.replicas", "INT", "1", "min.insync.replicas", _int(1, 1000), "Replicas that must have a record for acks=all."),
        TopicConfigDef("unclean.leader.election.enable", "BOOLEAN", "false", None, _bool, "Allow an out-of-sync replica to become leader."),
        TopicConfigDef("compression.type", "STRING", "producer", None, _choice("producer"), "Batches are stored as the producer sent them."),
    )
}


def validate_topic_config(name: str, value: str | None) -> str | None:
    """Normalised value, or raise InvalidConfig (unknown key or bad value)."""
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise InvalidConfig(f"unknown topic config {name!r}")
    if value is None:
        raise InvalidConfig(f"config {name!r} needs a value")
    return definition.check(value)
