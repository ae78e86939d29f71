"""Alembic environment: runs on the connection handed in by afhub.stores.migrate, or on
an engine built from the URL in the config (``sqlalchemy.url``)."""

from alembic import context

from afhub.stores.database import BEGIN_IMMEDIATE, make_engine
from afhub.stores.migrate import import_all_models
from afhub.stores.models import Base

config = context.config
import_all_models()
target_metadata = Base.metadata


#: PostgreSQL advisory lock held while migrating, so that processes starting together
#: (the hub and its services) migrate one after the other
MIGRATION_LOCK = 7_263_548_001


def run_on(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # take the write lock up front: a second migrator waits instead of failing
        connection.execution_options(**{BEGIN_IMMEDIATE: True})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
        # SQLite's DDL is transactional, but alembic assumes not and commits after each
        # revision: between two commits a second migrator took the lock, read the version
        # the first had reached and ran the next revision, while the first, whose plan
        # was read at the start, ran it again ("table already exists"). One transaction
        # from reading the version to the last revision makes them wait for each other.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
