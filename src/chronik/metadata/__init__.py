"""Metadata as a log: commands, the image they build, the durable log, snapshots."""

from .commands import (
    AllocateProducerIds,
    AlterTopicConfigs,
    Command,
    ControlledShutdown,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    ElectLeaders,
    FenceBroker,
    RegisterBroker,
    UnfenceBroker,
    UnknownCommand,
    decode_command,
    encode_command,
)
from .image import BrokerImage, CommandRejected, MetadataImage, PartitionImage, TopicImage, topic_name_problem
from .log import METADATA_TOPIC, MetadataLog

__all__ = [
    "AllocateProducerIds",
    "AlterTopicConfigs",
    "BrokerImage",
    "Command",
    "CommandRejected",
    "ControlledShutdown",
    "CreatePartitions",
    "CreateTopic",
    "DeleteTopic",
    "ElectLeaders",
    "FenceBroker",
    "METADATA_TOPIC",
    "MetadataImage",
    "MetadataLog",
    "PartitionImage",
    "RegisterBroker",
    "TopicImage",
    "UnfenceBroker",
    "UnknownCommand",
    "decode_command",
    "encode_command",
    "topic_name_problem",
]
