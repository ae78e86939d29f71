"""Alembic migrations of the afhub database; run them with :func:`afhub.stores.migrate.upgrade`."""
