from __future__ import annotations

import ssl

import pytest

from chronik.security.principal import ANONYMOUS, PrincipalMapper, PrincipalMappingError, subject_dn

SUBJECT = ((("countryName", "US"),), (("organizationName", "Example, Inc."),),
           (("organizationalUnitName", "eng"),), (("commonName", "alice"),))


def test_subject_is_printed_most_specific_first_with_escapes() -> None:
    assert subject_dn(SUBJECT) == "CN=alice,OU=eng,O=Example\\, Inc.,C=US"


def test_multi_valued_rdns_and_attributes_without_a_keyword() -> None:
    subject = ((("commonName", "a"), ("userId", "7")), (("emailAddress", "a@b.c"),))
    assert subject_dn(subject) == "1.2.840.113549.1.9.1=#1605614062 2e63".replace(" ", "") + ",CN=a+UID=7"


def test_default_rule_keeps_the_distinguished_name() -> None:
    assert PrincipalMapper().principal_for_certificate({"subject": SUBJECT}) == \
        "User:CN=alice,OU=eng,O=Example\\, Inc.,C=US"
    assert PrincipalMapper().principal_for_certificate(None) == ANONYMOUS
    assert PrincipalMapper().principal_for_certificate({}) == ANONYMOUS


def test_kafka_rules_with_groups_and_case() -> None:
    mapper = PrincipalMapper("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, RULE:^CN=([^,]*),.*$/$1/U, DEFAULT")
    assert mapper.principal_for("CN=Kafka-Svc,OU=ServiceUsers,O=X") == "User:kafka-svc"
    assert mapper.principal_for("CN=bob,O=X") == "User:BOB"
    assert mapper.principal_for("O=X") == "User:O=X"


def test_no_matching_rule_is_refused_and_bad_rules_are_reported() -> None:
    with pytest.raises(PrincipalMappingError, match="No rules apply"):
        PrincipalMapper("RULE:^CN=(.*)$/$1/").principal_for("O=X")
    with pytest.raises(PrincipalMappingError):
        PrincipalMapper("RULE:^CN=(.*$/$1/")
    with pytest.raises(PrincipalMappingError):
        PrincipalMapper("NONSENSE")


def test_a_real_certificate_subject(tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA(organization_name="Chronik Test")
    cert = ca.issue_cert("client.example", common_name="alice", organization_name="Org",
                         organization_unit_name="Unit")
    path = tmp_path / "client.pem"
    cert.cert_chain_pems[0].write_to_path(str(path))
    decoded = ssl._ssl._test_decode_cert(str(path))  # the dict form getpeercert() returns
    assert PrincipalMapper().principal_for_certificate(decoded) == "User:CN=alice,OU=Unit,O=Org"
