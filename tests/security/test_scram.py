from __future__ import annotations

import base64
import warnings

import pytest

with warnings.catch_warnings():  # kafka-python warns at import time (see tests/integration/clients.py)
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.net.sasl.scram import ScramClient

from chronik.metadata.credentials import SCRAM_MECHANISMS, ScramCredential
from chronik.security.scram import (
    Authenticated,
    AuthenticationFailed,
    PlainServerExchange,
    ScramServerExchange,
    make_credential,
)

SHA256 = SCRAM_MECHANISMS["SCRAM-SHA-256"]


def lookup_for(table: dict[tuple[str, str], ScramCredential]):
    return lambda user, mechanism: table.get((user, mechanism))


def test_rfc7677_test_vector() -> None:
    """RFC 7677 section 3: user "user", password "pencil"."""
    credential = make_credential(SHA256, "pencil", 4096, base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    exchange = ScramServerExchange("SCRAM-SHA-256", lookup_for({("user", "SCRAM-SHA-256"): credential}),
                                   server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    server_first = exchange.receive(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert server_first == b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    done = exchange.receive(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                            b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert done == Authenticated("user", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert exchange.complete


@pytest.mark.parametrize("mechanism", sorted(SCRAM_MECHANISMS))
def test_a_real_client_logs_in_and_checks_the_server_signature(mechanism: str) -> None:
    table = {("alice", mechanism): make_credential(SCRAM_MECHANISMS[mechanism], "s3cret,=x")}
    client = ScramClient("alice", "s3cret,=x", mechanism)
    exchange = ScramServerExchange(mechanism, lookup_for(table))
    client.process_server_first_message(exchange.receive(client.first_message()))
    done = exchange.receive(client.final_message())
    assert isinstance(done, Authenticated) and done.user == "alice"
    client.process_server_final_message(done.final_message)  # raises on a wrong server signature


@pytest.mark.parametrize("mechanism", sorted(SCRAM_MECHANISMS))
def test_a_wrong_password_fails_at_the_final_message(mechanism: str) -> None:
    table = {("alice", mechanism): make_credential(SCRAM_MECHANISMS[mechanism], "right")}
    client = ScramClient("alice", "wrong", mechanism)
    exchange = ScramServerExchange(mechanism, lookup_for(table))
    client.process_server_first_message(exchange.receive(client.first_message()))
    with pytest.raises(AuthenticationFailed, match="invalid credentials"):
        exchange.receive(client.final_message())
    with pytest.raises(AuthenticationFailed):
        exchange.receive(client.final_message())  # a failed exchange stays failed
    assert not exchange.complete


def test_an_unknown_user_fails_at_once() -> None:
    exchange = ScramServerExchange("SCRAM-SHA-512", lookup_for({}))
    with pytest.raises(AuthenticationFailed, match="invalid credentials"):
        exchange.receive(b"n,,n=nobody,r=abc")


def test_the_mechanism_must_match_the_stored_credential() -> None:
    table = {("alice", "SCRAM-SHA-256"): make_credential(SHA256, "pw")}
    with pytest.raises(AuthenticationFailed):
        ScramServerExchange("SCRAM-SHA-512", lookup_for(table)).receive(b"n,,n=alice,r=abc")


@pytest.mark.parametrize("final", [
    b"c=biws,r=WRONGNONCE,p=AAAA",  # nonce not echoed
    b"c=eSws,r={nonce},p=AAAA",  # channel binding "y," instead of "n,,"
    b"c=biws,r={nonce}",  # no proof
    b"c=biws,r={nonce},p=!!notbase64",
    b"\xff\xfe",
])
def test_malformed_or_tampered_final_messages_fail(final: bytes) -> None:
    table = {("alice", "SCRAM-SHA-256"): make_credential(SHA256, "pw")}
    exchange = ScramServerExchange("SCRAM-SHA-256", lookup_for(table))
    first = exchange.receive(b"n,,n=alice,r=clientnonce")
    assert isinstance(first, bytes)
    nonce = first.split(b",")[0][2:]
    with pytest.raises(AuthenticationFailed):
        exchange.receive(final.replace(b"{nonce}", nonce))


@pytest.mark.parametrize("first", [b"", b"garbage", b"p=tls-unique,,n=alice,r=x", b"n,,n=al=2Xice,r=x",
                                   b"n,,r=x,n=alice", b"n,a=bob,n=alice,r=x", b"n,,n=alice,r="])
def test_malformed_first_messages_fail(first: bytes) -> None:
    table = {("alice", "SCRAM-SHA-256"): make_credential(SHA256, "pw")}
    with pytest.raises(AuthenticationFailed):
        ScramServerExchange("SCRAM-SHA-256", lookup_for(table)).receive(first)


def test_escaped_user_names_and_a_matching_authzid() -> None:
    table = {("a,b=c", "SCRAM-SHA-256"): make_credential(SHA256, "pw")}
    exchange = ScramServerExchange("SCRAM-SHA-256", lookup_for(table))
    assert isinstance(exchange.receive(b"n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=x"), bytes)


def test_iterations_are_bounded_as_in_kafka() -> None:
    with pytest.raises(ValueError, match="between 4096 and 16384"):
        make_credential(SHA256, "pw", iterations=1000)


def test_credentials_round_trip_through_json() -> None:
    credential = make_credential(SHA256, "pw")
    assert ScramCredential.from_json(credential.to_json()) == credential
    assert "pw" not in str(credential.to_json())


def test_plain_checks_the_password_against_the_scram_credential() -> None:
    table = {("alice", "SCRAM-SHA-512"): make_credential(SCRAM_MECHANISMS["SCRAM-SHA-512"], "pw")}
    assert PlainServerExchange(lookup_for(table)).receive(b"\x00alice\x00pw") == Authenticated("alice", b"")
    assert PlainServerExchange(lookup_for(table)).receive(b"alice\x00alice\x00pw").user == "alice"
    for bad in (b"\x00alice\x00nope", b"\x00bob\x00pw", b"bob\x00alice\x00pw", b"alice\x00pw", b"\x00\x00", b""):
        with pytest.raises(AuthenticationFailed):
            PlainServerExchange(lookup_for(table)).receive(bad)


def test_a_final_nonce_with_the_client_nonce_repeated_is_accepted_as_kafka_does() -> None:
    """librdkafka before 2.2 (Debian's kcat) sends r=<client nonce><server nonce>; Kafka checks endsWith."""
    from chronik.security.scram import salted_password, _hmac, _hash
    table = {("alice", "SCRAM-SHA-256"): make_credential(SHA256, "pw")}
    exchange = ScramServerExchange("SCRAM-SHA-256", lookup_for(table))
    first = exchange.receive(b"n,,n=alice,r=cn")
    assert isinstance(first, bytes)
    attrs = dict(part.split("=", 1) for part in first.decode().split(","))
    without_proof = f"c=biws,r=cn{attrs['r']}"
    salted = salted_password(SHA256, b"pw", base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = _hmac(SHA256, salted, b"Client Key")
    auth = f"n=alice,r=cn,{first.decode()},{without_proof}".encode()
    signature = _hmac(SHA256, _hash(SHA256, client_key), auth)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    result = exchange.receive(f"{without_proof},p={proof}".encode())
    assert isinstance(result, Authenticated) and result.user == "alice"
