"""The settings table and :class:`BrokerConfig`, the frozen dataclass it describes.

One :class:`_Setting` row per :class:`BrokerConfig` field (the module asserts
they stay in sync): its kind, one-line doc, ``--help`` group, Kafka name,
TOML spellings, flag and environment variable.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from .listeners import DEFAULT_PROTOCOL_MAP, ListenerSpec, listener_specs, parse_protocol_map
from .kinds import (
    _INT64_MAX,
    HostPort,
    Peer,
    _Address,
    _Blame,
    _Bool,
    _Choice,
    _Float,
    _Int,
    _Invalid,
    _Kind,
    _Path,
    _Peers,
    _Text,
    _wal_profiles,
    _WalBackend,
)

ENV_PREFIX = "CHRONIK_"
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CONFIG_ENV = "CHRONIK_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
METADATA_COMMIT_MODES = ("quorum", "leader")
REPLICATION_PROTOCOLS = ("PLAINTEXT", "SSL")
"""``replication_security_protocol`` values (SASL is not offered on the replication port)."""
AUTHORIZER_CLASS_NAMES = ("org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                          "kafka.security.authorizer.AclAuthorizer", "chronik")
"""``authorizer.class.name`` values that turn ACL enforcement on (empty: everything is allowed)."""


@dataclass(frozen=True, slots=True)
class _Setting:
    name: str  # the BrokerConfig field
    kind: _Kind
    doc: str
    group: str  # "broker" | "kafka" | "cluster"
    kafka: str | None = None  # Kafka's name for it
    file_keys: tuple[str, ...] = ()  # extra TOML spellings (dotted paths)
    default_doc: str | None = None  # shown in --help when the default is derived
    flag: str | None = None  # when not --name-with-dashes

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.kafka or self.name

    @property
    def keys(self) -> tuple[str, ...]:
        """Every TOML key path that sets this setting."""
        if self.kafka:
            return (self.kafka, "kafka." + self.kafka)
        return (self.name, *self.file_keys)


def _kafka(name: str, kind: _Kind, doc: str) -> _Setting:
    return _Setting(name.replace(".", "_"), kind, doc, "kafka", kafka=name)


_SETTINGS_LIST = (
    _Setting("data_dir", _Path(), "Directory holding the log, metadata and WAL.", "broker"),
    _Setting("listen", _Address(), "Address the Kafka listener binds (port 0: any free port).", "broker",
             file_keys=("listeners.kafka",)),
    _Setting("advertise", _Address(), "Address given to clients in Metadata responses.", "broker",
             file_keys=("advertised.kafka",),
             default_doc="localhost:<listen port> when listening on 0.0.0.0 or ::, else the listen address"),
    _Setting("metrics_listen", _Address(optional=True),
             "Address of the operator HTTP endpoint (/metrics, /health); 'off' disables it.", "broker",
             file_keys=("listeners.metrics",), default_doc="off"),
    _Setting("wal_backend", _WalBackend(), "Write-ahead-log backend.", "broker",
             default_doc="native when the C extension is built, else python"),
    _Setting("wal_profile", _Choice(_wal_profiles, metavar="PROFILE"),
             "Group-commit profile (latency vs batch size): low-latency syncs at once and, on the native backend, "
             "polls around each commit while that pays; balanced and throughput linger and never poll.", "broker"),
    _Setting("log_level", _Choice(lambda: LOG_LEVELS, lower=True, metavar="LEVEL"), "Logging level.", "broker"),
    _Setting("metadata_snapshot_every", _Int(1),
             "Metadata commands applied between two snapshots of the metadata image (the metadata log, "
             "in cluster mode the Raft log, is compacted below each).", "broker"),
    _kafka("auto.create.topics.enable", _Bool(), "Create a topic when a client asks for one that does not exist."),
    _kafka("num.partitions", _Int(1, 1_000_000), "Partitions of an auto-created topic."),
    _kafka("message.max.bytes", _Int(0), "Largest record batch accepted (topic default max.message.bytes)."),
    _kafka("log.retention.ms", _Int(-1, _INT64_MAX), "Delete segments older than this; -1 keeps forever."),
    _kafka("log.retention.bytes", _Int(-1, _INT64_MAX), "Delete old segments while a partition is larger; -1: no limit."),
    _kafka("log.segment.bytes", _Int(1024), "Roll to a new segment at this size."),
    _kafka("log.roll.ms", _Int(1, _INT64_MAX), "Topic default segment.ms: roll the active segment once it has held data this long."),
    _kafka("log.cleanup.policy", _Choice(lambda: ("delete", "compact", "compact,delete")),
           "Topic default cleanup.policy: delete (retention), compact (log cleaner) or compact,delete."),
    _kafka("compression.type", _Choice(lambda: ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")),
           "Topic default compression.type: producer keeps batches as sent, a codec recompresses them on append."),
    _kafka("log.cleaner.enable", _Bool(), "Run the log cleaner (compaction of cleanup.policy=compact topics)."),
    _kafka("log.cleaner.threads", _Int(1, 64), "Partitions the log cleaner compacts at the same time."),
    _kafka("log.cleaner.backoff.ms", _Int(1, _INT64_MAX), "How long the log cleaner sleeps when nothing is cleanable."),
    _kafka("log.cleaner.dedupe.buffer.size", _Int(1 << 16, _INT64_MAX),
           "Memory for the key -> offset map of one cleaning, over all cleaner threads; a pass that would need "
           "more cleans fewer segments."),
    _kafka("log.cleaner.io.max.bytes.per.second", _Float(1.0, sys.float_info.max),
           "The log cleaner's I/O (bytes read plus written), averaged, over all cleaner threads; the default "
           "is no limit."),
    _kafka("log.cleaner.min.cleanable.ratio", _Float(0.0, 1.0), "Topic default min.cleanable.dirty.ratio."),
    _kafka("log.cleaner.min.compaction.lag.ms", _Int(0, _INT64_MAX), "Topic default min.compaction.lag.ms."),
    _kafka("log.cleaner.max.compaction.lag.ms", _Int(1, _INT64_MAX), "Topic default max.compaction.lag.ms."),
    _kafka("log.cleaner.delete.retention.ms", _Int(0, _INT64_MAX), "Topic default delete.retention.ms."),
    _kafka("default.replication.factor", _Int(1, 32767), "Replicas of an auto-created topic."),
    _kafka("min.insync.replicas", _Int(1, 1000), "Replicas that must have a record for acks=all."),
    _kafka("replica.lag.time.max.ms", _Int(1), "A follower not caught up with its leader for this long leaves the ISR."),
    _kafka("broker.session.timeout.ms", _Int(1), "Cluster mode: the controller fences a broker it has not heard from for this long."),
    _kafka("replica.socket.timeout.ms", _Int(1000),
           "Cluster mode: a follower's fetch unanswered for this long means its connection stalled: redial "
           "(above the 500 ms a leader parks a fetch, below replica.lag.time.max.ms)."),
    _kafka("controller.quorum.request.timeout.ms", _Int(100),
           "Cluster mode: a Raft message unacknowledged for this long means its connection stalled: redial "
           "(at most broker.session.timeout.ms, so a stall is mended before it fences anyone)."),
    _kafka("auto.leader.rebalance.enable", _Bool(),
           "Cluster mode: the controller moves leadership back to each partition's preferred (first) replica "
           "once it is in sync."),
    _kafka("leader.imbalance.check.interval.seconds", _Int(1),
           "Cluster mode: how often the controller looks for partitions not led by their preferred replica."),
    _kafka("group.initial.rebalance.delay.ms", _Int(0), "Wait for more members before the first rebalance of a group."),
    _kafka("socket.request.max.bytes", _Int(1), "Largest request frame accepted."),
    _kafka("fetch.max.bytes", _Int(1024), "Largest Fetch response, whatever the request asks for "
           "(the first batch found is still sent whole)."),
    _kafka("connections.max.idle.ms", _Int(1, _INT64_MAX),
           "Close a client connection that sent and received nothing, and is owed nothing, for this long."),
    _kafka("max.connections", _Int(1), "Client connections open at once; more are closed at once (Kafka: unlimited)."),
    _kafka("max.connections.per.ip", _Int(1), "Client connections from one IP address (Kafka: unlimited)."),
    _Setting("authorizer_class_name", _Choice(lambda: AUTHORIZER_CLASS_NAMES, metavar="CLASS", empty=True),
             "ACL enforcement: org.apache.kafka.metadata.authorizer.StandardAuthorizer (or chronik) enforces the "
             "ACLs of CreateAcls; empty allows everything.", "kafka", kafka="authorizer.class.name",
             default_doc="empty"),
    _Setting("super_users", _Text(optional=True, metavar="PRINCIPALS"),
             "Principals the authorizer allows everything, ';'-separated (User:admin;User:ops).", "kafka",
             kafka="super.users", default_doc="none"),
    _kafka("allow.everyone.if.no.acl.found", _Bool(),
           "With an authorizer: allow an operation on a resource no ACL names at all (else deny it)."),
    _Setting("listeners", _Text(optional=True, metavar="NAME://HOST:PORT,..."),
             "Kafka listeners, each NAME://HOST:PORT with its own security protocol.", "kafka", kafka="listeners",
             default_doc="none (one PLAINTEXT listener on --listen)"),
    _Setting("advertised_listeners", _Text(optional=True, metavar="NAME://HOST:PORT,..."),
             "Address each listener gives its clients in Metadata; a listener not named here advertises its bind "
             "address (localhost for a wildcard host).", "kafka", kafka="advertised.listeners",
             default_doc="the listeners' bind addresses"),
    _kafka("listener.security.protocol.map", _Text(metavar="NAME:PROTOCOL,..."),
           "Security protocol of each listener name: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."),
    _kafka("ssl.keystore.type", _Choice(lambda: ("PEM",)), "Format of ssl.keystore.location (PEM only)."),
    _Setting("ssl_keystore_location", _Text(optional=True, metavar="FILE"),
             "PEM file with the TLS listeners' certificate chain and unencrypted private key.", "kafka",
             kafka="ssl.keystore.location", default_doc="none"),
    _kafka("ssl.truststore.type", _Choice(lambda: ("PEM",)), "Format of ssl.truststore.location (PEM only)."),
    _Setting("ssl_truststore_location", _Text(optional=True, metavar="FILE"),
             "PEM file of the CA certificates client certificates must chain to.", "kafka",
             kafka="ssl.truststore.location", default_doc="none"),
    _kafka("ssl.client.auth", _Choice(lambda: ("none", "requested", "required"), lower=True),
           "TLS client certificates: not asked for, asked for, or required."),
    _kafka("ssl.enabled.protocols", _Text(metavar="TLSv1.2,TLSv1.3"), "TLS versions the TLS listeners accept."),
    _kafka("ssl.principal.mapping.rules", _Text(metavar="RULES"),
           "How a client certificate's subject becomes a principal (DEFAULT: User:<RFC 2253 subject>)."),
    _kafka("sasl.enabled.mechanisms", _Text(metavar="MECHANISM,..."),
           "SASL mechanisms the SASL listeners accept: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512."),
    _kafka("connection.failed.authentication.delay.ms", _Int(0, 3_600_000),
           "Wait this long after a failed authentication before closing the connection."),
    _kafka("connections.max.reauth.ms", _Int(0, _INT64_MAX),
           "SASL session lifetime (KIP-368): above 0, SASL clients are told it and re-authenticate on their "
           "connection before it ends; a request after it closes the connection. 0: sessions never end."),
    _Setting("request_arrival_timeout_ms", _Int(1, _INT64_MAX),
             "Close a connection whose request began to arrive but is still incomplete after this long "
             "(slow senders holding buffers).", "broker"),
    _Setting("max_partitions_per_topic", _Int(1, 1_000_000), "Partitions one topic may have "
             "(CreateTopics / CreatePartitions beyond it: INVALID_PARTITIONS).", "broker"),
    _Setting("max_partitions_per_request", _Int(1, 1_000_000), "Partitions one CreateTopics or CreatePartitions "
             "request may add in all (beyond it: POLICY_VIOLATION; Kafka's fixed limit is 10000).", "broker"),
    _Setting("max_partitions", _Int(1, 10_000_000), "Partitions of all topics together "
             "(beyond it: POLICY_VIOLATION).", "broker"),
    _kafka("producer.id.expiration.ms", _Int(1, 2**31 - 1),
           "Forget a producer id's sequence state in a partition once its newest batch there is this old "
           "(and no transaction of it is open there); the cleaner then no longer keeps that batch."),
    _kafka("producer.id.expiration.check.interval.ms", _Int(1, 2**31 - 1),
           "How often partitions forget expired producer ids (producer.id.expiration.ms)."),
    _kafka("transaction.max.timeout.ms", _Int(1, 2**31 - 1),
           "Largest transaction.timeout.ms a transactional producer may ask for (else INVALID_TRANSACTION_TIMEOUT)."),
    _kafka("transactional.id.expiration.ms", _Int(1, 2**31 - 1),
           "Forget a transactional id whose producer has sent nothing transactional for this long."),
    _Setting("node_id", _Int(0), "This node's id (Kafka node.id / broker.id).", "cluster"),
    _Setting("replication_listen", _Address(), "Address the replication/controller listener binds.", "cluster",
             file_keys=("listeners.replication",)),
    _Setting("peers", _Peers(),
             "Every voter of the cluster, this node included; empty: single node. Repeat the flag per peer.",
             "cluster", flag="--peer", default_doc="none (single node)"),
    _Setting("replication_security_protocol", _Choice(lambda: REPLICATION_PROTOCOLS, metavar="PROTOCOL"),
             "Security protocol of the replication/controller (Raft) listener and of the connections a node "
             "dials to its peers: PLAINTEXT, or SSL (mutual TLS: each side presents a certificate the other's "
             "trust store must verify). The same on every node.", "cluster"),
    _Setting("listener_name_replication_ssl_keystore_location", _Text(optional=True, metavar="FILE"),
             "PEM file with the certificate chain and unencrypted key this node presents on the replication port "
             "(Kafka's per-listener form, listener REPLICATION).", "cluster",
             kafka="listener.name.replication.ssl.keystore.location", default_doc="ssl.keystore.location"),
    _Setting("listener_name_replication_ssl_truststore_location", _Text(optional=True, metavar="FILE"),
             "PEM file of the CAs a peer's certificate must chain to on the replication port.", "cluster",
             kafka="listener.name.replication.ssl.truststore.location", default_doc="ssl.truststore.location"),
    _Setting("ssl_endpoint_identification_algorithm", _Choice(lambda: ("https",), lower=True, empty=True),
             "Where this node is the TLS client (dialing a peer's replication port): https checks that the peer's "
             "certificate names the host dialled; empty checks only its chain.", "cluster",
             kafka="ssl.endpoint.identification.algorithm"),
    _Setting("metadata_commit", _Choice(lambda: METADATA_COMMIT_MODES, metavar="MODE"),
             "When a metadata change counts as committed: on a quorum of voters, or on the leader alone.", "cluster"),
    _Setting("rack", _Text(optional=True, metavar="RACK"), "Rack of this node (broker.rack), for replica placement.",
             "cluster", default_doc="none"),
)
_SETTINGS: dict[str, _Setting] = {s.name: s for s in _SETTINGS_LIST}

KAFKA_SETTINGS: Mapping[str, str] = MappingProxyType({s.kafka: s.name for s in _SETTINGS_LIST if s.kafka})
"""Kafka broker setting name -> :class:`BrokerConfig` field name."""

KAFKA_SETTING_DOCS: Mapping[str, str] = MappingProxyType({s.kafka: s.doc for s in _SETTINGS_LIST if s.kafka})
"""Kafka broker setting name -> its one-line description (DescribeConfigs documentation)."""

_FILE_KEYS: dict[str, str] = {key: s.name for s in _SETTINGS_LIST for key in s.keys}
_DERIVE_ADVERTISE = HostPort("", 0)  # sentinel: "work it out from listen"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything the broker reads at start-up, validated on construction.

    Build it with :func:`load_config`; constructing it directly (tests) runs
    the same validation and fills the same derived defaults:

    * ``advertise`` left at its default is derived from ``listen``:
      ``localhost:<port>`` for a wildcard host, else ``listen`` itself.  With
      ``listen`` port 0 the derived advertised port is 0 too, meaning "the
      port actually bound"; the server fills it in after binding.
      (``dataclasses.replace(config, listen=...)`` keeps the old
      ``advertise``; pass ``advertise=HostPort("", 0)`` to derive it again.)
    * ``wal_backend`` ``""`` means the storage layer's default backend.

    ``sources`` maps each field to where its value came from ("default",
    "flag --listen", "environment variable CHRONIK_LISTEN", "config file
    PATH, key listeners.kafka"); it describes the load, not later replace()s.
    """

    data_dir: Path = Path("./chronik-data")
    listen: HostPort = HostPort("0.0.0.0", 9092)
    advertise: HostPort = _DERIVE_ADVERTISE
    metrics_listen: HostPort | None = None
    wal_backend: str = ""
    wal_profile: str = "low-latency"
    log_level: str = "info"
    metadata_snapshot_every: int = 10_000
    # Kafka broker settings (Kafka name: dots -> underscores)
    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    message_max_bytes: int = 1048588
    log_retention_ms: int = 604800000
    log_retention_bytes: int = -1
    log_segment_bytes: int = 1073741824
    log_roll_ms: int = 604800000
    log_cleanup_policy: str = "delete"
    compression_type: str = "producer"
    log_cleaner_enable: bool = True
    log_cleaner_threads: int = 1
    log_cleaner_backoff_ms: int = 15000
    log_cleaner_dedupe_buffer_size: int = 134217728
    log_cleaner_io_max_bytes_per_second: float = sys.float_info.max
    log_cleaner_min_cleanable_ratio: float = 0.5
    log_cleaner_min_compaction_lag_ms: int = 0
    log_cleaner_max_compaction_lag_ms: int = 9223372036854775807
    log_cleaner_delete_retention_ms: int = 86400000
    default_replication_factor: int = 1
    min_insync_replicas: int = 1
    replica_lag_time_max_ms: int = 30000
    broker_session_timeout_ms: int = 1000
    replica_socket_timeout_ms: int = 3000
    controller_quorum_request_timeout_ms: int = 1000
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    group_initial_rebalance_delay_ms: int = 3000
    socket_request_max_bytes: int = 104857600
    fetch_max_bytes: int = 57671680
    connections_max_idle_ms: int = 600000
    max_connections: int = 10000
    max_connections_per_ip: int = 1000
    authorizer_class_name: str = ""
    super_users: str | None = None
    allow_everyone_if_no_acl_found: bool = False
    listeners: str | None = None
    advertised_listeners: str | None = None
    listener_security_protocol_map: str = DEFAULT_PROTOCOL_MAP
    ssl_keystore_type: str = "PEM"
    ssl_keystore_location: str | None = None
    ssl_truststore_type: str = "PEM"
    ssl_truststore_location: str | None = None
    ssl_client_auth: str = "none"
    ssl_enabled_protocols: str = "TLSv1.2,TLSv1.3"
    ssl_principal_mapping_rules: str = "DEFAULT"
    sasl_enabled_mechanisms: str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    connection_failed_authentication_delay_ms: int = 100
    connections_max_reauth_ms: int = 0
    request_arrival_timeout_ms: int = 30000
    max_partitions_per_topic: int = 2000
    max_partitions_per_request: int = 4000
    max_partitions: int = 10000
    producer_id_expiration_ms: int = 86400000
    producer_id_expiration_check_interval_ms: int = 600000
    transaction_max_timeout_ms: int = 900000
    transactional_id_expiration_ms: int = 604800000
    # cluster
    node_id: int = 1
    replication_listen: HostPort = HostPort("0.0.0.0", 9291)
    peers: tuple[Peer, ...] = ()
    replication_security_protocol: str = "PLAINTEXT"
    listener_name_replication_ssl_keystore_location: str | None = None
    listener_name_replication_ssl_truststore_location: str | None = None
    ssl_endpoint_identification_algorithm: str = "https"
    metadata_commit: str = "quorum"
    rack: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        sources = dict(self.sources)
        for setting in _SETTINGS_LIST:
            raw = getattr(self, setting.name)
            if setting.name == "advertise" and raw == _DERIVE_ADVERTISE:
                continue
            if setting.name == "wal_backend" and raw == "":
                continue
            with self._blame(setting.name):
                object.__setattr__(self, setting.name, setting.kind.check(raw))
        if self.advertise == _DERIVE_ADVERTISE:
            host = "localhost" if self.listen.is_wildcard else self.listen.host
            object.__setattr__(self, "advertise", HostPort(host, self.listen.port))
        elif self.advertise.is_wildcard:
            with self._blame("advertise"):
                raise _Invalid(f"{self.advertise.host} is not an address clients can connect to; give a host name or IP")
        self._check_security()
        if self.wal_backend == "":
            from ..storage import default_backend_name

            object.__setattr__(self, "wal_backend", default_backend_name())
        if self.peers and self.node_id not in {p.id for p in self.peers}:
            with self._blame("peers"):
                ids = ", ".join(str(p.id) for p in self.peers)
                raise _Invalid(
                    f"this node's node_id {self.node_id} ({self._source('node_id')}) is not among the peer ids ({ids});"
                    " list every voter, this node included"
                )
        for name in _SETTINGS:
            sources.setdefault(name, "default")
        object.__setattr__(self, "sources", MappingProxyType(sources))

    def kafka_listeners(self) -> tuple[ListenerSpec, ...]:
        """The Kafka listeners (``listeners`` or the ``listen``/``advertise`` shorthand), first the registered one."""
        return listener_specs(self.listeners, self.advertised_listeners, self.listener_security_protocol_map,
                              self.listen, self.advertise)

    @property
    def replication_keystore(self) -> tuple[str, str | None]:
        """(setting name, PEM file) of the certificate this node presents on the replication port:
        ``listener.name.replication.ssl.keystore.location``, else ``ssl.keystore.location``."""
        if self.listener_name_replication_ssl_keystore_location:
            return "listener.name.replication.ssl.keystore.location", self.listener_name_replication_ssl_keystore_location
        return "ssl.keystore.location", self.ssl_keystore_location

    @property
    def replication_truststore(self) -> tuple[str, str | None]:
        """(setting name, PEM file) of the CAs a peer's certificate must chain to on the replication port."""
        if self.listener_name_replication_ssl_truststore_location:
            return ("listener.name.replication.ssl.truststore.location",
                    self.listener_name_replication_ssl_truststore_location)
        return "ssl.truststore.location", self.ssl_truststore_location

    def _check_security(self) -> None:
        """Listener, TLS and SASL settings that only make sense together (each error names its setting)."""
        with self._blame("listener_security_protocol_map"):
            parse_protocol_map(self.listener_security_protocol_map)
        with self._blame("listeners" if self.listeners else "advertised_listeners"):
            specs = self.kafka_listeners()
        if any(spec.tls for spec in specs) and not self.ssl_keystore_location:
            with self._blame("ssl_keystore_location"):
                raise _Invalid("a listener uses SSL or SASL_SSL: give the PEM file of its certificate chain and key")
        if self.ssl_client_auth != "none" and not self.ssl_truststore_location:
            with self._blame("ssl_client_auth"):
                raise _Invalid(f"ssl.client.auth={self.ssl_client_auth} needs a trust store (PEM file of CAs)")
        with self._blame("ssl_enabled_protocols"):
            versions = [v.strip() for v in self.ssl_enabled_protocols.split(",") if v.strip()]
            unknown = [v for v in versions if v not in TLS_VERSIONS]
            if unknown or not versions:
                raise _Invalid(f"unknown TLS version(s) {', '.join(unknown) or '(none)'}; known: {', '.join(TLS_VERSIONS)}")
        if self.replication_security_protocol == "SSL":
            for what, store, (_, location) in (
                    ("a key store (PEM certificate chain and key)", "keystore", self.replication_keystore),
                    ("a trust store (PEM CAs)", "truststore", self.replication_truststore)):
                if not location:
                    with self._blame("replication_security_protocol"):
                        raise _Invalid(f"the SSL replication port needs {what}: set "
                                       f"listener.name.replication.ssl.{store}.location or ssl.{store}.location")
        with self._blame("sasl_enabled_mechanisms"):
            mechanisms = [m.strip().upper() for m in self.sasl_enabled_mechanisms.split(",") if m.strip()]
            unknown = [m for m in mechanisms if m not in SASL_MECHANISMS]
            if unknown:
                raise _Invalid(f"unsupported SASL mechanism(s) {', '.join(unknown)}; supported: {', '.join(SASL_MECHANISMS)}")
            if not mechanisms and any(spec.sasl for spec in specs):
                raise _Invalid("a listener uses SASL: enable at least one mechanism")

    def _source(self, name: str) -> str:
        if name in self.sources:
            return self.sources[name]
        default = next(f.default for f in fields(BrokerConfig) if f.name == name)
        return "default" if getattr(self, name) == default else "set directly"

    def _blame(self, name: str) -> "_Blame":
        return _Blame(_SETTINGS[name].label, self._source(name))

    def to_dict(self) -> dict[str, object]:
        """Every setting, JSON-friendly (addresses as "host:port"), for logging."""
        out: dict[str, object] = {}
        for name in _SETTINGS:
            value = getattr(self, name)
            if isinstance(value, (HostPort, Path)):
                value = str(value)
            elif name == "peers":
                value = [p.to_dict() for p in value]
            out[name] = value
        return out

    def kafka_configs(self) -> dict[str, str]:
        """Kafka-named broker settings as Kafka strings (for DescribeConfigs and topic defaults)."""
        return {s.kafka: s.kind.to_text(getattr(self, s.name)) for s in _SETTINGS_LIST if s.kafka}


assert [f.name for f in fields(BrokerConfig) if f.name != "sources"] == list(_SETTINGS), "settings table out of sync"
