"""The database: an engine from a URL, sessions, and per-backend settings.

* SQLite (the default, ``sqlite:///$AFHUB_HOME/afhub.sqlite``): WAL journal, foreign keys
  on, a busy timeout, and transactions that write begin with ``BEGIN IMMEDIATE`` so that a
  read-decide-write sequence (a quota admission) runs alone.
* PostgreSQL (``postgresql+psycopg2://...``): plain transactions in READ COMMITTED; writers
  that must serialise lock rows with ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

#: seconds a SQLite writer waits for the lock before giving up
SQLITE_BUSY_TIMEOUT_S = 30.0
#: execution option that makes SQLite transactions on a connection begin IMMEDIATE
BEGIN_IMMEDIATE = "afhub_begin_immediate"
_IMMEDIATE = BEGIN_IMMEDIATE


def default_url() -> str:
    """``$AFHUB_DB_URL``, else ``sqlite:///$AFHUB_HOME/afhub.sqlite`` (``AFHUB_HOME``
    defaults to ``.afhub``)."""
    url = os.environ.get("AFHUB_DB_URL")
    if url:
        return url
    home = Path(os.environ.get("AFHUB_HOME", ".afhub"))
    return f"sqlite:///{home / 'afhub.sqlite'}"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` with afhub's settings for its backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _private_file(Path(database))
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(parsed, echo=echo, pool_pre_ping=True)


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) private to this user, 0600 (0700), before
    SQLite does with the process umask: its ``-wal`` and ``-shm`` files take the mode of
    the database file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised indirectly
        # let SQLAlchemy (not the sqlite3 module) emit BEGIN, so we can choose IMMEDIATE
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        if connection.get_execution_options().get(_IMMEDIATE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


class Database:
    """One afhub database: use :meth:`read` for queries and :meth:`write` for changes."""

    def __init__(self, url: str | None = None, *, echo: bool = False) -> None:
        self.url = url or default_url()
        self.engine = make_engine(self.url, echo=echo)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.backend == "postgresql"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; rolled back at the end."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits at the end (or rolls back on error).

        On SQLite it begins with ``BEGIN IMMEDIATE``: writers run one at a time, which is
        what makes an admission's read-decide-insert atomic.
        """
        with self.engine.connect() as connection:
            if self.is_sqlite:
                connection = connection.execution_options(**{_IMMEDIATE: True})
            with (
                Session(bind=connection, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)!r})"
