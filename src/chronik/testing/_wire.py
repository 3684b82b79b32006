"""The requests the testing helpers send a broker, over its Kafka port: Metadata, CreateTopics, DeleteTopics.

The helpers talk to the broker the way every client does, over a socket, and
never reach into the :class:`~chronik.broker.Broker` object: a topic created
by :meth:`~chronik.testing.EmbeddedBroker.create_topic` went through the same
CreateTopics path a Kafka admin client uses.

Requests are built and answers read sans-I/O (:func:`metadata_request`,
:func:`create_topics_request`, :func:`read_response`); two small transports
send them: :class:`Connections` on blocking sockets (for the thread-run
broker and the pytest fixtures) and :class:`AsyncConnections` on trio
streams (for :func:`chronik.testing.open_broker`).  Each keeps one connection
per broker for the steps of one job (create a topic, then see it in
Metadata) and closes them when the job ends: nothing outlives it.
:func:`call` is one request on a connection of its own.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from chronik.protocol import (
    ErrorCode,
    decode_response,
    encode_frame,
    encode_request,
    parse_response_header,
    request_schema,
    response_header_version,
)
from chronik.protocol.build import build

METADATA = (3, 12)
"""(api key, version) of the Metadata request sent."""
CREATE_TOPICS = (19, 4)
"""v4: the last version whose answer does not list every config of the new topic (v5+),
which the helpers never read and the broker would encode for each topic."""
DELETE_TOPICS = (20, 6)
CLIENT_ID = "chronik-testing"

RETRIABLE_ERRORS = frozenset({
    ErrorCode.NOT_CONTROLLER, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
})
"""CreateTopics and DeleteTopics answers that mean "not now" (a cluster without a controller yet): asked again."""


class BrokerRequestError(RuntimeError):
    """The broker answered with a Kafka error code (``.error``, an :class:`ErrorCode`)."""

    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as a Metadata answer shows it."""

    error: ErrorCode
    leaders: tuple[int, ...]
    """Leader per partition (-1: none)."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What one broker's Metadata answer says."""

    controller_id: int
    brokers: frozenset[int]
    topics: dict[str, TopicState]


def _frame(api: tuple[int, int], body: dict[str, Any]) -> bytes:
    request = build(request_schema(*api), body)
    return b"".join(encode_frame(encode_request(api[0], api[1], 1, CLIENT_ID, request)))


def metadata_request(topics: list[str] | None = None) -> bytes:
    """Metadata for ``topics`` (None: every topic), never auto-creating one."""
    return _frame(METADATA, {
        "topics": None if topics is None else [{"name": name, "topic_id": None} for name in topics],
        "allow_auto_topic_creation": False, "include_topic_authorized_operations": False})


def create_topics_request(name: str, partitions: int, replication_factor: int, config: dict[str, str],
                          timeout_ms: int) -> bytes:
    return _frame(CREATE_TOPICS, {"topics": [{
        "name": name, "num_partitions": partitions, "replication_factor": replication_factor, "assignments": [],
        "configs": [{"name": key, "value": value} for key, value in config.items()]}],
        "timeout": timeout_ms, "validate_only": False})


def delete_topics_request(name: str, timeout_ms: int) -> bytes:
    return _frame(DELETE_TOPICS, {"topics": [{"name": name, "topic_id": None}], "timeout": timeout_ms})


def delete_topics_result(payload: bytes) -> tuple[ErrorCode, str]:
    """(error code, message) of the one topic a :func:`delete_topics_request` named."""
    (result,) = read_response(DELETE_TOPICS, payload).responses
    return ErrorCode(result.error_code), result.error_message or ""


def read_response(api: tuple[int, int], payload: bytes) -> Any:
    _, size = parse_response_header(payload, response_header_version(*api))
    return decode_response(api[0], api[1], payload, size)


def cluster_view(payload: bytes) -> ClusterView:
    response = read_response(METADATA, payload)
    topics = {t.name: TopicState(ErrorCode(t.error_code),
                                 tuple(p.leader_id for p in sorted(t.partitions, key=lambda p: p.partition_index)))
              for t in response.topics}
    return ClusterView(response.controller_id, frozenset(b.node_id for b in response.brokers), topics)


def create_topics_result(payload: bytes) -> tuple[ErrorCode, str]:
    """(error code, message) of the one topic a :func:`create_topics_request` asked for."""
    (result,) = read_response(CREATE_TOPICS, payload).topics
    return ErrorCode(result.error_code), result.error_message or ""


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection before answering")
        data += chunk
    return bytes(data)


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    (size,) = struct.unpack(">i", _exactly(sock, 4))
    return _exactly(sock, size)


def call(address: str, request: bytes, timeout: float) -> bytes:
    """Send one request frame on a new connection and return the response payload (blocking)."""
    with socket.create_connection(parse_address(address), timeout=timeout) as sock:
        return _exchange(sock, request)


class Connections:
    """Blocking connections kept for the length of one job, one per address, closed by :meth:`close`.

    A job's requests go one at a time, so one connection per broker serves
    them all (a new connection costs the broker an accept and a task, more
    than a small request).  A request on a kept connection that fails is
    sent once more on a new one: a call fails only when a fresh connection
    does, as :func:`call` would.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._open: dict[str, socket.socket] = {}

    def call(self, address: str, request: bytes) -> bytes:
        kept = self._open.pop(address, None)
        if kept is not None:
            try:
                answer = _exchange(kept, request)
                self._open[address] = kept
                return answer
            except OSError:
                kept.close()
        sock = socket.create_connection(parse_address(address), timeout=self.timeout)
        try:
            answer = _exchange(sock, request)
        except BaseException:
            sock.close()
            raise
        self._open[address] = sock
        return answer

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


async def _exchange_async(stream: Any, request: bytes) -> bytes:
    await stream.send_all(request)
    buffer = bytearray()
    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack(">i", buffer[:4])[0]:
        chunk = await stream.receive_some()
        if not chunk:
            raise ConnectionError("the broker closed the connection before answering")
        buffer += chunk
    return bytes(buffer[4:])


class AsyncConnections:
    """:class:`Connections` for trio code.  Cancellation: a call cancelled mid-request closes
    its connection (its answer would be out of step), nothing else happens; :meth:`aclose`
    closes the rest."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}

    async def call(self, address: str, request: bytes) -> bytes:
        import trio

        kept = self._open.pop(address, None)
        if kept is not None:
            try:
                answer = await _exchange_async(kept, request)
                self._open[address] = kept
                return answer
            except (OSError, trio.BrokenResourceError):
                await trio.aclose_forcefully(kept)
            except BaseException:
                await trio.aclose_forcefully(kept)
                raise
        host, port = parse_address(address)
        stream = await trio.open_tcp_stream(host, port)
        try:
            answer = await _exchange_async(stream, request)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self._open[address] = stream
        return answer

    async def aclose(self) -> None:
        import trio

        while self._open:
            await trio.aclose_forcefully(self._open.popitem()[1])
