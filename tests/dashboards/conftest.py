"""Store-level fixtures for the contributions query (SQLite, and PostgreSQL when set)."""

from tests.store_fixtures import _postgres_url, _sqlite_template, db_url, stores  # noqa: F401
