"""SaslSession (sans-I/O): the exchange of one connection, its session lifetime and re-authentication (KIP-368)."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():  # kafka-python warns at import time (see tests/integration/clients.py)
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.net.sasl.scram import ScramClient

from chronik.metadata.credentials import SCRAM_MECHANISMS
from chronik.security.scram import AuthenticationFailed, make_credential
from chronik.server.security import MIN_REAUTHENTICATION_INTERVAL, SaslSession

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TABLE = {(user, m): make_credential(SCRAM_MECHANISMS[m], f"{user}-pw", 4096)
         for user in ("alice", "bob") for m in ("SCRAM-SHA-256", "SCRAM-SHA-512")}


def session(max_reauth_ms: int = 0) -> SaslSession:
    return SaslSession(MECHANISMS, lambda user, mechanism: TABLE.get((user, mechanism)), max_reauth_ms)


def plain_login(s: SaslSession, now: float, user: str = "alice", password: str | None = None) -> None:
    assert s.handshake("PLAIN", 1)
    s.token(f"\0{user}\0{password or user + '-pw'}".encode(), now)


def scram_login(s: SaslSession, mechanism: str, now: float, user: str = "alice") -> None:
    client = ScramClient(user, f"{user}-pw", mechanism)
    assert s.handshake(mechanism, 1)
    client.process_server_first_message(s.token(client.first_message(), now))
    assert not s.authenticated  # not before the last token
    client.process_server_final_message(s.token(client.final_message(), now))


def test_without_a_lifetime_a_session_never_ends() -> None:
    s = session()
    plain_login(s, now=10.0)
    assert s.authenticated and s.principal == "User:alice"
    assert s.lifetime_ms == 0 and s.expires is None and not s.expired(1e12)
    assert not s.begin_reauthentication(20.0)  # a SaslHandshake now is an ordinary request (ILLEGAL_SASL_STATE)


@pytest.mark.parametrize("mechanism", sorted(SCRAM_MECHANISMS))
def test_a_lifetime_is_given_and_renewed_by_re_authenticating(mechanism: str) -> None:
    s = session(max_reauth_ms=2000)
    scram_login(s, mechanism, now=100.0)
    assert s.lifetime_ms == 2000 and s.expires == 102.0
    assert not s.expired(102.0) and s.expired(102.001)
    assert s.begin_reauthentication(101.8)
    assert s.reauthenticating and not s.authenticated and s.principal == "User:alice"
    scram_login(s, mechanism, now=101.9)
    assert s.authenticated and not s.reauthenticating and s.expires == pytest.approx(103.9)
    assert s.principal == "User:alice"


def test_a_session_may_be_renewed_after_it_expired_as_kafka_allows() -> None:
    s = session(max_reauth_ms=1000)
    plain_login(s, now=0.0)
    assert s.expired(5.0) and s.begin_reauthentication(5.0)
    plain_login(s, now=5.0)
    assert not s.expired(5.5)


def test_at_most_one_re_authentication_per_interval() -> None:
    s = session(max_reauth_ms=60_000)
    plain_login(s, now=0.0)
    assert s.begin_reauthentication(1.0)
    plain_login(s, now=1.0)
    assert not s.begin_reauthentication(1.0 + MIN_REAUTHENTICATION_INTERVAL / 2)
    assert s.authenticated  # the handshake is then answered as any request would be
    assert s.begin_reauthentication(1.0 + MIN_REAUTHENTICATION_INTERVAL)


def test_re_authentication_keeps_the_mechanism() -> None:
    s = session(max_reauth_ms=2000)
    scram_login(s, "SCRAM-SHA-256", now=0.0)
    assert s.begin_reauthentication(1.5)
    assert s.handshake("SCRAM-SHA-512", 1)  # accepted, as Kafka does, and refused at the first token
    with pytest.raises(AuthenticationFailed, match="not supported for re-authentication of mechanism 'SCRAM-SHA-256'"):
        s.token(ScramClient("alice", "alice-pw", "SCRAM-SHA-512").first_message(), 1.5)
    assert s.state == "failed" and not s.authenticated


def test_re_authentication_keeps_the_principal() -> None:
    s = session(max_reauth_ms=2000)
    plain_login(s, now=0.0)
    assert s.begin_reauthentication(1.5)
    with pytest.raises(AuthenticationFailed, match="Cannot change principals during re-authentication from "
                                                   "User:alice: User:bob"):
        plain_login(s, now=1.5, user="bob")
    assert s.state == "failed" and not s.authenticated


def test_a_wrong_password_fails_a_re_authentication() -> None:
    s = session(max_reauth_ms=2000)
    plain_login(s, now=0.0)
    assert s.begin_reauthentication(1.5)
    with pytest.raises(AuthenticationFailed):
        plain_login(s, now=1.5, password="wrong")
    assert s.state == "failed"


def test_re_authentication_after_a_v0_handshake_expects_a_kafka_handshake_again() -> None:
    """A client that authenticated with raw tokens (SaslHandshake v0) re-authenticates with a SaslHandshake
    request first: the raw-token mode of the previous exchange does not carry over."""
    s = session(max_reauth_ms=2000)
    assert s.handshake("PLAIN", 0) and s.raw
    s.token(b"\0alice\0alice-pw", 0.0)
    assert s.authenticated
    assert s.begin_reauthentication(1.5)
    assert not s.raw
