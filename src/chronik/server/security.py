"""Per-listener security: the TLS context, and the SASL exchange of one connection.

TLS: one ``ssl.SSLContext`` per node, built from ``ssl.keystore.location``
(PEM: certificate chain and unencrypted key), ``ssl.truststore.location``
(PEM CAs), ``ssl.client.auth`` and ``ssl.enabled.protocols``.  A verified
client certificate names the connection's principal through
``ssl.principal.mapping.rules``.

The replication port (cluster mode, ``replication_security_protocol=SSL``)
has two contexts of its own, accepting and dialing, both mutual
(:func:`replication_tls_contexts`), and a check of who a verified peer is
(:func:`replication_peer_check`); :mod:`chronik.cluster.tls` does the I/O.

SASL (:class:`SaslSession`, sans-I/O): a connection on a SASL listener starts
unauthenticated.  It may send ApiVersions, SaslHandshake (v0/v1) and, after a
v1 handshake, SaslAuthenticate; after a v0 handshake the next frames are raw
SASL tokens (Kafka's pre-KIP-152 form).  Anything else before the exchange
succeeds closes the connection, as Kafka does.  A failed exchange is answered
(SASL_AUTHENTICATION_FAILED with the reason) after
``connection.failed.authentication.delay.ms``, as Kafka does; the connection
then closes once the client has closed its side, or after
:data:`~chronik.server.kafka.FAILED_AUTHENTICATION_LINGER`
(:func:`~chronik.server.connection.linger_until_client_closes` says why).
"""

from __future__ import annotations

import ssl
from typing import Any, Callable, Collection

from ..config import BrokerConfig
from ..metadata.acls import CLUSTER_RESOURCE_NAME, AclBinding, AclOperation, ResourceType
from ..metadata.credentials import ScramCredential
from ..security.authorizer import authorizer_for
from ..security.principal import ANONYMOUS, PrincipalMapper
from ..security.scram import AuthenticationFailed, Authenticated, PlainServerExchange, ScramServerExchange

_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _context(purpose: int, config: BrokerConfig, keystore: tuple[str, str | None],
             truststore: tuple[str, str | None]) -> ssl.SSLContext:
    """A context of ``purpose`` (``ssl.PROTOCOL_TLS_SERVER``/``_CLIENT``) with ``ssl.enabled.protocols``,
    the key store and the trust store (each ``(setting name, PEM file)``; no trust store: none loaded),
    no renegotiation.  Raises ValueError naming the setting whose file cannot be loaded."""
    context = ssl.SSLContext(purpose)
    context.options |= ssl.OP_NO_RENEGOTIATION  # Kafka refuses TLS 1.2 renegotiation too (see chronik.tlsstream)
    versions = sorted(_TLS_VERSIONS[v.strip()] for v in config.ssl_enabled_protocols.split(",") if v.strip())
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    name, location = keystore
    try:
        context.load_cert_chain(str(location))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load {name} {location} (PEM certificate chain and unencrypted "
                         f"private key): {exc}") from None
    name, location = truststore
    if location:
        try:
            context.load_verify_locations(cafile=str(location))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load {name} {location} (PEM CA certificates): {exc}") from None
    return context


def tls_context(config: BrokerConfig) -> ssl.SSLContext:
    """The server-side TLS context of the TLS listeners (no renegotiation); raises ValueError naming the bad file."""
    context = _context(ssl.PROTOCOL_TLS_SERVER, config, ("ssl.keystore.location", config.ssl_keystore_location),
                       ("ssl.truststore.location", config.ssl_truststore_location))
    context.verify_mode = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[config.ssl_client_auth]
    return context


def replication_tls_contexts(config: BrokerConfig) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The replication port's (accepting, dialing) contexts for ``replication_security_protocol=SSL``.

    Both present this node's certificate (``listener.name.replication.ssl.keystore.location``,
    else ``ssl.keystore.location``) and require the peer's, verified against the trust store
    (``listener.name.replication.ssl.truststore.location``, else ``ssl.truststore.location``):
    mutual TLS whatever ``ssl.client.auth`` says (that one is for Kafka clients).  The dialing
    side also checks that the peer's certificate names the host dialled when
    ``ssl.endpoint.identification.algorithm`` is ``https`` (Kafka's default).  Raises
    ValueError naming the setting whose file cannot be loaded.
    """
    keystore, truststore = config.replication_keystore, config.replication_truststore
    server = _context(ssl.PROTOCOL_TLS_SERVER, config, keystore, truststore)
    server.verify_mode = ssl.CERT_REQUIRED
    client = _context(ssl.PROTOCOL_TLS_CLIENT, config, keystore, truststore)
    client.check_hostname = config.ssl_endpoint_identification_algorithm == "https"
    client.verify_mode = ssl.CERT_REQUIRED
    return server, client


def replication_peer_check(config: BrokerConfig, acls: Callable[[], Collection[AclBinding]]
                           ) -> Callable[[dict[str, Any], str], str | None]:
    """Whether a replication peer whose certificate verified may be a node (Kafka's model for brokers).

    Its principal is the certificate subject through ``ssl.principal.mapping.rules``
    (a subject no rule maps is refused).  With an authorizer (``authorizer.class.name``)
    the principal must be allowed ClusterAction on the cluster, as Kafka requires of
    the brokers and controllers that send it replication and Raft requests: a
    ``super.users`` entry (what Kafka's documentation advises for broker principals; it
    needs no replicated ACL, so a cluster can form with it) or an ALLOW ACL.  ``acls``
    gives the current ACL list (the metadata image's).  Without an authorizer every
    certificate the trust store verifies is a node.  Returns the check: ``(certificate,
    host) -> None`` (admitted) or why not.
    """
    mapper = principal_mapper(config)
    authorizer = authorizer_for(config, acls)

    def check(certificate: dict[str, Any], host: str) -> str | None:
        try:
            principal = mapper.principal_for_certificate(certificate)
        except ValueError as exc:
            return f"its certificate maps to no principal (ssl.principal.mapping.rules): {exc}"
        if authorizer is None:
            return None
        decision = authorizer.authorize(principal, host, AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER,
                                        CLUSTER_RESOURCE_NAME)
        if decision.allowed:
            return None
        return (f"{principal} is not a node: it may not ClusterAction on the cluster ({decision.reason}); "
                "list the nodes' principals in super.users")

    return check


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
    if config.replication_security_protocol == "SSL" and len(config.peers) > 1:
        replication_tls_contexts(config)
    principal_mapper(config)


def enabled_mechanisms(config: BrokerConfig) -> tuple[str, ...]:
    return tuple(m.strip().upper() for m in config.sasl_enabled_mechanisms.split(",") if m.strip())


CredentialLookup = Callable[[str, str], ScramCredential | None]


#: KIP-368: a connection may start re-authenticating at most once per this many seconds (as Kafka);
#: a SaslHandshake sooner is an ordinary request (ILLEGAL_SASL_STATE).
MIN_REAUTHENTICATION_INTERVAL = 1.0


class SaslSession:
    """Where one connection is in its SASL exchange (sans-I/O; the listener does the I/O and the clock).

    States: ``handshake`` (nothing yet), ``authenticate`` (mechanism chosen,
    tokens expected; ``raw`` after a v0 handshake), ``done`` (``principal``
    set), ``failed``.

    Session lifetime (KIP-368, ``connections.max.reauth.ms`` = ``max_reauth_ms``):
    when it is above 0, each completed exchange sets ``lifetime_ms`` (what the
    SaslAuthenticate v1+ answer tells the client) and ``expires`` (the clock
    reading, in seconds, after which :meth:`expired`); with 0, ``expires`` is
    None and the session never ends.  Before it ends the client re-authenticates
    on the same connection: a SaslHandshake while ``done``
    (:meth:`begin_reauthentication`, at most once per
    :data:`MIN_REAUTHENTICATION_INTERVAL`) restarts the exchange, which must
    use the mechanism of the previous one and end with the same principal
    (otherwise it fails, as in Kafka); its success renews the lifetime.
    Invariant: ``principal`` is the last authenticated one throughout a
    re-authentication, and ``authenticated`` is False until it completes.
    """

    def __init__(self, mechanisms: tuple[str, ...], lookup: CredentialLookup, max_reauth_ms: int = 0) -> None:
        self.mechanisms = mechanisms
        self._lookup = lookup
        self.max_reauth_ms = max_reauth_ms
        self.state = "handshake"
        self.raw = False
        self.principal = ANONYMOUS
        self.mechanism: str | None = None
        self.lifetime_ms = 0
        self.expires: float | None = None
        self._exchange: ScramServerExchange | PlainServerExchange | None = None
        self._reauth_started: float | None = None
        self._previous: tuple[str, str] | None = None  # (mechanism, principal) while re-authenticating
        self._refusal: str | None = None  # why the next token fails (a re-authentication changing mechanism)

    @property
    def authenticated(self) -> bool:
        return self.state == "done"

    @property
    def reauthenticating(self) -> bool:
        return self._previous is not None

    @property
    def slow(self) -> bool:
        """Whether the next token costs real CPU (PLAIN derives a salted password: thousands of
        hash iterations); the listener then runs :meth:`token` in a worker thread, off the event loop."""
        return isinstance(self._exchange, PlainServerExchange)

    def expired(self, now: float) -> bool:
        """Whether the session has a lifetime and ``now`` is past it."""
        return self.expires is not None and now > self.expires

    def begin_reauthentication(self, now: float) -> bool:
        """A SaslHandshake on an authenticated connection: True when it starts a re-authentication
        (the session has a lifetime, and the last one started at least
        :data:`MIN_REAUTHENTICATION_INTERVAL` ago); the handshake then goes to :meth:`handshake`."""
        if self.state != "done" or self.expires is None or self.mechanism is None:
            return False
        if self._reauth_started is not None and now - self._reauth_started < MIN_REAUTHENTICATION_INTERVAL:
            return False
        self._reauth_started = now
        self._previous = (self.mechanism, self.principal)
        self.state = "handshake"
        self.raw = False
        return True

    def handshake(self, mechanism: str, version: int) -> bool:
        """A SaslHandshake: True when ``mechanism`` is enabled (then tokens are expected).

        A re-authentication naming another enabled mechanism is accepted here and
        refused at its first token, as Kafka does."""
        if self.state != "handshake" or mechanism not in self.mechanisms:
            return False
        if self._previous is not None and mechanism != self._previous[0]:
            self._refusal = (f"SASL mechanism '{mechanism}' requested by client is not supported for "
                             f"re-authentication of mechanism '{self._previous[0]}'")
        self._exchange = PlainServerExchange(self._lookup) if mechanism == "PLAIN" else ScramServerExchange(mechanism, self._lookup)
        self.mechanism = mechanism
        self.state = "authenticate"
        self.raw = version == 0
        return True

    def token(self, data: bytes, now: float = 0.0) -> bytes:
        """The next client token, received at ``now``; returns the server's reply.  Raises AuthenticationFailed."""
        if self.state != "authenticate" or self._exchange is None:
            self.state = "failed"
            raise AuthenticationFailed("Unexpected SASL token: no SaslHandshake before it")
        try:
            if self._refusal is not None:
                raise AuthenticationFailed(self._refusal)
            result = self._exchange.receive(data)
            if isinstance(result, Authenticated) and self._previous is not None:
                principal = f"User:{result.user}"
                if principal != self._previous[1]:
                    raise AuthenticationFailed(f"Cannot change principals during re-authentication from "
                                               f"{self._previous[1]}: {principal}")
        except AuthenticationFailed:
            self.state = "failed"
            self._exchange = None
            raise
        if isinstance(result, Authenticated):
            self.state = "done"
            self.principal = f"User:{result.user}"
            self._exchange = None
            self._previous = None
            self.lifetime_ms = self.max_reauth_ms if self.max_reauth_ms > 0 else 0
            self.expires = now + self.lifetime_ms / 1000 if self.lifetime_ms else None
            return result.final_message
        return result
