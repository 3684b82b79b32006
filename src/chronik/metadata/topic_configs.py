"""Topic-level configuration keys Chronik understands, with Kafka's names and types.

A topic config is either set explicitly on the topic (stored in the metadata
image) or inherited from the broker default of the same meaning (Kafka's
``log.*`` names, see :mod:`chronik.config`).  Only keys listed in
:data:`TOPIC_CONFIGS` can be set; DescribeConfigs reports all of them with
their source.  Kafka topic configs Chronik does not implement are listed in
:data:`UNSUPPORTED_TOPIC_CONFIGS` with what to use instead, so a refusal says
"not supported by Chronik" rather than reading like a typo.

``cleanup.policy`` is stored normalised: ``delete``, ``compact`` or
``compact,delete`` (any order and spacing is accepted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class InvalidConfig(ValueError):
    """A config value that does not parse or is out of range (INVALID_CONFIG)."""


def _number(parse: Callable[[str], float], what: str, low: float, high: float) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            number = parse(value)
        except ValueError:
            raise InvalidConfig(f"{value!r} is not {what}") from None
        if not low <= number <= high:
            raise InvalidConfig(f"{number} is outside [{low}, {high}]")
        return repr(number)

    return check


def _int(low: int, high: int = 2**63 - 1) -> Callable[[str], str]:
    return _number(int, "an integer", low, high)


def _float(low: float, high: float) -> Callable[[str], str]:
    return _number(float, "a number", low, high)


def _choice(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise InvalidConfig(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


CLEANUP_POLICIES = ("delete", "compact")


def _cleanup_policy(value: str) -> str:
    items = [item.strip() for item in value.split(",")]
    if items == [""]:
        raise InvalidConfig("an empty cleanup.policy is not supported by Chronik: use delete with retention.ms=-1 "
                            "to keep everything")
    unknown = [item for item in items if item not in CLEANUP_POLICIES]
    if unknown:
        raise InvalidConfig(f"{unknown[0]!r} is not a cleanup policy: use delete, compact or compact,delete")
    return ",".join(policy for policy in ("compact", "delete") if policy in items)


def is_compacted(policy: str) -> bool:
    """Whether a (normalised) ``cleanup.policy`` value asks for compaction."""
    return "compact" in policy.split(",")


def deletes(policy: str) -> bool:
    """Whether a (normalised) ``cleanup.policy`` value asks for time/size retention."""
    return "delete" in policy.split(",")


COMPRESSION_TYPES = ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")


def _bool(value: str) -> str:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise InvalidConfig(f"{value!r} is not true or false")
    return lowered


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    name: str
    kind: str  # Kafka's config type name: INT, LONG, DOUBLE, STRING, BOOLEAN, LIST
    default: str  # used when no broker default applies
    broker_key: str | None  # the broker setting that supplies the default
    check: Callable[[str], str]
    doc: str


TOPIC_CONFIGS: dict[str, TopicConfigDef] = {
    d.name: d
    for d in (
        TopicConfigDef("cleanup.policy", "LIST", "delete", "log.cleanup.policy", _cleanup_policy,
                       "delete: retention deletes old segments; compact: the log cleaner keeps the latest record per key; "
                       "compact,delete: both."),
        TopicConfigDef("min.cleanable.dirty.ratio", "DOUBLE", "0.5", "log.cleaner.min.cleanable.ratio", _float(0.0, 1.0),
                       "Compact a partition once this share of its log is dirty (written since its last cleaning)."),
        TopicConfigDef("min.compaction.lag.ms", "LONG", "0", "log.cleaner.min.compaction.lag.ms", _int(0),
                       "A record stays uncompacted for at least this long."),
        TopicConfigDef("max.compaction.lag.ms", "LONG", str(2**63 - 1), "log.cleaner.max.compaction.lag.ms", _int(1),
                       "A record becomes eligible for compaction after at most this long, whatever the dirty ratio."),
        TopicConfigDef("delete.retention.ms", "LONG", "86400000", "log.cleaner.delete.retention.ms", _int(0),
                       "How long a tombstone (null value) is kept after its segment was compacted."),
        TopicConfigDef("retention.ms", "LONG", "604800000", "log.retention.ms", _int(-1), "Delete segments older than this; -1 keeps forever."),
        TopicConfigDef("retention.bytes", "LONG", "-1", "log.retention.bytes", _int(-1), "Delete old segments while the partition is larger; -1 = no limit."),
        TopicConfigDef("segment.bytes", "INT", "1073741824", "log.segment.bytes", _int(1024, 2**31 - 1), "Roll to a new segment at this size."),
        TopicConfigDef("segment.ms", "LONG", "604800000", "log.roll.ms", _int(1),
                       "Roll the active segment once it has held data this long (checked every second)."),
        TopicConfigDef("max.message.bytes", "INT", "1048588", "message.max.bytes", _int(0, 2**31 - 1), "Largest record batch accepted."),
        TopicConfigDef("message.timestamp.type", "STRING", "CreateTime", None, _choice("CreateTime", "LogAppendTime"), "Keep the producer's timestamps or stamp batches on append."),
        TopicConfigDef("min.insync.replicas", "INT", "1", "min.insync.replicas", _int(1, 1000), "Replicas that must have a record for acks=all."),
        TopicConfigDef("unclean.leader.election.enable", "BOOLEAN", "false", None, _bool, "Allow an out-of-sync replica to become leader."),
        TopicConfigDef("compression.type", "STRING", "producer", "compression.type", _choice(*COMPRESSION_TYPES),
                       "producer: batches are stored as sent; otherwise batches in another codec are recompressed "
                       "on append (uncompressed: decompressed)."),
    )
}


_TIMESTAMP_ADVICE = "timestamps are stored as the producer sent them; use message.timestamp.type=LogAppendTime to have the broker stamp them"
_NOT_NEEDED = "Chronik manages this itself; leave it unset"

UNSUPPORTED_TOPIC_CONFIGS: dict[str, str] = {
    "message.timestamp.difference.max.ms": _TIMESTAMP_ADVICE,
    "message.timestamp.before.max.ms": _TIMESTAMP_ADVICE,
    "message.timestamp.after.max.ms": _TIMESTAMP_ADVICE,
    "compression.gzip.level": "the codec's default level is used; set compression.type only",
    "compression.lz4.level": "the codec's default level is used; set compression.type only",
    "compression.zstd.level": "the codec's default level is used; set compression.type only",
    "flush.messages": "every acknowledged batch is already fsynced (group commit); choose --wal-profile instead",
    "flush.ms": "every acknowledged batch is already fsynced (group commit); choose --wal-profile instead",
    "index.interval.bytes": "every batch is indexed in memory",
    "segment.index.bytes": "every batch is indexed in memory",
    "segment.jitter.ms": "use segment.ms",
    "preallocate": "segments are always preallocated",
    "file.delete.delay.ms": "segments are deleted at once",
    "message.downconversion.enable": "only record batch format v2 is served",
    "message.format.version": "only record batch format v2 is served",
    "follower.replication.throttled.replicas": "replication is not throttled",
    "leader.replication.throttled.replicas": "replication is not throttled",
    "remote.storage.enable": "tiered storage is not available; use retention.ms/retention.bytes",
    "local.retention.ms": "tiered storage is not available; use retention.ms",
    "local.retention.bytes": "tiered storage is not available; use retention.bytes",
}


def unknown_config_message(name: str) -> str:
    """Why ``name`` cannot be set: not supported by Chronik (with what to use instead), or unknown."""
    advice = UNSUPPORTED_TOPIC_CONFIGS.get(name)
    if advice is not None:
        return f"topic config {name!r} is not supported by Chronik: {advice}"
    return f"unknown topic config {name!r}"


def validate_topic_config(name: str, value: str | None) -> str | None:
    """Normalised value, or raise InvalidConfig (unknown key or bad value)."""
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise InvalidConfig(unknown_config_message(name))
    if value is None:
        raise InvalidConfig(f"config {name!r} needs a value")
    return definition.check(value)
