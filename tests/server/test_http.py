from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import prometheus_client
import pytest
import trio

from chronik.broker import open_broker
from chronik.config import BrokerConfig
from chronik.server.http import MAX_HEADER_BYTES, serve_operator_http
from chronik.metrics import BrokerMetrics
from chronik.storage import available_backends

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 1.0


class Health:
    def __init__(self) -> None:
        self.failure: str | None = None
        self.broken = False

    def __call__(self) -> str | None:
        if self.broken:
            raise RuntimeError("boom")
        return self.failure


class Response:
    def __init__(self, raw: bytes) -> None:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {raw!r}"
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        length = int(self.headers["content-length"])
        self.body, self.rest = rest[:length], rest[length:]


@pytest.fixture
def metrics() -> BrokerMetrics:
    return BrokerMetrics()


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
async def port(metrics: BrokerMetrics, health: Health) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_operator_http(
                (HOST, 0), metrics.registry, health, request_timeout=REQUEST_TIMEOUT, task_status=task_status
            )
        )
        yield port
        nursery.cancel_scope.cancel()


async def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read everything until the server closes."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            await stream.send_all(raw)
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
            return received


async def get(port: int, path: str, method: str = "GET", extra: bytes = b"") -> Response:
    raw = f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode() + extra + b"\r\n"
    return Response(await exchange(port, raw))


async def test_metrics_shows_an_incremented_counter(port: int, metrics: BrokerMetrics) -> None:
    metrics.requests.labels("Produce").inc()
    metrics.record_request("Fetch", 0.003, {"OFFSET_OUT_OF_RANGE"})
    metrics.record_wal_sync(appends=12, nbytes=4096, seconds=0.0004)
    metrics.connections.set(3)
    response = await get(port, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    text = response.body.decode()
    assert 'chronik_requests_total{api="Produce"} 1.0' in text
    assert 'chronik_request_errors_total{api="Fetch",error="OFFSET_OUT_OF_RANGE"} 1.0' in text
    assert 'chronik_request_duration_seconds_bucket{api="Fetch",le="0.005"} 1.0' in text
    assert "chronik_wal_syncs_total 1.0" in text
    assert 'chronik_wal_sync_batch_appends_bucket{le="16.0"} 1.0' in text
    assert "chronik_connections 3.0" in text
    for name in ("chronik_bytes_in_total", "chronik_bytes_out_total", "chronik_records_appended_total",
                 "chronik_produce_append_duration_seconds", "chronik_fetch_read_duration_seconds",
                 "chronik_partitions", "chronik_log_dir_failed", "chronik_wal_sync_duration_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    metrics.requests.labels("Produce").inc()
    assert 'chronik_requests_total{api="Produce"} 2.0' in (await get(port, "/metrics?x=1")).body.decode()


async def test_health_ok_then_failed(port: int, health: Health) -> None:
    response = await get(port, "/health")
    assert (response.status, response.body) == (200, b"ok\n")
    health.failure = "log directory /data failed: fsync: EIO"
    response = await get(port, "/health")
    assert response.status == 503
    assert response.body == b"log directory /data failed: fsync: EIO\n"


async def test_health_check_that_raises_is_unhealthy(port: int, health: Health) -> None:
    health.broken = True
    response = await get(port, "/health")
    assert response.status == 503
    assert b"RuntimeError: boom" in response.body
    assert (await get(port, "/metrics")).status == 200


async def test_unknown_path_is_404_and_other_methods_405(port: int) -> None:
    assert (await get(port, "/")).status == 404
    assert (await get(port, "/metrics/x")).status == 404
    response = Response(await exchange(port, b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                                             b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
    # the body was consumed, so the next request on the connection is answered too
    assert Response(response.rest).status == 200
    assert (await get(port, "/health", method="DELETE")).status == 405


async def test_head_is_get_without_body(port: int) -> None:
    raw = await exchange(port, b"HEAD /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 3\r\n" in raw and raw.endswith(b"\r\n\r\n")


async def test_keep_alive_and_pipelining(port: int) -> None:
    one = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    last = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    raw = await exchange(port, one + one + last)
    statuses = []
    while raw:
        response = Response(raw)
        statuses.append(response.status)
        raw = response.rest
    assert statuses == [200, 200, 200]


@pytest.mark.parametrize(
    "garbage, status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200), 400),  # a TLS ClientHello
        (b"GET /health HTTP/1.1\r\nHost: t\r\nX: " + b"a" * (MAX_HEADER_BYTES * 4) + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n" + bytes(70000), 413),
    ],
)
async def test_garbage_gets_an_error_and_the_server_keeps_serving(port: int, garbage: bytes, status: int) -> None:
    assert Response(await exchange(port, garbage)).status == status
    assert (await get(port, "/health")).status == 200


async def test_client_closing_mid_request_does_not_hurt(port: int) -> None:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(HOST, port)
        await stream.send_all(b"GET /hea")
        await stream.aclose()
    assert (await get(port, "/health")).status == 200


async def test_silent_client_does_not_block_others_and_is_dropped(port: int) -> None:
    with trio.fail_after(5):
        silent = await trio.open_tcp_stream(HOST, port)
        half = await trio.open_tcp_stream(HOST, port)
        await half.send_all(b"GET /health HTTP/1.1\r\n")  # and never the rest
        async with silent, half:
            with trio.fail_after(REQUEST_TIMEOUT * 0.8):  # before the server drops the idle ones
                assert (await get(port, "/health")).status == 200
            # after the request timeout the server hangs up on both
            assert await silent.receive_some(100) == b""
            answer = b""
            while chunk := await half.receive_some(1000):
                answer += chunk
            assert Response(answer).status == 408


async def test_cancellation_closes_the_listener(metrics: BrokerMetrics, health: Health) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_operator_http, (HOST, 0), metrics.registry, health)
        idle = await trio.open_tcp_stream(HOST, port)  # an open connection does not delay cancellation
        nursery.cancel_scope.cancel()
    with trio.fail_after(5):
        assert await idle.receive_some(100) == b""
        await idle.aclose()
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)


async def test_bind_error_propagates(port: int, metrics: BrokerMetrics, health: Health) -> None:
    with pytest.raises(OSError):
        await serve_operator_http((HOST, port), metrics.registry, health)


def test_metrics_are_independent_per_broker() -> None:
    one, two = BrokerMetrics(process_metrics=False), BrokerMetrics(process_metrics=False)
    one.records_appended.inc(5)
    assert b"chronik_records_appended_total 5.0" in one.render()
    assert b"chronik_records_appended_total 0.0" in two.render()
    assert b"process_" not in two.render()



@pytest.mark.parametrize("backend, profile, polling", [
    ("native", "low-latency", 1.0), ("native", "balanced", 0.0), ("python", "low-latency", 0.0),
])
async def test_the_polling_gauge_follows_the_wal_backend(tmp_path: Path, backend: str, profile: str, polling: float) -> None:
    """``chronik_wal_sync_polling`` is the broker's backend's ``polling``: on with the native backend's
    low-latency profile (its governor starts out polling), off for a profile without polling and for
    the python backend, which declines it."""
    if backend not in available_backends():
        pytest.skip(f"{backend} backend not available")
    config = BrokerConfig(data_dir=tmp_path, wal_backend=backend, wal_profile=profile)
    async with open_broker(config) as broker:
        assert broker.committer.backend.polling is bool(polling)
        assert f"chronik_wal_sync_polling {polling}".encode() in broker.metrics.render()
