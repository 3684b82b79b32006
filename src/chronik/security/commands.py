"""What a metadata command needs of the authorizer, checked where the metadata log is ordered.

A client's metadata write (CreateTopics, CreateAcls, ...) is authorized
twice: by the handler on the node the client reached (which answers per
resource, with Kafka's error codes, before it builds a command), and by the
controller -- the node that orders the metadata log -- right before it takes
the command, against its own image (:func:`command_check` is the
:data:`~chronik.metadata.view.CommandCheck` the assembly gives the metadata
log).  The second check is Kafka's forwarding rule (KIP-590: the controller
authorizes an enveloped request with the original principal): it is what
stops a write that a follower allowed on an image not yet showing a change
to the ACLs.

:func:`requirement` maps each command to the grants that allow it, with the
error a refusal gives -- the same operation, resource and error code as the
handler of the API that builds the command:

* CreateTopic (CreateTopics, auto-creation): CREATE on the cluster or CREATE
  on the topic, else TOPIC_AUTHORIZATION_FAILED;
* DeleteTopic (DeleteTopics): DELETE on the topic, else TOPIC_AUTHORIZATION_FAILED;
* CreatePartitions: ALTER on the topic, else TOPIC_AUTHORIZATION_FAILED;
* AlterTopicConfigs (AlterConfigs, IncrementalAlterConfigs): ALTER_CONFIGS on
  the topic, else TOPIC_AUTHORIZATION_FAILED;
* CreateAcls, DeleteAcls, UpsertScramCredential and DeleteScramCredential
  (AlterUserScramCredentials), ElectLeaders: ALTER on the cluster, else
  CLUSTER_AUTHORIZATION_FAILED;
* anything else (the nodes' own writes): CLUSTER_ACTION on the cluster, else
  CLUSTER_AUTHORIZATION_FAILED.

The last rule is Kafka's rule for broker-to-controller requests; the nodes
submit those commands without an origin, so it only applies if one ever
comes with a client's principal.  A refusal is logged on the controller (INFO,
logger ``chronik.security.commands``), at most once a minute per principal,
host, operation and resource.  Pure computation: no I/O, no trio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..metadata.acls import CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from ..metadata.commands import (
    AlterTopicConfigs,
    Command,
    CreateAcls,
    CreatePartitions,
    CreateTopic,
    DeleteAcls,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeaders,
    UpsertScramCredential,
)
from ..metadata.image import CommandRejected
from ..metadata.view import CommandCheck, Origin
from ..ratelimit import LogLimiter
from .authorizer import Authorizer

log = logging.getLogger(__name__)

DENIAL_LOG_INTERVAL = 60.0
"""Seconds between two log lines about the same refused (principal, host, operation, resource)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission: ``operation`` on the resource ``(resource_type, name)``."""

    operation: AclOperation
    resource_type: ResourceType
    name: str = CLUSTER_RESOURCE_NAME

    def describe(self) -> str:
        what = "the cluster" if self.resource_type == ResourceType.CLUSTER else \
            f"{self.resource_type.name.lower()} {self.name!r}"
        return f"{self.operation.name} {what}"


@dataclass(frozen=True, slots=True)
class Requirement:
    """A command is allowed if the principal holds any one of ``grants``; else refused with ``error``."""

    grants: tuple[Grant, ...]
    error: str
    """A Kafka error name."""


_CLUSTER_ALTER = Requirement((Grant(AclOperation.ALTER, ResourceType.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED")
_CLUSTER_ACTION = Requirement((Grant(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED")


def _on_topic(operation: AclOperation, name: str) -> Requirement:
    return Requirement((Grant(operation, ResourceType.TOPIC, name),), "TOPIC_AUTHORIZATION_FAILED")


def requirement(command: Command) -> Requirement:
    """What ``command`` needs (the table in the module docstring)."""
    if isinstance(command, CreateTopic):
        return Requirement((Grant(AclOperation.CREATE, ResourceType.CLUSTER),
                            Grant(AclOperation.CREATE, ResourceType.TOPIC, command.name)), "TOPIC_AUTHORIZATION_FAILED")
    if isinstance(command, DeleteTopic):
        return _on_topic(AclOperation.DELETE, command.name)
    if isinstance(command, CreatePartitions):
        return _on_topic(AclOperation.ALTER, command.name)
    if isinstance(command, AlterTopicConfigs):
        return _on_topic(AclOperation.ALTER_CONFIGS, command.name)
    if isinstance(command, (CreateAcls, DeleteAcls, UpsertScramCredential, DeleteScramCredential, ElectLeaders)):
        return _CLUSTER_ALTER
    return _CLUSTER_ACTION


class _CommandAuthorization:
    """:func:`command_check`'s callable: one authorizer and its denial log."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        self._denials = LogLimiter(DENIAL_LOG_INTERVAL)

    def __call__(self, command: Command, origin: Origin) -> None:
        needed = requirement(command)
        reasons = []
        for grant in needed.grants:
            decision = self.authorizer.authorize(origin.principal, origin.host, grant.operation, grant.resource_type,
                                                 grant.name)
            if decision.allowed:
                return
            reasons.append(decision.reason)
        last = needed.grants[-1]  # the most specific grant, as the handlers name it
        self._denials.log(log, logging.INFO, (origin.principal, origin.host, last),
                          "controller refused %s: principal %s from %s may not %s (%s)", command.type_name,
                          origin.principal, origin.host, last.describe(), "; ".join(reasons))
        raise CommandRejected(needed.error, f"{origin.principal} may not {last.describe()}")


def command_check(authorizer: Authorizer) -> CommandCheck:
    """The metadata log's :data:`~chronik.metadata.view.CommandCheck` with ``authorizer``
    (which reads the ACLs of the checking node's own image)."""
    return _CommandAuthorization(authorizer)
