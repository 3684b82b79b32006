"""A client connection speaking raw bytes, and request frames built with Chronik's own codec."""

from __future__ import annotations

import socket
import uuid
import struct
from typing import Any

from chronik.protocol import Record, decode_response, encode_batch, encode_frame, encode_request, request_schema, response_schema
from chronik.protocol.build import build

from .brokerproc import BrokerProcess


def request_frame(api_key: int, version: int, body: dict[str, Any], correlation_id: int = 7) -> bytes:
    request = build(request_schema(api_key, version), body)
    return b"".join(encode_frame(encode_request(api_key, version, correlation_id, "raw", request)))


def raw_header(api_key: int, version: int, correlation_id: int, client_id: bytes = b"raw") -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class Raw:
    """One client connection speaking bytes."""

    def __init__(self, broker: BrokerProcess, timeout: float = 10.0) -> None:
        self.sock = broker.connect(timeout)

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read_frame(self) -> bytes | None:
        """The next response payload, or None when the broker closed the connection."""
        prefix = self._exactly(4)
        if prefix is None:
            return None
        return self._exactly(struct.unpack(">i", prefix)[0])

    def reset(self) -> None:
        """Close with a TCP reset (RST) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def call(self, api_key: int, version: int, body: dict[str, Any], correlation_id: int = 7) -> Any:
        """Send one request built with Chronik's codec and decode its response."""
        self.send(request_frame(api_key, version, body, correlation_id))
        frame = self.read_frame()
        assert frame is not None, "the broker closed the connection"
        header_bytes = 5 if response_schema(api_key, version).__flexible__ and api_key != 18 else 4
        return decode_response(api_key, version, frame, header_bytes)

    def closed_by_broker(self) -> bool:
        """Whether the broker closes the connection (within the socket timeout) without answering."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def produce_frame(topic: str, partition: int, value: bytes, correlation_id: int = 7) -> bytes:
    batch = bytes(encode_batch([Record(0, 1_700_000_000_000, b"k", value)]))
    return request_frame(0, 9, {"transactional_id": None, "acks": -1, "timeout": 5000, "topic_data": [
        {"name": topic, "partition_data": [{"index": partition, "records": batch}]}]}, correlation_id)


def create_topic(raw: Raw, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
    """Create a topic with a CreateTopics v5 request on ``raw``; fails unless it is created."""
    raw.send(request_frame(19, 5, {"topics": [{"name": name, "num_partitions": partitions,
                                               "replication_factor": replication_factor,
                                               "assignments": [], "configs": []}],
                                   "timeout": 5000, "validate_only": False}, correlation_id=999))
    response = raw.read_frame()
    assert response is not None and decode_response(19, 5, response, 5).topics[0].error_code == 0


def fetch_frame(topic: str | uuid.UUID, offset: int, *, max_wait_ms: int = 0, version: int = 12,
                correlation_id: int = 7, partition: int = 0, max_bytes: int = 1 << 20) -> bytes:
    """A Fetch of one partition of ``topic`` (a name, or a topic id from v13 on); ``max_bytes`` in all and for the partition."""
    name, topic_id = (topic, uuid.UUID(int=0)) if isinstance(topic, str) else ("", topic)
    return request_frame(1, version, {
        "cluster_id": None, "replica_id": -1, "max_wait": max_wait_ms, "min_bytes": 1, "max_bytes": max_bytes,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "",
        "replica_state": {"replica_id": -1, "replica_epoch": -1},
        "topics": [{"topic": name, "topic_id": topic_id, "partitions": [{
            "partition": partition, "fetch_offset": offset, "current_leader_epoch": -1, "last_fetched_epoch": -1,
            "log_start_offset": -1, "partition_max_bytes": max_bytes}]}],
        "forgotten_topics_data": []}, correlation_id)
