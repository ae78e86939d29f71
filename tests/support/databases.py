"""Throw-away databases for tests and benchmarks of code that uses the stores.

PostgreSQL tests read ``AFHUB_TEST_POSTGRES_URL`` (a server URL whose user may create
databases, e.g. ``postgresql+psycopg2://afhub_test:x@127.0.0.1:5432/postgres``); each test
session gets a fresh database with a random name, dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from afhub.stores.migrate import upgrade
from afhub.stores.models import Base

POSTGRES_ENV = "AFHUB_TEST_POSTGRES_URL"
POSTGRES_SKIP_REASON = (
    "AFHUB_TEST_POSTGRES_URL not set: PostgreSQL tests run in CI (.ci/run starts a server)"
)


def postgres_server_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database on ``server_url``'s server; dropped after."""
    name = f"afhub_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        _drop_database(admin, name)
        admin.dispose()


def _drop_database(admin, name: str, attempts: int = 30) -> None:
    """Drop ``name``; an autovacuum worker (a superuser session that FORCE may not end)
    can hold a freshly filled database for a moment, so retry for a while."""
    import time

    from sqlalchemy.exc import OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except (OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(1)


@contextmanager
def sqlite_template(folder: Path) -> Iterator[Path]:
    """A migrated SQLite file to copy for each test (migrating once is the slow part)."""
    path = folder / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    yield path


def fresh_sqlite(template: Path, folder: Path) -> str:
    target = folder / "afhub.sqlite"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def empty_postgres(url: str) -> None:
    """Delete every afhub row (keeps the schema)."""
    engine = create_engine(url)
    try:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
