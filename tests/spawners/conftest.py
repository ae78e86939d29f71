"""Device store tests run on SQLite always and on PostgreSQL when AFHUB_TEST_POSTGRES_URL
is set (the same throw-away databases as tests/stores)."""

from __future__ import annotations

from tests.store_fixtures import _postgres_url, _sqlite_template, db_url, stores  # noqa: F401
