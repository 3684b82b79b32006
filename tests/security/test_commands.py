"""What each metadata command needs of the authorizer (:mod:`chronik.security.commands`),
checked where the metadata log is ordered (the cluster case: tests/cluster/test_forwarded_authorization.py)."""

from __future__ import annotations

import logging

import pytest

from chronik.metadata import CommandRejected, CreateTopic, RegisterBroker
from chronik.metadata.acls import (
    AclBinding,
    AclOperation as Op,
    AclPermissionType as Perm,
    PatternType as Pat,
    ResourceType as Res,
)
from chronik.metadata.commands import (
    AllocateProducerIds,
    AlterTopicConfigs,
    ChangeIsr,
    CommitOffsets,
    CreateAcls,
    CreatePartitions,
    DeleteAcls,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeaders,
    FenceBroker,
    UpsertScramCredential,
)
from chronik.metadata.view import Origin
from chronik.security.authorizer import Authorizer
from chronik.security.commands import Grant, command_check, requirement

ALICE = Origin("User:alice", "10.0.0.1")


def acl(name: str, op: Op, perm: Perm = Perm.ALLOW, res: Res = Res.TOPIC, pattern: Pat = Pat.LITERAL,
        host: str = "*") -> AclBinding:
    return AclBinding(res, name, pattern, ALICE.principal, host, op, perm)


def check(*bindings: AclBinding, super_users: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return command_check(Authorizer(lambda: bindings, super_users=super_users))


def refusal(checker, command, origin: Origin = ALICE) -> str | None:  # type: ignore[no-untyped-def]
    try:
        checker(command, origin)
    except CommandRejected as exc:
        return exc.error
    return None


CLUSTER = Grant(Op.ALTER, Res.CLUSTER)


@pytest.mark.parametrize("command,grants,error", [
    (CreateTopic("t", "00", [[1]]), (Grant(Op.CREATE, Res.CLUSTER), Grant(Op.CREATE, Res.TOPIC, "t")),
     "TOPIC_AUTHORIZATION_FAILED"),
    (DeleteTopic("t", "00"), (Grant(Op.DELETE, Res.TOPIC, "t"),), "TOPIC_AUTHORIZATION_FAILED"),
    (CreatePartitions("t", [[1]]), (Grant(Op.ALTER, Res.TOPIC, "t"),), "TOPIC_AUTHORIZATION_FAILED"),
    (AlterTopicConfigs("t", {"retention.ms": "1"}), (Grant(Op.ALTER_CONFIGS, Res.TOPIC, "t"),),
     "TOPIC_AUTHORIZATION_FAILED"),
    (CreateAcls([]), (CLUSTER,), "CLUSTER_AUTHORIZATION_FAILED"),
    (DeleteAcls([]), (CLUSTER,), "CLUSTER_AUTHORIZATION_FAILED"),
    (UpsertScramCredential("u", "SCRAM-SHA-256", {}), (CLUSTER,), "CLUSTER_AUTHORIZATION_FAILED"),
    (DeleteScramCredential("u", "SCRAM-SHA-256"), (CLUSTER,), "CLUSTER_AUTHORIZATION_FAILED"),
    (ElectLeaders(0), (CLUSTER,), "CLUSTER_AUTHORIZATION_FAILED"),
    (RegisterBroker(1, "h", 1), (Grant(Op.CLUSTER_ACTION, Res.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED"),
    (FenceBroker(1), (Grant(Op.CLUSTER_ACTION, Res.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED"),
    (ChangeIsr("t", "00", 0, 1, 0, [1]), (Grant(Op.CLUSTER_ACTION, Res.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED"),
    (AllocateProducerIds(10), (Grant(Op.CLUSTER_ACTION, Res.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED"),
    (CommitOffsets("g", []), (Grant(Op.CLUSTER_ACTION, Res.CLUSTER),), "CLUSTER_AUTHORIZATION_FAILED"),
], ids=lambda v: type(v).__name__ if not isinstance(v, (tuple, str)) else None)
def test_each_command_needs_what_its_api_needs(command, grants, error) -> None:  # type: ignore[no-untyped-def]
    needed = requirement(command)
    assert (needed.grants, needed.error) == (grants, error)
    # and the check asks exactly that: each grant alone allows, nothing else does
    assert refusal(check(), command) == error
    for grant in grants:
        assert refusal(check(acl(grant.name, grant.operation, res=grant.resource_type)), command) is None
    assert refusal(check(acl("other", Op.ALL)), command) == error
    assert refusal(check(super_users=(ALICE.principal,)), command) is None


def test_deny_wins_and_hosts_match() -> None:
    create = CreateTopic("orders", "00", [[1]])
    assert refusal(check(acl("orders", Op.CREATE), acl("ord", Op.CREATE, Perm.DENY, pattern=Pat.PREFIXED)),
                   create) == "TOPIC_AUTHORIZATION_FAILED"
    only_there = check(acl("orders", Op.CREATE, host="10.0.0.1"))
    assert refusal(only_there, create, ALICE) is None
    assert refusal(only_there, create, Origin(ALICE.principal, "10.0.0.2")) == "TOPIC_AUTHORIZATION_FAILED"


def test_a_refusal_says_who_may_not_do_what_and_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chronik.security.commands")
    checker = check()
    for _ in range(3):
        with pytest.raises(CommandRejected) as refused:
            checker(DeleteTopic("orders", "00"), ALICE)
    assert refused.value.message == "User:alice may not DELETE topic 'orders'"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "controller refused delete_topic: principal User:alice from 10.0.0.1 may not DELETE topic 'orders'" in lines[0]
    with pytest.raises(CommandRejected) as cluster:
        checker(CreateAcls([]), ALICE)
    assert cluster.value.message == "User:alice may not ALTER the cluster"
