"""Fixtures shared by the storage and metadata suites: every available storage backend, and a log dir."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from chronik.storage import StorageBackend, available_backends, create_backend


@pytest.fixture(params=available_backends())
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def backend(backend_name: str) -> AsyncIterator[StorageBackend]:
    backend = create_backend(backend_name)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def log_dir(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / "log")
