"""Access control lists as Kafka defines them: bindings, filters and their matching rules.

An ACL *binding* is a resource pattern (resource type, name, pattern type)
plus an access control entry (principal, host, operation, permission).  The
numeric codes are Kafka's wire codes (``ResourceType``, ``PatternType``,
``AclOperation``, ``AclPermissionType`` in Kafka's ``org.apache.kafka.common``),
so a binding goes from a CreateAcls request to the metadata log and back to a
DescribeAcls response without translation.

Invariants:

* A stored binding is *concrete*: its resource type is TOPIC, GROUP, CLUSTER,
  TRANSACTIONAL_ID, DELEGATION_TOKEN or USER; its pattern type LITERAL or
  PREFIXED; its operation neither ANY nor UNKNOWN; its permission ALLOW or
  DENY; its principal ``Type:name``; its host ``*`` or an address.  Only
  :func:`binding_problem`-free bindings reach the metadata log.
* Filters (DescribeAcls, DeleteAcls) may use ANY (and MATCH for the pattern
  type) and null names, principals and hosts; :meth:`AclBindingFilter.matches`
  implements Kafka's ``AclBindingFilter.matches`` rules.

Nothing here decides whether a request is authorized: that is
:mod:`chronik.security.authorizer`, which reads these bindings from the image.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

WILDCARD_RESOURCE = "*"
"""A LITERAL resource name matching every resource of its type."""
WILDCARD_PRINCIPAL = "User:*"
WILDCARD_HOST = "*"
CLUSTER_RESOURCE_NAME = "kafka-cluster"
"""The one CLUSTER resource's name, as Kafka spells it."""


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class AclPermissionType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


CONCRETE_RESOURCE_TYPES = frozenset(ResourceType) - {ResourceType.UNKNOWN, ResourceType.ANY}
CONCRETE_PATTERN_TYPES = frozenset({PatternType.LITERAL, PatternType.PREFIXED})
CONCRETE_OPERATIONS = frozenset(AclOperation) - {AclOperation.UNKNOWN, AclOperation.ANY}
CONCRETE_PERMISSIONS = frozenset({AclPermissionType.ALLOW, AclPermissionType.DENY})


class _ListForm:
    """The JSON form used in metadata commands and snapshots: the fields as a list, in order."""

    __slots__ = ()

    def to_list(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]  # type: ignore[arg-type]

    @classmethod
    def from_list(cls, values: list[Any]) -> Any:
        return cls(*values)


@dataclass(frozen=True, slots=True)
class AclBinding(_ListForm):
    """One stored ACL (see the module docstring for what a stored one may hold)."""

    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission: int

    def matches_resource(self, resource_type: int, name: str) -> bool:
        """Whether this binding's pattern covers the concrete resource ``(resource_type, name)``."""
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.resource_name == name or self.resource_name == WILDCARD_RESOURCE
        return name.startswith(self.resource_name)


@dataclass(frozen=True, slots=True)
class AclBindingFilter(_ListForm):
    """A DescribeAcls / DeleteAcls filter; None fields match anything."""

    resource_type: int = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: int = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: int = AclOperation.ANY
    permission: int = AclPermissionType.ANY

    def matches(self, binding: AclBinding) -> bool:
        """Kafka's filter rules: ANY matches every value of its field; MATCH matches
        the LITERAL bindings named like the filter or ``*`` and the PREFIXED bindings
        whose prefix starts the filter's name; anything else must be equal."""
        if self.resource_type != ResourceType.ANY and self.resource_type != binding.resource_type:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is not None and not binding.matches_resource(binding.resource_type, self.resource_name):
                return False
        else:
            if self.pattern_type != PatternType.ANY and self.pattern_type != binding.pattern_type:
                return False
            if self.resource_name is not None and self.resource_name != binding.resource_name:
                return False
        if self.principal is not None and self.principal != binding.principal:
            return False
        if self.host is not None and self.host != binding.host:
            return False
        if self.operation != AclOperation.ANY and self.operation != binding.operation:
            return False
        return self.permission == AclPermissionType.ANY or self.permission == binding.permission


def principal_problem(principal: str) -> str | None:
    """Why ``principal`` is not a ``Type:name`` principal (Kafka's KafkaPrincipal form), or None."""
    kind, sep, name = principal.partition(":")
    if not sep or not kind or not name:
        return f"principal {principal!r} is not of the form Type:name (e.g. User:alice)"
    return None


def binding_problem(binding: AclBinding) -> str | None:
    """Why ``binding`` may not be stored (Kafka answers INVALID_REQUEST), or None."""
    if binding.resource_type not in CONCRETE_RESOURCE_TYPES:
        return f"resource type {binding.resource_type} cannot be stored in an ACL"
    if binding.pattern_type not in CONCRETE_PATTERN_TYPES:
        return "an ACL's pattern type must be LITERAL or PREFIXED"
    if not binding.resource_name:
        return "an ACL's resource name must not be empty"
    if binding.pattern_type == PatternType.PREFIXED and binding.resource_name == WILDCARD_RESOURCE:
        return "a PREFIXED ACL cannot use the wildcard name '*'"
    if binding.resource_type == ResourceType.CLUSTER and binding.resource_name != CLUSTER_RESOURCE_NAME:
        return f"the cluster resource is named {CLUSTER_RESOURCE_NAME!r}"
    if binding.operation not in CONCRETE_OPERATIONS:
        return f"operation {binding.operation} cannot be stored in an ACL"
    if binding.permission not in CONCRETE_PERMISSIONS:
        return "an ACL's permission type must be ALLOW or DENY"
    if not binding.host:
        return "an ACL's host must not be empty ('*' matches every host)"
    return principal_problem(binding.principal)
