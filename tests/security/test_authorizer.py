from __future__ import annotations

import pytest

from chronik.metadata import CommandRejected, MetadataImage
from chronik.metadata.acls import (
    AclBinding,
    AclBindingFilter,
    AclOperation as Op,
    AclPermissionType as Perm,
    PatternType as Pat,
    ResourceType as Res,
)
from chronik.metadata.commands import CreateAcls, DeleteAcls, DeleteScramCredential, UpsertScramCredential
from chronik.metadata.credentials import SCRAM_MECHANISMS
from chronik.security.authorizer import Authorizer, parse_super_users
from chronik.security.scram import make_credential

ALICE, BOB = "User:alice", "User:bob"


def acl(name: str, op: Op, perm: Perm = Perm.ALLOW, principal: str = ALICE, pattern: Pat = Pat.LITERAL,
        res: Res = Res.TOPIC, host: str = "*") -> AclBinding:
    return AclBinding(res, name, pattern, principal, host, op, perm)


def authorizer(*bindings: AclBinding, **kwargs) -> Authorizer:
    return Authorizer(lambda: bindings, **kwargs)


def test_allow_literal_and_nothing_else() -> None:
    auth = authorizer(acl("orders", Op.WRITE))
    assert auth.allowed(ALICE, "10.0.0.1", Op.WRITE, Res.TOPIC, "orders")
    assert not auth.allowed(ALICE, "10.0.0.1", Op.READ, Res.TOPIC, "orders")
    assert not auth.allowed(BOB, "10.0.0.1", Op.WRITE, Res.TOPIC, "orders")
    assert not auth.allowed(ALICE, "10.0.0.1", Op.WRITE, Res.GROUP, "orders")


def test_implied_describe_only_from_allow() -> None:
    auth = authorizer(acl("t", Op.READ), acl("c", Op.ALTER_CONFIGS))
    assert auth.allowed(ALICE, "h", Op.DESCRIBE, Res.TOPIC, "t")
    assert auth.allowed(ALICE, "h", Op.DESCRIBE_CONFIGS, Res.TOPIC, "c")
    assert not auth.allowed(ALICE, "h", Op.DESCRIBE_CONFIGS, Res.TOPIC, "t")
    # a DENY for READ does not deny DESCRIBE
    auth = authorizer(acl("t", Op.DESCRIBE), acl("t", Op.READ, Perm.DENY))
    assert auth.allowed(ALICE, "h", Op.DESCRIBE, Res.TOPIC, "t")
    assert not auth.allowed(ALICE, "h", Op.READ, Res.TOPIC, "t")


def test_deny_wins_over_a_prefixed_allow() -> None:
    auth = authorizer(acl("pay", Op.ALL, pattern=Pat.PREFIXED), acl("payments", Op.WRITE, Perm.DENY))
    assert auth.allowed(ALICE, "h", Op.WRITE, Res.TOPIC, "payroll")
    assert not auth.allowed(ALICE, "h", Op.WRITE, Res.TOPIC, "payments")
    assert auth.allowed(ALICE, "h", Op.READ, Res.TOPIC, "payments")
    assert "denied by ACL" in auth.authorize(ALICE, "h", Op.WRITE, Res.TOPIC, "payments").reason


def test_wildcards_for_resource_principal_and_host() -> None:
    auth = authorizer(acl("*", Op.READ, principal="User:*"), acl("t", Op.WRITE, host="10.0.0.1"))
    assert auth.allowed(BOB, "h", Op.READ, Res.TOPIC, "anything")
    assert auth.allowed(ALICE, "10.0.0.1", Op.WRITE, Res.TOPIC, "t")
    assert not auth.allowed(ALICE, "10.0.0.2", Op.WRITE, Res.TOPIC, "t")


def test_all_denies_everything_for_that_principal() -> None:
    auth = authorizer(acl("t", Op.ALL, Perm.DENY), acl("t", Op.ALL, principal="User:*"))
    assert not auth.allowed(ALICE, "h", Op.DESCRIBE, Res.TOPIC, "t")
    assert auth.allowed(BOB, "h", Op.DESCRIBE, Res.TOPIC, "t")


def test_no_acl_rule_applies_only_when_no_binding_covers_the_resource() -> None:
    bindings = (acl("t", Op.READ, principal=BOB),)
    assert not authorizer(*bindings).allowed(ALICE, "h", Op.READ, Res.TOPIC, "other")
    assert authorizer(*bindings, allow_if_no_acl=True).allowed(ALICE, "h", Op.READ, Res.TOPIC, "other")
    # some binding covers "t", so allow.everyone.if.no.acl.found does not help alice
    assert not authorizer(*bindings, allow_if_no_acl=True).allowed(ALICE, "h", Op.READ, Res.TOPIC, "t")


def test_super_users_bypass_acls() -> None:
    supers = parse_super_users("User:admin; User:ops;")
    assert supers == {"User:admin", "User:ops"}
    auth = authorizer(acl("t", Op.ALL, Perm.DENY, principal="User:*"), super_users=supers)
    assert auth.allowed("User:admin", "h", Op.WRITE, Res.TOPIC, "t")
    assert not auth.allowed(ALICE, "h", Op.WRITE, Res.TOPIC, "t")


def test_the_index_follows_the_image() -> None:
    image = MetadataImage()
    auth = Authorizer(lambda: image.security.acls)
    assert not auth.allowed(ALICE, "h", Op.READ, Res.GROUP, "g")
    image.apply(0, CreateAcls([acl("g", Op.READ, res=Res.GROUP).to_list()]))
    assert auth.allowed(ALICE, "h", Op.READ, Res.GROUP, "g")
    image.apply(1, DeleteAcls([AclBindingFilter(Res.GROUP).to_list()]))
    assert not auth.allowed(ALICE, "h", Op.READ, Res.GROUP, "g")


def test_create_acls_validates_and_deduplicates() -> None:
    image = MetadataImage()
    good = acl("t", Op.READ)
    results = image.apply(0, CreateAcls([good.to_list(), good.to_list(),
                                         acl("t", Op.ANY).to_list(),
                                         acl("t", Op.READ, pattern=Pat.MATCH).to_list(),
                                         acl("t", Op.READ, principal="alice").to_list(),
                                         acl("x", Op.ALTER, res=Res.CLUSTER).to_list(),
                                         acl("*", Op.READ, pattern=Pat.PREFIXED).to_list()]))
    assert results[:2] == [None, None]
    assert all(r is not None and r[0] == "INVALID_REQUEST" for r in results[2:])
    assert image.security.acls == (good,)


FILTER_CASES = [
    (AclBindingFilter(), {"lit", "pre", "star"}),
    (AclBindingFilter(Res.TOPIC, "payments", Pat.MATCH), {"pre", "star", "lit"}),
    (AclBindingFilter(Res.TOPIC, "pay", Pat.MATCH), {"pre", "star"}),
    (AclBindingFilter(Res.TOPIC, "pay", Pat.ANY), {"pre"}),
    (AclBindingFilter(Res.TOPIC, "payments", Pat.LITERAL), {"lit"}),
    (AclBindingFilter(Res.TOPIC, None, Pat.PREFIXED), {"pre"}),
    (AclBindingFilter(principal=BOB), {"star"}),
    (AclBindingFilter(operation=Op.WRITE), {"lit"}),
    (AclBindingFilter(permission=Perm.DENY), {"pre"}),
    (AclBindingFilter(Res.GROUP), set()),
]


@pytest.mark.parametrize("flt,expected", FILTER_CASES)
def test_filters_match_as_in_kafka(flt: AclBindingFilter, expected: set[str]) -> None:
    named = {
        "lit": acl("payments", Op.WRITE),
        "pre": acl("pay", Op.READ, Perm.DENY, pattern=Pat.PREFIXED),
        "star": acl("*", Op.READ, principal=BOB),
    }
    assert {name for name, b in named.items() if flt.matches(b)} == expected


def test_delete_acls_reports_what_each_filter_deleted_and_snapshots_keep_the_rest() -> None:
    image = MetadataImage()
    a, b = acl("a", Op.READ), acl("b", Op.WRITE, principal=BOB)
    image.apply(0, CreateAcls([a.to_list(), b.to_list()]))
    deleted = image.apply(1, DeleteAcls([AclBindingFilter(principal=BOB).to_list(),
                                         AclBindingFilter(Res.GROUP).to_list()]))
    assert deleted == [[b.to_list()], []]
    restored = MetadataImage.from_snapshot(image.to_snapshot())
    assert restored.security.acls == (a,)


def test_scram_credentials_in_the_image() -> None:
    image = MetadataImage()
    credential = make_credential(SCRAM_MECHANISMS["SCRAM-SHA-256"], "pw")
    image.apply(0, UpsertScramCredential("alice", "SCRAM-SHA-256", credential.to_json()))
    assert image.security.credential("alice", "SCRAM-SHA-256") == credential
    restored = MetadataImage.from_snapshot(image.to_snapshot())
    assert restored.security.credential("alice", "SCRAM-SHA-256") == credential
    with pytest.raises(CommandRejected) as rejected:
        image.apply(1, UpsertScramCredential("alice", "SCRAM-SHA-1", credential.to_json()))
    assert rejected.value.error == "UNSUPPORTED_SASL_MECHANISM"
    weak = dict(credential.to_json(), iterations=10)
    with pytest.raises(CommandRejected):
        image.apply(2, UpsertScramCredential("alice", "SCRAM-SHA-256", weak))
    image.apply(3, DeleteScramCredential("alice", "SCRAM-SHA-256"))
    assert image.security.credential("alice", "SCRAM-SHA-256") is None
    with pytest.raises(CommandRejected) as rejected:
        image.apply(4, DeleteScramCredential("alice", "SCRAM-SHA-256"))
    assert rejected.value.error == "RESOURCE_NOT_FOUND"


def test_authorize_any_is_kafkas_authorize_by_resource_type() -> None:
    # an ALLOW WRITE on some topic pattern is enough...
    assert authorizer(acl("orders", Op.WRITE)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert authorizer(acl("app-", Op.ALL, pattern=Pat.PREFIXED)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    # ...unless a DENY covers it: the same literal, a shorter prefix, or the literal wildcard
    assert not authorizer(acl("orders", Op.WRITE), acl("orders", Op.WRITE, Perm.DENY)).authorize_any(
        ALICE, "h", Op.WRITE, Res.TOPIC)
    assert not authorizer(acl("app-x", Op.WRITE, pattern=Pat.PREFIXED),
                          acl("app-", Op.WRITE, Perm.DENY, pattern=Pat.PREFIXED)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert not authorizer(acl("orders", Op.WRITE), acl("*", Op.ALL, Perm.DENY)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    # a DENY on another name leaves the ALLOW standing
    assert authorizer(acl("orders", Op.WRITE), acl("other", Op.WRITE, Perm.DENY)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    # other principals, operations, resource types and hosts do not count
    assert not authorizer(acl("orders", Op.WRITE, principal=BOB)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert not authorizer(acl("orders", Op.READ)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert not authorizer(acl("orders", Op.WRITE, res=Res.GROUP)).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert not authorizer(acl("orders", Op.WRITE, host="10.0.0.9")).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert authorizer(acl("orders", Op.WRITE, principal="User:*")).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert authorizer(super_users={ALICE}).authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
    assert not authorizer().authorize_any(ALICE, "h", Op.WRITE, Res.TOPIC)
