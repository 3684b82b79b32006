"""Kinds of configuration value, and the errors that name a bad one.

A kind parses a value from text (flags, environment variables), from TOML,
checks a typed value and returns its normal form, and writes it back as text
(``--help`` defaults, DescribeConfigs).  Kinds raise :class:`_Invalid`, which
knows nothing of where the value came from; :class:`_Blame` turns it into a
:class:`ConfigError` naming the setting and its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

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


class _Float(_Kind):
    metavar = "X"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def from_text(self, text: str) -> float:
        try:
            return float(text.strip())
        except ValueError:
            raise _Invalid(f"{text!r} is not a number") from None

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_type_name(value)} {value!r}")
        if not self.low <= value <= self.high:
            raise _Invalid(f"{value} is outside {self.low}..{self.high}")
        return float(value)

    def describe(self) -> str:
        return f"number, {self.low}..{self.high}"


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

    def __init__(self, choices: Callable[[], Sequence[str]], *, lower: bool = False, metavar: str = "NAME",
                 empty: bool = False) -> None:
        """``empty``: the empty string (unset) is accepted too."""
        self.choices, self.lower, self.metavar, self.empty = choices, lower, metavar, empty

    def from_text(self, text: str) -> str:
        return text.strip()

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {_type_name(value)} {value!r}")
        if self.lower:
            value = value.lower()
        choices = self.choices()
        if value not in choices and not (self.empty and value == ""):
            raise _Invalid(f"{value!r} is not one of: {', '.join(choices)}" + (" (or empty)" if self.empty else ""))
        return value

    def describe(self) -> str:
        return ("empty or " if self.empty else "") + "one of " + ", ".join(self.choices())


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

    def to_text(self, value: Any) -> str:
        return "" if value is None else str(value)


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
    from ..storage import available_backends  # lazy: keeps `import chronik.config` light

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

    def describe(self) -> str:
        from ..storage import TEST_BACKENDS

        durable = [name for name in self.choices() if name not in TEST_BACKENDS]
        return f"one of {', '.join(durable)} (also {' and '.join(TEST_BACKENDS)}: in memory, NOT durable, for tests only)"


def _wal_profiles() -> list[str]:
    from ..storage import COMMIT_PROFILES

    return list(COMMIT_PROFILES)



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
