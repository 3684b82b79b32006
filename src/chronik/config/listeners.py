"""Kafka's ``listeners`` / ``advertised.listeners`` / ``listener.security.protocol.map``.

``listeners`` is a comma-separated list of ``NAME://HOST:PORT`` (an empty
host binds every interface, port 0 any free port); each NAME is unique and
maps to a security protocol through ``listener.security.protocol.map``
(``NAME:PROTOCOL`` pairs; the default maps PLAINTEXT, SSL, SASL_PLAINTEXT and
SASL_SSL to themselves).  ``advertised.listeners`` names, per listener, the
address clients are told (Metadata, FindCoordinator); a listener it does not
name advertises its bind address (``localhost`` for a wildcard host), as the
``advertise`` shorthand does.  Without ``listeners`` the node has one
PLAINTEXT listener on ``listen``, advertised as ``advertise`` (or as
``advertised.listeners`` names it).
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import HostPort, _Invalid

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_PROTOCOL_MAP = ",".join(f"{p}:{p}" for p in SECURITY_PROTOCOLS)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One configured listener: its name, bind address, advertised address and security protocol."""

    name: str
    bind: HostPort
    advertised: HostPort
    protocol: str

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def parse_protocol_map(text: str) -> dict[str, str]:
    """``NAME:PROTOCOL,...`` -> {NAME: PROTOCOL}; raises ``_Invalid`` on a bad entry."""
    out: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, protocol = entry.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name:
            raise _Invalid(f"{entry!r} is not NAME:PROTOCOL")
        if protocol not in SECURITY_PROTOCOLS:
            raise _Invalid(f"unknown security protocol {protocol!r} for listener {name} "
                           f"(known: {', '.join(SECURITY_PROTOCOLS)})")
        out[name] = protocol
    return out


def parse_endpoints(text: str) -> dict[str, HostPort]:
    """``NAME://HOST:PORT,...`` -> {NAME: address}, in order; raises ``_Invalid`` on a bad entry or a repeated name."""
    out: dict[str, HostPort] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, rest = entry.partition("://")
        name = name.strip().upper()
        if not sep or not name:
            raise _Invalid(f"{entry!r} is not NAME://HOST:PORT")
        host, colon, port = rest.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise _Invalid(f"{entry!r}: expected NAME://HOST:PORT with a port 0-65535")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if name in out:
            raise _Invalid(f"listener name {name} appears twice")
        out[name] = HostPort(host, int(port))
    if not out:
        raise _Invalid("no listener given")
    return out


def _derived(bind: HostPort) -> HostPort:
    return HostPort("localhost" if bind.is_wildcard or not bind.host else bind.host, bind.port)


def listener_specs(listeners: str | None, advertised: str | None, protocol_map: str,
                   listen: HostPort, advertise: HostPort) -> tuple[ListenerSpec, ...]:
    """The node's listeners, first the one whose address is registered for other nodes to give out.

    Raises ``_Invalid`` (naming the offending entry) for a name missing from
    the protocol map, an advertised listener that is not a listener, or an
    advertised wildcard host.
    """
    protocols = parse_protocol_map(protocol_map)
    binds = parse_endpoints(listeners) if listeners else {"PLAINTEXT": listen}
    adverts = parse_endpoints(advertised) if advertised else {}
    if not listeners:
        protocols = {**protocols, "PLAINTEXT": "PLAINTEXT"}
        adverts.setdefault("PLAINTEXT", advertise)
    for name, address in adverts.items():
        if name not in binds:
            raise _Invalid(f"advertised listener {name} is not in listeners ({', '.join(binds)})")
        if address.is_wildcard or not address.host:
            raise _Invalid(f"advertised listener {name}: {address.host or '(empty)'} is not an address clients can "
                           "connect to; give a host name or IP")
    specs = []
    for name, bind in binds.items():
        if name not in protocols:
            raise _Invalid(f"listener {name} has no security protocol in listener.security.protocol.map")
        specs.append(ListenerSpec(name, bind, adverts.get(name) or _derived(bind), protocols[name]))
    return tuple(specs)
