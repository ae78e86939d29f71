"""Store tests run on SQLite always and on PostgreSQL when AFHUB_TEST_POSTGRES_URL is set."""

from __future__ import annotations

from tests.store_fixtures import _postgres_url, _sqlite_template, db_url, stores  # noqa: F401
