"""RequestContext.authorized: the one check every handler makes, and its rate-limited denial log."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from chronik.handlers.registry import RequestContext, _DenialLog
from chronik.metadata.acls import AclBinding, AclOperation as Op, AclPermissionType as Perm, PatternType as Pat, \
    ResourceType as Res
from chronik.protocol import RequestHeader
from chronik.security.authorizer import Authorizer


def context(authorizer: Authorizer | None, principal: str = "User:ANONYMOUS") -> RequestContext:
    header = RequestHeader(0, 9, 1, "client", 2, 0)
    return RequestContext(SimpleNamespace(authorizer=authorizer), header, "10.0.0.1", principal)  # type: ignore[arg-type]


def test_without_an_authorizer_everything_is_allowed() -> None:
    ctx = context(None)
    assert ctx.authorized(Op.WRITE, Res.TOPIC, "t")
    assert ctx.authorized_any(Op.WRITE, Res.TOPIC)
    assert ctx.may_create_topic("t")


def test_denials_are_logged_once_per_resource(caplog: pytest.LogCaptureFixture) -> None:
    ctx = context(Authorizer(lambda: (AclBinding(Res.TOPIC, "ok", Pat.LITERAL, "User:ANONYMOUS", "*", Op.WRITE,
                                                 Perm.ALLOW),)))
    with caplog.at_level(logging.INFO, logger="chronik.handlers"):
        assert ctx.authorized(Op.WRITE, Res.TOPIC, "ok")
        for _ in range(5):
            assert not ctx.authorized(Op.WRITE, Res.TOPIC, "denied-1")
        assert not ctx.authorized(Op.READ, Res.TOPIC, "denied-2", log_denial=False)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "User:ANONYMOUS from 10.0.0.1 may not WRITE TOPIC 'denied-1'" in lines[0]


def test_the_denial_log_is_capped_per_second() -> None:
    limit = _DenialLog(per_second=3)
    allowed = [limit.allow(("p", n)) for n in range(100)]
    assert 3 <= sum(allowed) <= 6  # at most 3 a second (the loop may straddle one second boundary)
    repeat = _DenialLog(per_second=100)  # a repeated key waits a minute
    assert repeat.allow("k") and not repeat.allow("k")
