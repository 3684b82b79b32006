"""SASL SCRAM-SHA-256/512 (RFC 5802, RFC 7677) and PLAIN (RFC 4616), server side, sans-I/O.

A :class:`ScramServerExchange` is fed the client's messages (the bytes of each
SaslAuthenticate request) and returns the server's answers; it never touches
a socket or the metadata log.  It looks the user's credential up through a
function it is given, once, on the client-first message.

The exchange (RFC 5802 section 3, as Kafka's ScramSaslServer runs it)::

    client-first   n,,n=<user>,r=<client nonce>[,<extensions>]
    server-first   r=<client nonce><server nonce>,s=<salt b64>,i=<iterations>
    client-final   c=<gs2 header b64>,r=<nonce>,p=<proof b64>
    server-final   v=<server signature b64>

Checked: the GS2 header (no channel binding: ``n``; an authzid, if given,
must equal the user), the user name's ``=2C`` / ``=3D`` escapes, the echoed
channel binding and nonce, and the proof.  Any failure raises
:class:`AuthenticationFailed`; the caller answers SASL_AUTHENTICATION_FAILED
and closes the connection after a delay.  An unknown user fails at the first
message, as in Kafka.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Callable

from ..metadata.credentials import SCRAM_MECHANISMS, ScramCredential, ScramMechanism

NONCE_BYTES = 24


class AuthenticationFailed(Exception):
    """A login failed; the message is safe to send to the client (it names no secret)."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The result of a finished exchange."""

    user: str
    final_message: bytes
    """The last server message to send (empty for PLAIN)."""


def salted_password(mechanism: ScramMechanism, password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(mechanism.hash_name, password, salt, iterations)


def _hmac(mechanism: ScramMechanism, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, mechanism.hash_name).digest()


def _hash(mechanism: ScramMechanism, data: bytes) -> bytes:
    return hashlib.new(mechanism.hash_name, data).digest()


def make_credential(mechanism: ScramMechanism, password: str, iterations: int | None = None,
                    salt: bytes | None = None) -> ScramCredential:
    """A credential for ``password`` (random 32-byte salt unless given)."""
    iterations = iterations or mechanism.min_iterations
    if not mechanism.min_iterations <= iterations <= mechanism.max_iterations:
        raise ValueError(f"{mechanism.name} iterations must be between {mechanism.min_iterations} "
                         f"and {mechanism.max_iterations}, not {iterations}")
    salt = salt if salt is not None else os.urandom(32)
    return credential_from_salted_password(mechanism, salted_password(mechanism, password.encode(), salt, iterations),
                                           salt, iterations)


def credential_from_salted_password(mechanism: ScramMechanism, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    """The stored credential for a client-computed SaltedPassword (AlterUserScramCredentials sends that, never the password)."""
    client_key = _hmac(mechanism, salted, b"Client Key")
    return ScramCredential(salt, _hash(mechanism, client_key), _hmac(mechanism, salted, b"Server Key"), iterations)


def password_matches(mechanism: ScramMechanism, credential: ScramCredential, password: str) -> bool:
    """Whether ``password`` is the one ``credential`` was made from (used by PLAIN)."""
    salted = salted_password(mechanism, password.encode(), credential.salt, credential.iterations)
    stored = _hash(mechanism, _hmac(mechanism, salted, b"Client Key"))
    return hmac.compare_digest(stored, credential.stored_key)


def _unescape_user(name: str) -> str:
    """RFC 5802 saslname: ',' is sent as '=2C' and '=' as '=3D'; any other '=' is an error."""
    out, i = [], 0
    while i < len(name):
        if name[i] == "=":
            code = name[i:i + 3]
            if code == "=2C":
                out.append(",")
            elif code == "=3D":
                out.append("=")
            else:
                raise AuthenticationFailed("Invalid user name encoding in the SCRAM client-first message")
            i += 3
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _attributes(message: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise AuthenticationFailed(f"Malformed SCRAM {what} message")
        pairs.append((key, value))
    return pairs


CredentialLookup = Callable[[str, str], ScramCredential | None]
"""(user, mechanism name) -> the stored credential, or None."""


class ScramServerExchange:
    """One SCRAM login, two round trips (see the module docstring)."""

    def __init__(self, mechanism_name: str, lookup: CredentialLookup, server_nonce: str | None = None) -> None:
        """``server_nonce`` is for test vectors; by default it is random."""
        self.mechanism = SCRAM_MECHANISMS[mechanism_name]
        self._lookup = lookup
        self._server_nonce = server_nonce or base64.b64encode(os.urandom(NONCE_BYTES)).decode().rstrip("=")
        self._state = "first"
        self._user = ""
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._nonce = ""

    @property
    def complete(self) -> bool:
        return self._state == "done"

    def receive(self, message: bytes) -> bytes | Authenticated:
        """Take the client's next message; return the server's reply, or
        :class:`Authenticated` after the final one.  Raises AuthenticationFailed."""
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationFailed("SCRAM messages must be UTF-8") from None
        if self._state == "first":
            return self._client_first(text)
        if self._state == "final":
            return self._client_final(text)
        raise AuthenticationFailed("The SCRAM exchange is already complete")

    def _fail(self, reason: str) -> AuthenticationFailed:
        self._state = "failed"
        return AuthenticationFailed(reason)

    def _client_first(self, text: str) -> bytes:
        self._state = "failed"  # until this message checks out
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not sep or not sep2 or flag not in ("n", "y"):
            raise self._fail("Invalid SCRAM client-first message (channel binding is not supported)")
        if authzid and not authzid.startswith("a="):
            raise self._fail("Invalid authorization id in the SCRAM client-first message")
        attributes = _attributes(bare, "client-first")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r" or not attributes[1][1]:
            raise self._fail("Invalid SCRAM client-first message")
        user = _unescape_user(attributes[0][1])
        if authzid and _unescape_user(authzid[2:]) != user:
            raise self._fail("Authentication failed: Client requested an authorization id that is different from username")
        credential = self._lookup(user, self.mechanism.name)
        if credential is None:
            raise self._fail(f"Authentication failed during authentication due to invalid credentials "
                             f"with SASL mechanism {self.mechanism.name}")
        self._user, self._credential = user, credential
        self._gs2_header = text[:len(flag) + 1 + len(authzid) + 1]
        self._client_first_bare = bare
        self._nonce = attributes[1][1] + self._server_nonce
        salt = base64.b64encode(credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={credential.iterations}"
        self._state = "final"
        return self._server_first.encode()

    def _client_final(self, text: str) -> Authenticated:
        self._state = "failed"
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise self._fail("Invalid SCRAM client-final message")
        attributes = _attributes(without_proof, "client-final")
        values = dict(attributes)
        if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
            raise self._fail("Invalid SCRAM client-final message")
        if values["c"] != base64.b64encode(self._gs2_header.encode()).decode():
            raise self._fail("Invalid channel binding in the SCRAM client-final message")
        # Kafka's ScramSaslServer accepts a nonce that *ends with* the one sent:
        # librdkafka before 2.2 prefixes its client nonce once more.  The proof
        # covers the message as sent, so this weakens nothing.
        if not values["r"].endswith(self._nonce):
            raise self._fail("Invalid nonce in the SCRAM client-final message")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except (binascii.Error, ValueError):
            raise self._fail("Invalid proof encoding in the SCRAM client-final message") from None
        credential, mechanism = self._credential, self.mechanism
        assert credential is not None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(mechanism, credential.stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise self._fail(f"Authentication failed during authentication due to invalid credentials "
                             f"with SASL mechanism {mechanism.name}")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
        if not hmac.compare_digest(_hash(mechanism, client_key), credential.stored_key):
            raise self._fail(f"Authentication failed during authentication due to invalid credentials "
                             f"with SASL mechanism {mechanism.name}")
        server_signature = _hmac(mechanism, credential.server_key, auth_message)
        self._state = "done"
        return Authenticated(self._user, b"v=" + base64.b64encode(server_signature))


class PlainServerExchange:
    """SASL PLAIN: one message ``authzid NUL user NUL password``, checked against the
    user's stored SCRAM credential (any mechanism it has)."""

    def __init__(self, lookup: CredentialLookup) -> None:
        self._lookup = lookup
        self.complete = False

    def receive(self, message: bytes) -> Authenticated:
        parts = message.split(b"\x00")
        if self.complete or len(parts) != 3:
            raise AuthenticationFailed("Invalid SASL/PLAIN message: expected authzid, user and password")
        try:
            authzid, user, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            raise AuthenticationFailed("SASL/PLAIN messages must be UTF-8") from None
        if not user or not password:
            raise AuthenticationFailed("Authentication failed: username or password not specified")
        if authzid and authzid != user:
            raise AuthenticationFailed("Authentication failed: Client requested an authorization id that is different from username")
        for mechanism in SCRAM_MECHANISMS.values():
            credential = self._lookup(user, mechanism.name)
            if credential is not None and password_matches(mechanism, credential, password):
                self.complete = True
                return Authenticated(user, b"")
        raise AuthenticationFailed("Authentication failed: Invalid username or password")
