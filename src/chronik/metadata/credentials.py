"""SCRAM credentials as the metadata log stores them (RFC 5802 / RFC 7677, Kafka's ScramCredential).

A credential is what a server needs to check a SCRAM (or PLAIN) login without
knowing the password: the salt, the iteration count, ``StoredKey = H(ClientKey)``
and ``ServerKey = HMAC(SaltedPassword, "Server Key")``.  The password itself is
never stored or logged.  In JSON (commands, snapshots) the three byte strings
are base64.

Mechanism codes are Kafka's ``ScramMechanism`` wire codes (AlterUserScramCredentials,
DescribeUserScramCredentials).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ScramMechanism:
    name: str
    code: int
    hash_name: str
    """hashlib / hmac digest name."""
    min_iterations: int = 4096
    max_iterations: int = 16384


SCRAM_MECHANISMS: dict[str, ScramMechanism] = {
    m.name: m for m in (
        ScramMechanism("SCRAM-SHA-256", 1, "sha256"),
        ScramMechanism("SCRAM-SHA-512", 2, "sha512"),
    )
}
SCRAM_MECHANISMS_BY_CODE: dict[int, ScramMechanism] = {m.code: m for m in SCRAM_MECHANISMS.values()}


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def to_json(self) -> dict[str, Any]:
        encode = base64.b64encode
        return {"salt": encode(self.salt).decode(), "stored_key": encode(self.stored_key).decode(),
                "server_key": encode(self.server_key).decode(), "iterations": self.iterations}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ScramCredential":
        decode = base64.b64decode
        return cls(decode(data["salt"]), decode(data["stored_key"]), decode(data["server_key"]), int(data["iterations"]))
