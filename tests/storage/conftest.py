"""The storage suite runs on every available backend (fixtures in tests/backend_fixtures.py)."""

from tests.backend_fixtures import backend, backend_name, log_dir  # noqa: F401  (pytest fixtures)
