"""ACL authorization with the semantics of Kafka's StandardAuthorizer.

:meth:`Authorizer.authorize` answers one question: may ``principal``,
connected from ``host``, perform ``operation`` on the concrete resource
``(resource_type, name)``?  The rules, in order:

1. A super user (``super.users``, e.g. ``User:admin;User:ops``) may do anything.
2. The bindings that apply are those whose resource pattern covers the
   resource (LITERAL: the same name or ``*``; PREFIXED: a prefix of the name),
   whose principal is the caller's or ``User:*``, and whose host is the
   caller's address or ``*``.
3. A DENY binding for the operation (or ALL) wins over everything.
4. Otherwise an ALLOW binding for the operation (or ALL) allows.  ALLOW
   bindings also *imply*: READ, WRITE, DELETE and ALTER imply DESCRIBE, and
   ALTER_CONFIGS implies DESCRIBE_CONFIGS.  DENY bindings imply nothing (a
   DENY on READ does not deny DESCRIBE).
5. Otherwise, if no binding at all names a pattern covering the resource
   (whatever its principal, host or operation), ``allow.everyone.if.no.acl.found``
   decides; if some binding covers it, the answer is no.

The bindings are read from a snapshot given by a callable (the metadata
image's current ACL list), indexed once per distinct list, so a change made
through the metadata log applies to the next request without any
notification.  Pure computation: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from ..config.settings import AUTHORIZER_CLASS_NAMES as _CLASS_NAMES
from ..config.settings import BrokerConfig
from ..metadata.acls import AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType, WILDCARD_HOST, \
    WILDCARD_PRINCIPAL, WILDCARD_RESOURCE

_IMPLIES_DESCRIBE = frozenset({AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE,
                               AclOperation.ALTER})
_IMPLIES_DESCRIBE_CONFIGS = frozenset({AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS})

AUTHORIZER_CLASS_NAMES = frozenset(_CLASS_NAMES)
"""``authorizer.class.name`` values that turn ACL enforcement on (the setting's choices)."""


def parse_super_users(text: str) -> frozenset[str]:
    """``super.users``: principals separated by ';' (Kafka's separator)."""
    return frozenset(p.strip() for p in text.split(";") if p.strip())


def _operation_granted(binding: AclBinding, operation: int) -> bool:
    """Whether ``binding`` speaks for ``operation`` (rules 3 and 4 of the module docstring)."""
    if binding.operation == AclOperation.ALL or binding.operation == operation:
        return True
    if binding.permission != AclPermissionType.ALLOW:
        return False
    if operation == AclOperation.DESCRIBE:
        return binding.operation in _IMPLIES_DESCRIBE
    if operation == AclOperation.DESCRIBE_CONFIGS:
        return binding.operation in _IMPLIES_DESCRIBE_CONFIGS
    return False


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    """For the denial log line: which rule decided."""


class _Index:
    """The bindings of one ACL list by resource type: literal names, and prefixed ones."""

    def __init__(self, bindings: Iterable[AclBinding]) -> None:
        self.literal: dict[tuple[int, str], list[AclBinding]] = {}
        self.prefixed: dict[int, list[AclBinding]] = {}
        for binding in bindings:
            if binding.pattern_type == PatternType.LITERAL:
                self.literal.setdefault((binding.resource_type, binding.resource_name), []).append(binding)
            else:
                self.prefixed.setdefault(binding.resource_type, []).append(binding)

    def covering(self, resource_type: int, name: str) -> list[AclBinding]:
        found = list(self.literal.get((resource_type, name), ()))
        if name != WILDCARD_RESOURCE:
            found += self.literal.get((resource_type, WILDCARD_RESOURCE), ())
        found += (b for b in self.prefixed.get(resource_type, ()) if name.startswith(b.resource_name))
        return found


class Authorizer:
    """See the module docstring.  ``bindings`` returns the current ACL list; the
    index is rebuilt only when that returns a different object."""

    def __init__(self, bindings: Callable[[], Collection[AclBinding]], *, super_users: Iterable[str] = (),
                 allow_if_no_acl: bool = False) -> None:
        self._bindings = bindings
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self._indexed: tuple[object, _Index] | None = None

    def _index(self) -> _Index:
        current = self._bindings()
        if self._indexed is None or self._indexed[0] is not current:
            self._indexed = (current, _Index(current))
        return self._indexed[1]

    def authorize(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> Decision:
        if principal in self.super_users:
            return Decision(True, "super user")
        covering = self._index().covering(resource_type, name)
        allowed_by: AclBinding | None = None
        for binding in covering:
            if binding.principal != principal and binding.principal != WILDCARD_PRINCIPAL:
                continue
            if binding.host != host and binding.host != WILDCARD_HOST:
                continue
            if not _operation_granted(binding, operation):
                continue
            if binding.permission == AclPermissionType.DENY:
                return Decision(False, f"denied by ACL {_describe(binding)}")
            allowed_by = allowed_by or binding
        if allowed_by is not None:
            return Decision(True, f"allowed by ACL {_describe(allowed_by)}")
        if not covering:
            return Decision(self.allow_if_no_acl, "no ACL for the resource; allow.everyone.if.no.acl.found="
                            + ("true" if self.allow_if_no_acl else "false"))
        return Decision(False, "no ACL allows it")

    def authorize_any(self, principal: str, host: str, operation: int, resource_type: int) -> bool:
        """Whether ``principal`` may perform ``operation`` on *some* resource of the type
        (Kafka's ``authorizeByResourceType``, e.g. InitProducerId's WRITE on any topic):
        a super user may; otherwise an ALLOW binding for the operation (or ALL) must
        apply to the caller and not be covered by a DENY that applies to it (a
        LITERAL ``*`` DENY covers everything, a PREFIXED DENY the patterns starting
        with its prefix, a LITERAL one the same literal name)."""
        if principal in self.super_users:
            return True

        def applies(b: AclBinding) -> bool:
            return (b.resource_type == resource_type and b.principal in (principal, WILDCARD_PRINCIPAL)
                    and b.host in (host, WILDCARD_HOST) and b.operation in (operation, AclOperation.ALL))

        current = self._bindings()
        denies = [b for b in current if b.permission == AclPermissionType.DENY and applies(b)]

        def denied(allow: AclBinding) -> bool:
            for d in denies:
                if d.pattern_type == PatternType.LITERAL and d.resource_name == WILDCARD_RESOURCE:
                    return True
                if d.pattern_type == PatternType.PREFIXED and allow.resource_name.startswith(d.resource_name):
                    return True
                if (d.pattern_type, d.resource_name) == (allow.pattern_type, allow.resource_name):
                    return True
            return False

        return any(b.permission == AclPermissionType.ALLOW and applies(b) and not denied(b) for b in current)

    def allowed(self, principal: str, host: str, operation: int, resource_type: int, name: str) -> bool:
        return self.authorize(principal, host, operation, resource_type, name).allowed


def _describe(binding: AclBinding) -> str:
    return (f"({binding.principal} {AclPermissionType(binding.permission).name} "
            f"{AclOperation(binding.operation).name} on {ResourceType(binding.resource_type).name} "
            f"{PatternType(binding.pattern_type).name} {binding.resource_name!r} from {binding.host})")


def authorizer_for(config: BrokerConfig, bindings: Callable[[], Collection[AclBinding]]) -> Authorizer | None:
    """The authorizer ``config`` asks for (``authorizer.class.name``, ``super.users``,
    ``allow.everyone.if.no.acl.found``) over the ACL list ``bindings`` gives; None: allow all."""
    if not config.authorizer_class_name:
        return None
    return Authorizer(bindings, super_users=parse_super_users(config.super_users or ""),
                      allow_if_no_acl=config.allow_everyone_if_no_acl_found)
