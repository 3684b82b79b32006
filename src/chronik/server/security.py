"""Per-listener security: the TLS context, and the SASL exchange of one connection.

TLS: one ``ssl.SSLContext`` per node, built from ``ssl.keystore.location``
(PEM: certificate chain and unencrypted key), ``ssl.truststore.location``
(PEM CAs), ``ssl.client.auth`` and ``ssl.enabled.protocols``.  A verified
client certificate names the connection's principal through
``ssl.principal.mapping.rules``.

SASL (:class:`SaslSession`, sans-I/O): a connection on a SASL listener starts
unauthenticated.  It may send ApiVersions, SaslHandshake (v0/v1) and, after a
v1 handshake, SaslAuthenticate; after a v0 handshake the next frames are raw
SASL tokens (Kafka's pre-KIP-152 form).  Anything else before the exchange
succeeds closes the connection, as Kafka does.  A failed exchange is answered
(SASL_AUTHENTICATION_FAILED with the reason) and the connection closes after
``connection.failed.authentication.delay.ms``.
"""

from __future__ import annotations

import ssl
from typing import Callable

from ..config import BrokerConfig
from ..metadata.credentials import ScramCredential
from ..security.principal import ANONYMOUS, PrincipalMapper
from ..security.scram import AuthenticationFailed, Authenticated, PlainServerExchange, ScramServerExchange

_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def tls_context(config: BrokerConfig) -> ssl.SSLContext:
    """The server-side TLS context of the TLS listeners; raises OSError/ssl.SSLError naming the bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(_TLS_VERSIONS[v.strip()] for v in config.ssl_enabled_protocols.split(",") if v.strip())
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    location = config.ssl_keystore_location
    try:
        context.load_cert_chain(str(location))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load ssl.keystore.location {location} (PEM certificate chain and unencrypted "
                         f"private key): {exc}") from None
    if config.ssl_truststore_location:
        try:
            context.load_verify_locations(cafile=str(config.ssl_truststore_location))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load ssl.truststore.location {config.ssl_truststore_location} "
                             f"(PEM CA certificates): {exc}") from None
    context.verify_mode = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[config.ssl_client_auth]
    return context


def principal_mapper(config: BrokerConfig) -> PrincipalMapper:
    try:
        return PrincipalMapper(config.ssl_principal_mapping_rules)
    except ValueError as exc:
        raise ValueError(f"invalid ssl.principal.mapping.rules: {exc}") from None


def tls_principal(mapper: PrincipalMapper, certificate: dict | None) -> str:  # type: ignore[type-arg]
    """The principal of a TLS connection: the mapped certificate subject, or ANONYMOUS."""
    return mapper.principal_for_certificate(certificate)


def check_security_files(config: BrokerConfig) -> None:
    """Load what the listeners will load (TLS files, principal rules) once, before start-up:
    raises ValueError with one line naming the setting and the problem."""
    if any(spec.tls for spec in config.kafka_listeners()):
        tls_context(config)
    principal_mapper(config)


def enabled_mechanisms(config: BrokerConfig) -> tuple[str, ...]:
    return tuple(m.strip().upper() for m in config.sasl_enabled_mechanisms.split(",") if m.strip())


CredentialLookup = Callable[[str, str], ScramCredential | None]


class SaslSession:
    """Where one connection is in its SASL exchange (sans-I/O; the listener does the I/O).

    States: ``handshake`` (nothing yet), ``authenticate`` (mechanism chosen,
    tokens expected; ``raw`` after a v0 handshake), ``done`` (``principal``
    set), ``failed``.
    """

    def __init__(self, mechanisms: tuple[str, ...], lookup: CredentialLookup) -> None:
        self.mechanisms = mechanisms
        self._lookup = lookup
        self.state = "handshake"
        self.raw = False
        self.principal = ANONYMOUS
        self._exchange: ScramServerExchange | PlainServerExchange | None = None

    @property
    def authenticated(self) -> bool:
        return self.state == "done"

    @property
    def slow(self) -> bool:
        """Whether the next token costs real CPU (PLAIN derives a salted password: thousands of
        hash iterations); the listener then runs :meth:`token` in a worker thread, off the event loop."""
        return isinstance(self._exchange, PlainServerExchange)

    def handshake(self, mechanism: str, version: int) -> bool:
        """A SaslHandshake: True when ``mechanism`` is enabled (then tokens are expected)."""
        if self.state != "handshake" or mechanism not in self.mechanisms:
            return False
        self._exchange = PlainServerExchange(self._lookup) if mechanism == "PLAIN" else ScramServerExchange(mechanism, self._lookup)
        self.state = "authenticate"
        self.raw = version == 0
        return True

    def token(self, data: bytes) -> bytes:
        """The next client token; returns the server's reply.  Raises AuthenticationFailed."""
        if self.state != "authenticate" or self._exchange is None:
            self.state = "failed"
            raise AuthenticationFailed("Unexpected SASL token: no SaslHandshake before it")
        try:
            result = self._exchange.receive(data)
        except AuthenticationFailed:
            self.state = "failed"
            self._exchange = None
            raise
        if isinstance(result, Authenticated):
            self.state = "done"
            self.principal = f"User:{result.user}"
            self._exchange = None
            return result.final_message
        return result
