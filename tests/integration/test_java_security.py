"""Apache Kafka's Java client (4.x and 3.9) over SASL and TLS listeners, and re-authenticating (KIP-368).

The scenarios of ``tests/java/checks`` (``secure``, ``authfail``, ``reauth``: see
:mod:`.test_java`) run with a client properties file (``-Dchronik.client.config``)
holding the listener's settings: SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512, SASL_SSL with SCRAM-SHA-512 and SSL with a client certificate,
the trust material as PEM files (``ssl.truststore.type=PEM``,
``ssl.keystore.type=PEM``; certificates made here with ``trustme``).  A wrong
password must surface as SaslAuthenticationException, an untrusted certificate
as SslAuthenticationException, from the admin client, the producer and the
consumer alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from .test_java import CLIENTS, MISSING, run_checks
from .test_reauthentication import LIFETIME_MS, counters, deltas
from .test_reauthentication import reauth  # noqa: F401  (the fixture: a broker with a short session lifetime)
from .test_security import PASSWORD, Secured
from .test_security import secured  # noqa: F401  (the fixture: the four-listener broker)

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}
SASL_EXCEPTION = "org.apache.kafka.common.errors.SaslAuthenticationException"
SSL_EXCEPTION = "org.apache.kafka.common.errors.SslAuthenticationException"


def pem_keystore(s: Secured, cert: str) -> str:
    """A PEM key store for the Java client: the certificate and its key as unencrypted PKCS#8 (the only
    private-key form Kafka's PEM support reads; trustme writes the traditional OpenSSL form)."""
    path = Path(s.file(f"{cert}-java.pem"))
    if not path.exists():
        key = serialization.load_pem_private_key(Path(s.file(f"{cert}.key")).read_bytes(), password=None)
        pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        path.write_bytes(pkcs8 + Path(s.file(f"{cert}.pem")).read_bytes())
    return str(path)


def client_config(s: Secured, mode: str, path: Path, *, mechanism: str = "PLAIN", user: str = "alice",
                  password: str = PASSWORD, cert: str = "alice") -> dict[str, str]:
    """Write the Java client's properties for ``mode`` to ``path``; returns the -D flags naming it."""
    props: dict[str, str] = {"security.protocol": mode}
    if mode in ("SSL", "SASL_SSL"):
        props |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": s.file("ca.pem")}
    if mode == "SSL":
        props |= {"ssl.keystore.type": "PEM", "ssl.keystore.location": pem_keystore(s, cert)}
    else:
        props |= {"sasl.mechanism": mechanism,
                  "sasl.jaas.config": f'{LOGIN_MODULES[mechanism]} required username="{user}" password="{password}";'}
    path.write_text("".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in props.items()))
    return {"chronik.client.config": str(path)}


SECURE_CASES = [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
                ("SASL_SSL", "SCRAM-SHA-512"), ("SSL", "client certificate")]


@pytest.mark.parametrize("module", CLIENTS)
@pytest.mark.parametrize("mode,mechanism", SECURE_CASES)
def test_java_client_over_each_security_protocol(secured: Secured, tmp_path: Path, module: str, mode: str,  # noqa: F811
                                                 mechanism: str) -> None:
    """Create a topic, produce 20 records, consume them in a group and commit, over the listener."""
    properties = client_config(secured, mode, tmp_path / "client.properties", mechanism=mechanism)
    result, _ = run_checks(module, "secure", secured.bootstrap(mode), properties=properties)
    assert result["sent"] == result["received"] == 20
    assert result["nodes"] == [secured.bootstrap(mode)]  # Metadata advertises the listener connected through


def refusals(result: dict[str, Any]) -> dict[str, str]:
    return {client: result[client]["exception"] for client in ("admin", "producer", "consumer")}


@pytest.mark.parametrize("module", CLIENTS)
@pytest.mark.parametrize("mode,mechanism,user,password", [
    ("SASL_PLAINTEXT", "PLAIN", "alice", "wrong"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256", "nobody", PASSWORD),
    ("SASL_SSL", "SCRAM-SHA-512", "alice", "wrong"),
])
def test_java_client_wrong_credentials(secured: Secured, tmp_path: Path, module: str, mode: str,  # noqa: F811
                                       mechanism: str, user: str, password: str) -> None:
    """Admin, producer and consumer each surface SaslAuthenticationException with the broker's message."""
    properties = client_config(secured, mode, tmp_path / "client.properties", mechanism=mechanism, user=user,
                               password=password)
    result, _ = run_checks(module, "authfail", secured.bootstrap(mode), properties=properties, quiet=False)
    assert refusals(result) == {"admin": SASL_EXCEPTION, "producer": SASL_EXCEPTION, "consumer": SASL_EXCEPTION}, result
    for client in ("admin", "producer", "consumer"):
        assert "Authentication failed" in result[client]["message"] or "Invalid username or password" in \
            result[client]["message"], result[client]


@pytest.mark.parametrize("module", CLIENTS)
def test_java_client_untrusted_certificate(secured: Secured, tmp_path: Path, module: str) -> None:  # noqa: F811
    """A client certificate from a CA the broker does not trust: SslAuthenticationException everywhere."""
    properties = client_config(secured, "SSL", tmp_path / "client.properties", cert="rogue")
    result, _ = run_checks(module, "authfail", secured.bootstrap("SSL"), properties=properties, quiet=False)
    assert refusals(result) == {"admin": SSL_EXCEPTION, "producer": SSL_EXCEPTION, "consumer": SSL_EXCEPTION}, result


# each client version over one listener and mechanism (each run lasts several session lifetimes)
@pytest.mark.parametrize("module,mode,mechanism", [("kafka-4", "SASL_SSL", "SCRAM-SHA-512"),
                                                   ("kafka-3.9", "SASL_PLAINTEXT", "PLAIN")])
def test_java_client_re_authenticates_on_its_connections(reauth: Secured, tmp_path: Path, module: str,  # noqa: F811
                                                         mode: str, mechanism: str) -> None:
    """connections.max.reauth.ms=2000: the Java client re-authenticates each connection before its session
    ends (KIP-368), producing and consuming for several lifetimes with no connection closed and no warning;
    the broker counts the re-authentications and kills no connection."""
    before = counters(reauth)
    properties = client_config(reauth, mode, tmp_path / "client.properties", mechanism=mechanism)
    seconds = 3.5 * LIFETIME_MS / 1000
    result, _ = run_checks(module, "reauth", reauth.bootstrap(mode),
                           properties={**properties, "chronik.seconds": str(seconds)})
    assert result["sent"] == result["received"] > 20
    for client in ("producer", "consumer"):
        metrics = result[client]
        assert metrics["successful-reauthentication-total"] >= 2, result  # at least one renewal per lifetime ended
        assert metrics["failed-reauthentication-total"] == 0, result
        assert metrics["connection-close-total"] == 0, result
    change = deltas(before, counters(reauth))
    assert change["expired_killed"] == 0, change
    assert change["reauthenticated"] >= 4, change
