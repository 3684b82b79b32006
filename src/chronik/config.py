"""Broker configuration: one frozen :class:`BrokerConfig`, validated at start-up.

Where a setting comes from, lowest precedence first::

    defaults  <  config file (TOML, --config PATH / CHRONIK_CONFIG)  <  CHRONIK_* environment  <  flags

Naming scheme (one rule, no exceptions except ``peers``):

* Field ``name`` (a Python identifier) has the flag ``--name-with-dashes`` and
  the environment variable ``CHRONIK_NAME_UPPER``.  Empty environment
  variables count as unset.
* Kafka broker settings keep their Kafka names (``num.partitions``); their
  field is the Kafka name with dots turned into underscores
  (``num_partitions``), so the flag is ``--num-partitions`` and the
  environment variable ``CHRONIK_NUM_PARTITIONS``.  ``--set KAFKA.NAME=VALUE``
  (repeatable) sets any of them too; giving one both ways is an error.
  :data:`KAFKA_SETTINGS` maps Kafka names to field names.
* ``peers`` is ``--peer ID@KAFKA_HOST:PORT/REPLICATION_HOST:PORT``
  (repeatable, or comma-separated) and ``CHRONIK_PEERS`` (comma-separated);
  flags or environment replace the file's whole list.

In the TOML file, plain settings are flat keys (``data_dir = "..."``,
``listen = "..."``); the listeners may also be written as a ``[listeners]``
table (``kafka`` / ``replication`` / ``metrics``) and the advertised address
as ``[advertised] kafka``.  Kafka settings are written under their Kafka
names, either quoted at the top level (``"num.partitions" = 3``) or inside a
``[kafka]`` table (``"num.partitions" = 3``; unquoted dotted keys work too,
TOML turns them into nested tables and the loader flattens them back).
Peers are an array of tables ``[[peers]]`` with ``id``, ``kafka`` and
``replication``.  Unknown keys and wrong TOML types are errors.

Every problem is a :class:`ConfigError` whose message names the setting and
where the bad value came from (flag, environment variable, file and key), so
the command line can print it as one line instead of a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

__all__ = [
    "BrokerConfig",
    "ConfigError",
    "HostPort",
    "KAFKA_SETTINGS",
    "Peer",
    "add_serve_arguments",
    "load_config",
    "parse_host_port",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "CHRONIK_"
CONFIG_ENV = "CHRONIK_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
METADATA_COMMIT_MODES = ("quorum", "leader")
WILDCARD_HOSTS = ("0.0.0.0", "::")
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


class ConfigError(ValueError):
    """A setting that is missing, malformed or out of range.

    The message is meant for the operator, as is: it names the setting and
    its source (flag, environment variable, or config file and key).
    """


class _Invalid(ValueError):
    """A value problem, before we know which setting and source to blame."""


class HostPort(NamedTuple):
    """A TCP address.  ``str()`` gives ``host:port`` (``[v6]:port`` for IPv6).

    Port 0 on a listener means "any free port"; the server reports the bound
    one.  A plain tuple ``(host, port)`` is accepted wherever one is needed.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        return self.host in WILDCARD_HOSTS


def parse_host_port(text: str) -> HostPort:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> :class:`HostPort`; raises ValueError."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise _Invalid(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _Invalid(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9092")
    if not host or any(c.isspace() or c in "[]/@," for c in host):
        raise _Invalid(f"{text!r} has no valid host part")
    if not (port_text.isascii() and port_text.isdigit()):
        raise _Invalid(f"{text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise _Invalid(f"{text!r}: port {port} is out of range 0-65535")
    return HostPort(host, port)


@dataclass(frozen=True, slots=True)
class Peer:
    """One voter of the cluster (this node included): id and its two addresses."""

    id: int
    kafka: HostPort
    replication: HostPort

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "kafka": str(self.kafka), "replication": str(self.replication)}


# --------------------------------------------------------------------------
# Kinds of value: parse from text (flags, environment), from TOML, and check.
# --------------------------------------------------------------------------


class _Kind:
    metavar = "VALUE"

    def from_text(self, text: str) -> Any:
        return text

    def from_toml(self, value: object) -> Any:
        return value  # typed checks happen in check()

    def check(self, value: Any) -> Any:
        """Validate a typed value; return its normal form.  Raises _Invalid."""
        return value

    def to_text(self, value: Any) -> str:
        return str(value)

    def describe(self) -> str:
        return ""


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", str: "a string", float: "a float", list: "an array", dict: "a table"}.get(
        type(value), type(value).__name__
    )


class _Int(_Kind):
    metavar = "N"

    def __init__(self, low: int, high: int = _INT32_MAX) -> None:
        self.low, self.high = low, high

    def from_text(self, text: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            raise _Invalid(f"{text!r} is not an integer") from None

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_type_name(value)} {value!r}")
        if value < self.low:
            raise _Invalid(f"{value} is below the minimum {self.low}")
        if value > self.high:
            raise _Invalid(f"{value} is above the maximum {self.high}")
        return value

    def describe(self) -> str:
        return f"integer, {self.low}..{self.high}"


class _Bool(_Kind):
    metavar = "true|false"

    def from_text(self, text: str) -> bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise _Invalid(f"{text!r} is not true or false")
        return lowered == "true"

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(f"expected true or false, got {_type_name(value)} {value!r}")
        return value

    def to_text(self, value: Any) -> str:
        return "true" if value else "false"

    def describe(self) -> str:
        return "true or false"


class _Choice(_Kind):
    metavar = "NAME"

    def __init__(self, choices: Callable[[], Sequence[str]], *, lower: bool = False, metavar: str = "NAME") -> None:
        self.choices, self.lower, self.metavar = choices, lower, metavar

    def from_text(self, text: str) -> str:
        return text.strip()

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_type_name(value)} {value!r}")
        if self.lower:
            value = value.lower()
        choices = self.choices()
        if value not in choices:
            raise _Invalid(f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices())


class _Text(_Kind):
    """A non-empty string, or None when optional."""

    def __init__(self, *, optional: bool = False, metavar: str = "TEXT") -> None:
        self.optional, self.metavar = optional, metavar

    def from_text(self, text: str) -> str | None:
        text = text.strip()
        return None if self.optional and text == "" else text

    def check(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_type_name(value)} {value!r}")
        if not value.strip():
            raise _Invalid("must not be empty")
        return value


class _Path(_Kind):
    metavar = "PATH"

    def from_text(self, text: str) -> Path:
        if not text.strip():
            raise _Invalid("must not be empty")
        return Path(text)

    def from_toml(self, value: object) -> Any:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_type_name(value)} {value!r}")
        return self.from_text(value)

    def check(self, value: Any) -> Path:
        if isinstance(value, str):
            value = self.from_text(value)
        if not isinstance(value, Path):
            raise _Invalid(f"expected a path, got {_type_name(value)} {value!r}")
        return value


class _Address(_Kind):
    """HOST:PORT; when optional, "" / "off" / "none" mean "not listening"."""

    metavar = "HOST:PORT"

    def __init__(self, *, optional: bool = False) -> None:
        self.optional = optional

    def from_text(self, text: str) -> HostPort | None:
        if self.optional and text.strip().lower() in ("", "off", "none"):
            return None
        return parse_host_port(text)

    def from_toml(self, value: object) -> Any:
        if not isinstance(value, str):
            raise _Invalid(f"expected a \"HOST:PORT\" string, got {_type_name(value)} {value!r}")
        return self.from_text(value)

    def check(self, value: Any) -> HostPort | None:
        if value is None and self.optional:
            return None
        return _as_host_port(value)

    def to_text(self, value: Any) -> str:
        return "" if value is None else str(value)


def _as_host_port(value: object) -> HostPort:
    if isinstance(value, str):
        return parse_host_port(value)
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
        if isinstance(host, str) and isinstance(port, int) and not isinstance(port, bool):
            return parse_host_port(str(HostPort(host, port)))
    raise _Invalid(f"expected HOST:PORT, got {_type_name(value)} {value!r}")


_PEER_ID = _Int(0, _INT32_MAX)


class _Peers(_Kind):
    metavar = "ID@HOST:PORT/HOST:PORT"

    def from_text(self, text: str) -> tuple[Peer, ...]:
        peers = []
        for item in text.replace(",", " ").split():
            id_text, at, addresses = item.partition("@")
            kafka, slash, replication = addresses.partition("/")
            if not at or not slash:
                raise _Invalid(f"{item!r} is not ID@KAFKA_HOST:PORT/REPLICATION_HOST:PORT")
            peers.append(Peer(_PEER_ID.from_text(id_text), parse_host_port(kafka), parse_host_port(replication)))
        return tuple(peers)

    def from_toml(self, value: object) -> Any:
        if not isinstance(value, list):
            raise _Invalid(f"expected an array of tables [[peers]], got {_type_name(value)}")
        return tuple(self._peer(entry, n) for n, entry in enumerate(value, 1))

    def _peer(self, entry: object, n: int) -> Peer:
        if isinstance(entry, Peer):
            entry = {"id": entry.id, "kafka": entry.kafka, "replication": entry.replication}
        if not isinstance(entry, Mapping):
            raise _Invalid(f"peer #{n}: expected a table with id, kafka and replication, got {_type_name(entry)}")
        unknown = set(entry) - {"id", "kafka", "replication"}
        missing = {"id", "kafka", "replication"} - set(entry)
        if unknown:
            raise _Invalid(f"peer #{n}: unknown key(s) {', '.join(sorted(unknown))} (expected id, kafka, replication)")
        if missing:
            raise _Invalid(f"peer #{n}: missing {', '.join(sorted(missing))}")
        try:
            peer_id = _PEER_ID.check(entry["id"])
            kafka = _as_host_port(entry["kafka"])
            replication = _as_host_port(entry["replication"])
        except _Invalid as exc:
            raise _Invalid(f"peer #{n}: {exc}") from None
        for what, address in (("kafka", kafka), ("replication", replication)):
            if address.port == 0 or address.is_wildcard:
                raise _Invalid(f"peer {peer_id}: {what} address {address} is not one other nodes can connect to")
        return Peer(peer_id, kafka, replication)

    def check(self, value: Any) -> tuple[Peer, ...]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected a list of peers, got {_type_name(value)}")
        peers = tuple(self._peer(entry, n) for n, entry in enumerate(value, 1))
        for what, key in (("id", lambda p: p.id), ("kafka address", lambda p: p.kafka),
                          ("replication address", lambda p: p.replication)):
            values = [key(p) for p in peers]
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                raise _Invalid(f"duplicate peer {what} {', '.join(duplicates)}")
        return peers

    def to_text(self, value: Any) -> str:
        return ",".join(f"{p.id}@{p.kafka}/{p.replication}" for p in value)


def _wal_backends() -> list[str]:
    from .storage import available_backends  # lazy: keeps `import chronik.config` light

    return available_backends()


class _WalBackend(_Choice):
    def __init__(self) -> None:
        super().__init__(_wal_backends, metavar="BACKEND")

    def check(self, value: Any) -> str:
        try:
            return super().check(value)
        except _Invalid as exc:
            if value == "native":
                raise _Invalid(f"{exc} (the native extension is not built in this install)") from None
            raise


def _wal_profiles() -> list[str]:
    from .storage import COMMIT_PROFILES

    return list(COMMIT_PROFILES)


# --------------------------------------------------------------------------
# The settings table
# --------------------------------------------------------------------------


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
    _kafka("default.replication.factor", _Int(1, 32767), "Replicas of an auto-created topic."),
    _kafka("min.insync.replicas", _Int(1, 1000), "Replicas that must have a record for acks=all."),
    _kafka("replica.lag.time.max.ms", _Int(1), "A follower not caught up with its leader for this long leaves the ISR."),
    _kafka("broker.session.timeout.ms", _Int(1), "Cluster mode: the controller fences a broker it has not heard from for this long."),
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
    _Setting("request_arrival_timeout_ms", _Int(1, _INT64_MAX),
             "Close a connection whose request began to arrive but is still incomplete after this long "
             "(slow senders holding buffers).", "broker"),
    _Setting("max_partitions_per_topic", _Int(1, 1_000_000), "Partitions one topic may have "
             "(CreateTopics / CreatePartitions beyond it: INVALID_PARTITIONS).", "broker"),
    _Setting("max_partitions_per_request", _Int(1, 1_000_000), "Partitions one CreateTopics or CreatePartitions "
             "request may add in all (beyond it: POLICY_VIOLATION; Kafka's fixed limit is 10000).", "broker"),
    _Setting("max_partitions", _Int(1, 10_000_000), "Partitions of all topics together "
             "(beyond it: POLICY_VIOLATION).", "broker"),
    _Setting("node_id", _Int(0), "This node's id (Kafka node.id / broker.id).", "cluster"),
    _Setting("replication_listen", _Address(), "Address the replication/controller listener binds.", "cluster",
             file_keys=("listeners.replication",)),
    _Setting("peers", _Peers(),
             "Every voter of the cluster, this node included; empty: single node. Repeat the flag per peer.",
             "cluster", flag="--peer", default_doc="none (single node)"),
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
    default_replication_factor: int = 1
    min_insync_replicas: int = 1
    replica_lag_time_max_ms: int = 30000
    broker_session_timeout_ms: int = 1000
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    group_initial_rebalance_delay_ms: int = 3000
    socket_request_max_bytes: int = 104857600
    fetch_max_bytes: int = 57671680
    connections_max_idle_ms: int = 600000
    max_connections: int = 10000
    max_connections_per_ip: int = 1000
    request_arrival_timeout_ms: int = 30000
    max_partitions_per_topic: int = 2000
    max_partitions_per_request: int = 4000
    max_partitions: int = 10000
    # cluster
    node_id: int = 1
    replication_listen: HostPort = HostPort("0.0.0.0", 9291)
    peers: tuple[Peer, ...] = ()
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
        if self.wal_backend == "":
            from .storage import default_backend_name

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


class _Blame:
    """Turns an _Invalid raised inside into a ConfigError naming setting and source."""

    def __init__(self, label: str, source: str) -> None:
        self.label, self.source = label, source

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, _Invalid):
            raise ConfigError(f"invalid {self.label} ({self.source}): {exc}") from None
        return False


assert [f.name for f in fields(BrokerConfig) if f.name != "sources"] == list(_SETTINGS), "settings table out of sync"


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

_GROUP_TITLES = {
    "broker": "broker settings",
    "kafka": "Kafka broker settings (also --set KAFKA.NAME=VALUE; in the config file under their Kafka names)",
    "cluster": "cluster settings",
}


def _help(setting: _Setting) -> str:
    if setting.default_doc is not None:
        default = setting.default_doc
    else:
        default = next(f.default for f in fields(BrokerConfig) if f.name == setting.name)
        default = setting.kind.to_text(default)
        if isinstance(setting.kind, _Path):
            default = "./" + default if not default.startswith(("/", ".")) else default
    if setting.kafka:
        keys = f'"{setting.kafka}" (top level or in [kafka])'
    elif setting.name == "peers":
        keys = "[[peers]] tables with id, kafka, replication"
    else:
        keys = " or ".join(setting.keys)
    parts = [setting.doc]
    if setting.kafka:
        parts.insert(0, f"Kafka {setting.kafka}:")
    described = setting.kind.describe()
    if described:
        parts.append(f"Value: {described}.")
    parts.append(f"Default: {default}. Env: {setting.env}. File key: {keys}.")
    return " ".join(parts).replace("%", "%%")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--set`` and one flag per setting to ``parser``.

    Every flag defaults to None ("not given"); :func:`load_config` does the
    parsing and validation so that errors name their source consistently.
    """
    source = parser.add_argument_group(
        "configuration sources",
        "Precedence: defaults < config file < CHRONIK_* environment variables < flags. "
        "Empty environment variables count as unset.",
    )
    source.add_argument(
        "--config", metavar="PATH", default=None,
        help=f"TOML config file (env {CONFIG_ENV}). Unknown keys are errors.",
    )
    source.add_argument(
        "--set", metavar="KAFKA.NAME=VALUE", action="append", default=None, dest="kafka_set",
        help="Set a Kafka-named broker setting, e.g. --set num.partitions=3 (repeatable; known names: "
        + ", ".join(KAFKA_SETTINGS) + ").",
    )
    groups = {key: parser.add_argument_group(title) for key, title in _GROUP_TITLES.items()}
    for setting in _SETTINGS_LIST:
        kwargs: dict[str, Any] = {"metavar": setting.kind.metavar, "default": None, "help": _help(setting)}
        if setting.name == "peers":
            kwargs["action"] = "append"
        groups[setting.group].add_argument(setting.option, dest=setting.name, **kwargs)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def load_config(args: argparse.Namespace, environ: Mapping[str, str]) -> BrokerConfig:
    """Build the :class:`BrokerConfig` from defaults, file, environment and flags.

    ``args`` comes from a parser prepared by :func:`add_serve_arguments`;
    attributes it lacks count as "flag not given".  Raises :class:`ConfigError`.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = getattr(args, "config", None)
    path_source = "flag --config"
    if not path and environ.get(CONFIG_ENV):
        path, path_source = environ[CONFIG_ENV], f"environment variable {CONFIG_ENV}"
    if path:
        for name, value, where in _read_file(Path(path), path_source):
            values[name], sources[name] = value, where

    known_env = {s.env for s in _SETTINGS_LIST} | {CONFIG_ENV}
    unknown_env = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known_env)
    if unknown_env:
        log.warning("ignoring unknown environment variable(s): %s", ", ".join(unknown_env))
    for setting in _SETTINGS_LIST:
        text = environ.get(setting.env, "")
        if text.strip():
            where = f"environment variable {setting.env}"
            values[setting.name], sources[setting.name] = _parse_text(setting, text, where), where

    for name, value, where in _flag_values(args):
        values[name], sources[name] = value, where

    return BrokerConfig(**values, sources=sources)


def _parse_text(setting: _Setting, text: str, where: str) -> Any:
    with _Blame(setting.label, where):
        return setting.kind.from_text(text)


def _flag_values(args: argparse.Namespace) -> Iterator[tuple[str, Any, str]]:
    from_set: dict[str, tuple[str, str]] = {}
    for item in getattr(args, "kafka_set", None) or ():
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"--set {item!r}: expected KAFKA.NAME=VALUE")
        if key not in KAFKA_SETTINGS:
            raise ConfigError(f"--set {item!r}: unknown Kafka setting {key!r}{_suggest(key, KAFKA_SETTINGS)}")
        from_set[KAFKA_SETTINGS[key]] = (text, f"flag --set {key}")
    for setting in _SETTINGS_LIST:
        given = getattr(args, setting.name, None)
        if given is not None and setting.name in from_set:
            raise ConfigError(f"{setting.label} is given twice on the command line: {setting.option} and --set {setting.kafka}")
        if setting.name in from_set:
            text, where = from_set[setting.name]
            yield setting.name, _parse_text(setting, text, where), where
        elif given is not None:
            where = f"flag {setting.option}"
            if setting.name == "peers":
                yield setting.name, tuple(p for g in given for p in _parse_text(setting, g, where)), where
            else:
                yield setting.name, _parse_text(setting, given, where), where


def _read_file(path: Path, path_source: str) -> list[tuple[str, Any, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} (from {path_source}) does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path} (from {path_source}): {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    found: dict[str, tuple[str, Any]] = {}  # field -> (key, raw value)
    unknown: list[str] = []
    for key, value in _file_entries(document):
        name = _FILE_KEYS.get(key)
        if name is None:
            unknown.append(key)
        elif name in found:
            raise ConfigError(f"config file {path} sets {_SETTINGS[name].label} twice: as {found[name][0]} and as {key}")
        else:
            found[name] = (key, value)
    if unknown:
        hints = "; ".join(f"{k!r}{_suggest(k, _FILE_KEYS)}" for k in unknown)
        raise ConfigError(f"config file {path}: unknown key(s): {hints}")

    entries = []
    for name, (key, value) in found.items():
        where = f"config file {path}, key {key}"
        with _Blame(_SETTINGS[name].label, where):
            entries.append((name, _SETTINGS[name].kind.from_toml(value), where))
    return entries


def _file_entries(document: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every setting in a parsed TOML document."""
    for key, value in document.items():
        if key == "peers":
            yield key, value
        elif isinstance(value, dict):
            yield from _flatten(key, value)
        else:
            yield key, value


def _flatten(prefix: str, table: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(f"{prefix}.{key}", value)
        else:
            yield f"{prefix}.{key}", value


def _suggest(key: str, known: Iterable[str]) -> str:
    candidates = list(known)
    # Python-style spellings of Kafka names: num_partitions -> num.partitions
    for kafka_name, name in KAFKA_SETTINGS.items():
        if key.removeprefix("kafka.") == name:
            return f" (did you mean {kafka_name!r}?)"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
