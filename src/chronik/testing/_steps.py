"""What the testing helpers do over the wire, written once as generators and driven by two runners.

Each job (create a topic and wait for its leaders; wait for a cluster to
elect a controller) is a generator that yields :class:`Call` (send this
request to that address) or :class:`Sleep`, and is sent back the response
payload, or the ``OSError`` the call raised (a node that is down).  It returns
its result or raises.  :func:`run_blocking` drives one with blocking sockets
and ``time.sleep`` (threads, pytest fixtures); :func:`run_trio` with trio.
Both keep one connection per broker for the length of the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from chronik.protocol import ErrorCode

from . import _wire

T = TypeVar("T")

POLL_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Call:
    address: str
    request: bytes


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Job = Generator["Call | Sleep", "bytes | OSError | None", T]


def _advance(job: "Job[T]", answer: "bytes | OSError | None") -> "tuple[Call | Sleep | None, T | None]":
    """(the job's next step, None), or (None, its result) once it returned."""
    try:
        return job.send(answer), None
    except StopIteration as done:
        return None, done.value


def run_blocking(job: "Job[T]", timeout: float) -> T:
    """Run ``job`` on this thread, its calls on blocking sockets (one kept per broker until it ends)."""
    connections = _wire.Connections(timeout)
    try:
        answer: bytes | OSError | None = None
        while (advanced := _advance(job, answer))[0] is not None:
            answer = _perform_blocking(advanced[0], connections)  # type: ignore[arg-type]
        return advanced[1]  # type: ignore[return-value]
    finally:
        connections.close()


def _perform_blocking(step: "Call | Sleep", connections: _wire.Connections) -> "bytes | OSError | None":
    if isinstance(step, Sleep):
        time.sleep(step.seconds)
        return None
    try:
        return connections.call(step.address, step.request)
    except OSError as exc:
        return exc


async def run_trio(job: "Job[T]") -> T:
    """Run ``job`` in this trio loop.  Cancellation: the job stops where it is (a topic may
    or may not have been created); its connections are closed."""
    import trio

    connections = _wire.AsyncConnections()
    try:
        answer: bytes | OSError | None = None
        while (advanced := _advance(job, answer))[0] is not None:
            answer = await _perform_trio(advanced[0], connections)  # type: ignore[arg-type]
        return advanced[1]  # type: ignore[return-value]
    finally:
        with trio.CancelScope(shield=True):
            await connections.aclose()


async def _perform_trio(step: "Call | Sleep", connections: _wire.AsyncConnections) -> "bytes | OSError | None":
    import trio

    if isinstance(step, Sleep):
        await trio.sleep(step.seconds)
        return None
    try:
        return await connections.call(step.address, step.request)
    except OSError as exc:
        return exc


def _first_taker(addresses: Sequence[str], request: bytes, result: "Callable[[bytes], tuple[ErrorCode, str]]",
                 what: str, deadline: float) -> "Job[None]":
    """Send ``request`` to each node in turn until one answers NONE; nodes that are
    down or answer "not now" (:data:`~chronik.testing._wire.RETRIABLE_ERRORS`) are
    passed over, round after round, until ``deadline``."""
    last = "no node answered"
    while True:
        for address in addresses:
            answer = yield Call(address, request)
            if isinstance(answer, OSError):
                last = f"{address}: {answer}"
                continue
            assert answer is not None
            error, message = result(answer)
            if error == ErrorCode.NONE:
                return
            if error not in _wire.RETRIABLE_ERRORS:
                raise _wire.BrokerRequestError(error, f"{what}: {error.name}: {message}")
            last = f"{address}: {error.name}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done in time ({last})")
        yield Sleep(POLL_SECONDS * 5)


def create_topic(addresses: Sequence[str], name: str, partitions: int, replication_factor: int,
                 config: dict[str, str], timeout: float, *, single_node: bool = False) -> "Job[None]":
    """CreateTopics on the first node that takes it, then wait until every
    node that answers shows the topic with a leader for every partition.

    ``single_node``: ``addresses`` is one broker without peers.  It answers
    CreateTopics once the topic is durable in its metadata log and applied
    to the image its Metadata answers come from, itself the leader of every
    partition: the answer is the readiness, and no Metadata is asked for.
    (In a cluster the other nodes learn of the topic later, so each is asked.)

    Raises :class:`~chronik.testing._wire.BrokerRequestError` for a Kafka
    error that is not "try again later" (TOPIC_ALREADY_EXISTS, INVALID_CONFIG,
    ...), and TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    request = _wire.create_topics_request(name, partitions, replication_factor, config, int(timeout * 1000))
    yield from _first_taker(addresses, request, _wire.create_topics_result, f"creating topic {name!r}", deadline)
    if single_node:
        return
    probe = _wire.metadata_request([name])
    pending = list(addresses)
    while pending:
        address = pending[0]
        answer = yield Call(address, probe)
        if isinstance(answer, OSError):
            pending.pop(0)  # a node that is down has nothing to show
            continue
        assert answer is not None
        state = _wire.cluster_view(answer).topics.get(name)
        if state is not None and state.error == ErrorCode.NONE and len(state.leaders) == partitions \
                and min(state.leaders) >= 0:
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name!r} has no leader for every partition on {address} after {timeout} s")
        yield Sleep(POLL_SECONDS)


def delete_topic(addresses: Sequence[str], name: str, timeout: float) -> "Job[None]":
    """DeleteTopics on the first node that takes it.  Raises
    :class:`~chronik.testing._wire.BrokerRequestError` (UNKNOWN_TOPIC_OR_PARTITION, ...)
    and TimeoutError."""
    request = _wire.delete_topics_request(name, int(timeout * 1000))
    yield from _first_taker(addresses, request, _wire.delete_topics_result, f"deleting topic {name!r}",
                            time.monotonic() + timeout)


def await_cluster(addresses: Sequence[str], node_ids: Sequence[int], timeout: float) -> "Job[None]":
    """Wait until every node's Metadata names a controller and lists every broker in ``node_ids``."""
    deadline = time.monotonic() + timeout
    probe = _wire.metadata_request([])
    for address in addresses:
        while True:
            answer = yield Call(address, probe)
            if isinstance(answer, bytes):
                view = _wire.cluster_view(answer)
                if view.controller_id >= 0 and view.brokers >= set(node_ids):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not form within {timeout} s ({address} answered {answer!r:.200})")
            yield Sleep(POLL_SECONDS * 5)
