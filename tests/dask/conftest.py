"""Store-level gateway tests use the shared database fixtures (SQLite and PostgreSQL)."""

from __future__ import annotations

from tests.store_fixtures import _postgres_url, _sqlite_template, db_url, stores  # noqa: F401
