"""Principals: who a connection is, as Kafka names them (``User:alice``).

* PLAINTEXT and SSL without a client certificate: ``User:ANONYMOUS``.
* SASL: ``User:<the authenticated user name>``.
* SSL with a client certificate: the certificate subject as an RFC 2253
  distinguished name (what Java's ``X500Principal.getName()`` gives, most
  specific attribute first: ``CN=alice,OU=eng,O=Example,C=US``), then
  rewritten by ``ssl.principal.mapping.rules`` -- ``DEFAULT`` keeps it --
  into ``User:<that name>``.

:class:`PrincipalMapper` implements Kafka's rule syntax:
``RULE:<regex>/<replacement>/[LU]`` entries and ``DEFAULT``, separated by
commas, tried in order; the first rule whose regex matches the whole name
wins; ``$1``-style group references in the replacement; ``L``/``U`` lower- or
upper-case the result.  A name no rule matches is refused (Kafka raises
"No rules apply to <name>").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

ANONYMOUS = "User:ANONYMOUS"

# Attribute names as Python's ssl module reports them -> the RFC 2253 keyword
# Java prints, or the OID (printed as OID=#<hex DER value>, as Java does for
# attributes without an RFC 2253 keyword).
_RFC2253_KEYWORDS = {
    "commonName": "CN", "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
    "organizationName": "O", "organizationalUnitName": "OU", "streetAddress": "STREET",
    "domainComponent": "DC", "userId": "UID",
}
_OIDS = {
    "emailAddress": ("1.2.840.113549.1.9.1", 0x16),  # IA5String
    "serialNumber": ("2.5.4.5", 0x13),  # PrintableString
    "surname": ("2.5.4.4", 0x0C), "givenName": ("2.5.4.42", 0x0C), "title": ("2.5.4.12", 0x0C),
    "pseudonym": ("2.5.4.65", 0x0C), "generationQualifier": ("2.5.4.44", 0x0C),
    "dnQualifier": ("2.5.4.46", 0x13), "initials": ("2.5.4.43", 0x0C),
    "businessCategory": ("2.5.4.15", 0x0C), "postalCode": ("2.5.4.17", 0x0C),
}


class PrincipalMappingError(ValueError):
    pass


def _der_hex(tag: int, value: str) -> str:
    data = value.encode("utf-8")
    if len(data) < 0x80:
        length = bytes([len(data)])
    else:
        size = (len(data).bit_length() + 7) // 8
        length = bytes([0x80 | size]) + len(data).to_bytes(size, "big")
    return "#" + (bytes([tag]) + length + data).hex()


def _escape(value: str) -> str:
    """RFC 2253 section 2.4 escaping."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and (i == 0 or i == len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def subject_dn(subject: Sequence[Sequence[tuple[str, str]]]) -> str:
    """The RFC 2253 name of a certificate subject in the form ``ssl.SSLSocket.getpeercert()``
    gives it (relative distinguished names in certificate order; RFC 2253 reverses them)."""
    rdns = []
    for rdn in reversed(subject):
        parts = []
        for name, value in rdn:
            if name in _RFC2253_KEYWORDS:
                parts.append(f"{_RFC2253_KEYWORDS[name]}={_escape(value)}")
            elif name in _OIDS:
                oid, tag = _OIDS[name]
                parts.append(f"{oid}={_der_hex(tag, value)}")
            else:
                parts.append(f"{name}={_escape(value)}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""

    def apply(self, name: str) -> str | None:
        if self.pattern is None:
            return name
        match = self.pattern.fullmatch(name)
        if match is None:
            return None
        result = re.sub(r"\$(\d+)", lambda m: match.group(int(m.group(1))) or "", self.replacement)
        return result.lower() if self.case == "L" else result.upper() if self.case == "U" else result


_RULE = re.compile(r"\s*RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?)\s*(?:,|$)|\s*DEFAULT\s*(?:,|$)")


class PrincipalMapper:
    """``ssl.principal.mapping.rules`` (see the module docstring)."""

    def __init__(self, rules: str = "DEFAULT") -> None:
        self.rules: list[_Rule] = []
        position = 0
        text = rules.strip()
        while position < len(text):
            match = _RULE.match(text, position)
            if match is None or match.end() == position:
                raise PrincipalMappingError(f"invalid ssl.principal.mapping.rules at {text[position:]!r}")
            if match.group(0).strip().rstrip(",").strip() == "DEFAULT":
                self.rules.append(_Rule(None))
            else:
                try:
                    pattern = re.compile(match.group(1).replace("\\/", "/"))
                except re.error as exc:
                    raise PrincipalMappingError(f"invalid regular expression in ssl.principal.mapping.rules: {exc}") from None
                self.rules.append(_Rule(pattern, match.group(2).replace("\\/", "/"), match.group(3)))
            position = match.end()
        if not self.rules:
            self.rules.append(_Rule(None))

    def principal_for(self, distinguished_name: str) -> str:
        for rule in self.rules:
            mapped = rule.apply(distinguished_name)
            if mapped is not None:
                return f"User:{mapped}"
        raise PrincipalMappingError(f"No rules apply to {distinguished_name}, rules {self.rules}")

    def principal_for_certificate(self, certificate: dict[str, Any] | None) -> str:
        """The principal of a verified peer certificate (``getpeercert()``), ANONYMOUS without one."""
        if not certificate or not certificate.get("subject"):
            return ANONYMOUS
        return self.principal_for(subject_dn(certificate["subject"]))
