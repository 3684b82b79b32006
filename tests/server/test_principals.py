"""The listener passes each request's principal and listener to the handlers (``handle_frame``).

In-process: a node with an SSL listener (client certificates requested) and a
SASL_PLAINTEXT listener; ``handle_frame`` is wrapped to record what each
request came with.
"""

from __future__ import annotations

import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from chronik.broker import open_broker
from chronik.config import BrokerConfig
from chronik.metadata.commands import UpsertScramCredential
from chronik.metadata.credentials import SCRAM_MECHANISMS
from chronik.protocol import encode_frame, encode_request, request_schema
from chronik.protocol.build import build
from chronik.security.scram import make_credential
from chronik.server import kafka as kafka_server


def frame(api_key: int, version: int, body: dict[str, Any]) -> bytes:
    return b"".join(encode_frame(encode_request(api_key, version, 1, "t", build(request_schema(api_key, version), body))))


def exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return exactly(sock, struct.unpack(">i", exactly(sock, 4))[0])


API_VERSIONS = frame(18, 0, {})


async def test_principals_and_listeners_reach_the_handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("alice@example.com", common_name="alice", organization_name="Example",
                           organization_unit_name="eng")
    seen: list[tuple[str, str | None, Any]] = []
    original = kafka_server.handle_frame

    async def recording(broker: Any, data: bytes, client_host: str, principal: str = "User:ANONYMOUS",
                        listener: str | None = None, advertised: Any = None) -> Any:
        seen.append((principal, listener, advertised))
        return await original(broker, data, client_host, principal, listener, advertised)

    monkeypatch.setattr(kafka_server, "handle_frame", recording)
    config = BrokerConfig(data_dir=tmp_path / "data", wal_backend="memory",
                          listeners="SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
                          advertised_listeners="SSL://tls.example:9093",
                          ssl_keystore_location=str(tmp_path / "server.pem"),
                          ssl_truststore_location=str(tmp_path / "ca.pem"), ssl_client_auth="requested")
    async with open_broker(config) as broker:
        credential = make_credential(SCRAM_MECHANISMS["SCRAM-SHA-256"], "pw")
        await broker.submit(UpsertScramCredential(user="bob", mechanism="SCRAM-SHA-256", credential=credential.to_json()))
        async with trio.open_nursery() as nursery:
            ssl_address, sasl_address = await nursery.start(broker.serve)

            def clients() -> None:
                context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
                with context.wrap_socket(socket.create_connection(tuple(ssl_address)), server_hostname="127.0.0.1") as s:
                    exchange(s, API_VERSIONS)  # no certificate: anonymous
                client.configure_cert(context)
                with context.wrap_socket(socket.create_connection(tuple(ssl_address)), server_hostname="127.0.0.1") as s:
                    exchange(s, API_VERSIONS)
                with socket.create_connection(tuple(sasl_address)) as s:
                    exchange(s, frame(17, 1, {"mechanism": "PLAIN"}))
                    exchange(s, frame(36, 2, {"auth_bytes": b"\0bob\0pw"}))
                    exchange(s, API_VERSIONS)

            await trio.to_thread.run_sync(clients)
            nursery.cancel_scope.cancel()
    assert [(p, name) for p, name, _ in seen] == [
        ("User:ANONYMOUS", "SSL"),
        ("User:CN=alice,OU=eng,O=Example", "SSL"),  # ssl.principal.mapping.rules=DEFAULT: the RFC 2253 subject
        ("User:bob", "SASL_PLAINTEXT"),
    ]
    assert str(seen[0][2]) == "tls.example:9093"
    assert seen[2][2].host == "127.0.0.1" and seen[2][2].port == sasl_address.port


async def test_required_client_certificates(tmp_path: Path) -> None:
    """ssl.client.auth=required: a client without a certificate is refused (and the node serves on)."""
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = BrokerConfig(data_dir=tmp_path / "data", wal_backend="memory", listeners="SSL://127.0.0.1:0",
                          ssl_keystore_location=str(tmp_path / "server.pem"),
                          ssl_truststore_location=str(tmp_path / "ca.pem"), ssl_client_auth="required")
    async with open_broker(config) as broker:
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(broker.serve)

            def clients() -> None:
                context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
                with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
                    with socket.create_connection(tuple(address)) as raw, \
                            context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                        exchange(s, API_VERSIONS)  # TLS 1.3: the refusal arrives with the first read
                ca.issue_cert("bob@example.com", common_name="bob").configure_cert(context)
                with context.wrap_socket(socket.create_connection(tuple(address)), server_hostname="127.0.0.1") as s:
                    assert exchange(s, API_VERSIONS)

            await trio.to_thread.run_sync(clients)
            nursery.cancel_scope.cancel()
